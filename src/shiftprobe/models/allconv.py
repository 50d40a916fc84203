"""``AllConvCNN`` (``model=allconv``): the lab net with each 2x2 max pool replaced by a learned
stride-2 convolution (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net").

::

    conv1 1->10 k5 valid -> [conv1] -> ReLU -> down1 10->10 k2 s2 -> [down1] -> ReLU
    -> conv2 10->20 k5 valid -> [conv2] -> ReLU -> down2 20->20 k2 s2 -> [down2] -> ReLU -> flatten 320
    -> fc1 320->50 -> [fc1, pre-ReLU] -> ReLU -> fc2 50->10 -> [fc2 = logits]

Maps 24 -> 12 and 8 -> 4 (28x28 input), so fc1 keeps the lab's 320 inputs. A max pool is itself a
non-linearity; its linear replacement gets a ReLU in front (as in the all-convolutional net, every
learned layer is followed by a ReLU), so conv1 and down1 do not collapse into one linear layer.
The input size is fixed by fc1 (``image_size``, default 28; at least 16).

Variants (``shiftprobe.models.variants``): ``pool="blur"`` or ``"aps"`` (down1 and down2 run at stride 1,
then a blur or APS down-sampling) and ``padding="circular"`` (conv1 and conv2 keep their map size with
circular padding; so do down1 and down2 at stride 1: maps 28, 14, 14, 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.common import PixelInputNet, check_positive_int
from shiftprobe.models.crop_windows import CropWindowModel, CropWindows
from shiftprobe.models.lab import PADDINGS as LAB_PADDINGS
from shiftprobe.models.lab import RECEPTIVE_FIELDS as LAB_RECEPTIVE_FIELDS
from shiftprobe.models.variants import circular_same

# The lab's paddings, and its receptive fields (models/lab.py derives them) with down1 / down2 in place of
# pool1 / pool2: a k2 s2 convolution sees the same pixel intervals as a k2 s2 max pool.
PADDINGS = LAB_PADDINGS
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    {"pool1": "down1", "pool2": "down2"}.get(name, name): field for name, field in LAB_RECEPTIVE_FIELDS.items()
}


class AllConvCNN(CropWindowModel, PixelInputNet):
    """The lab CNN with stride-2 convolutions ``down1`` (10->10 k2 s2) and ``down2`` (20->20 k2 s2)
    instead of max pools.

    ``forward(x)`` keeps the lab's contract ``(log_probs, conv2_repr, fc1_repr)``: log-probabilities,
    the conv2 map (before down2) and fc1 (pre-ReLU).
    """

    #: module names the measurement probes by default (the lab's points; down1, down2 on request)
    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")
    #: display name -> module name
    layer_aliases: dict[str, str] = {"logits": "fc2"}

    PADDINGS = PADDINGS

    def __init__(self, image_size: int = 28, **settings):
        """``image_size``: the input's side (fc1's inputs follow it); then the variant settings
        (``PixelInputNet``)."""
        super().__init__(**settings)
        self.image_size = check_positive_int("image_size", image_size, least=16)
        side = self._last_side(image_size)
        self.conv1 = nn.Conv2d(self.in_channels, 10, kernel_size=5, **circular_same(self.padding, 5))
        self.down1 = nn.Conv2d(10, 10, kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **circular_same(self.padding, 5))
        self.down2 = nn.Conv2d(20, 20, kernel_size=2, stride=2)
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, 10)
        self.make_variant()

    def _last_side(self, image_size: int) -> int:
        """The side of the down2 map: each 5x5 convolution takes 4 (valid) or nothing (circular); each
        down-sampling halves, rounding up when a circularly padded stride-1 convolution precedes it."""
        shrink = 0 if self.padding == "circular" else 4
        ceil = self.padding == "circular" and self.pool != "max"
        side = image_size
        for _ in range(2):
            side -= shrink
            side = -(-side // 2) if ceil else side // 2
        return side

    def crop_windows(self) -> CropWindows | None:
        """The crop fast path (conv1 once on the padded images, down1 and conv2 once per phase of the stride-2
        convolution, the head per shift) of the network as built: valid convolutions, stride-2 down1, down2."""
        if (self.pool, self.padding) != ("max", "valid"):
            return None
        return CropWindows(("conv1", "conv2", "fc1", "logits"), self._crop_conv1, self._crop_head,
                           conv2=self._crop_conv2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.down1(F.relu(self.conv1(self.prepare(x)))))
        conv2 = self.conv2(h)
        fc1 = self.fc1(F.relu(self.down2(F.relu(conv2))).flatten(1))
        return F.log_softmax(self.fc2(F.relu(fc1)), dim=1), conv2, fc1

    def _crop_conv1(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.prepare(x))

    def _crop_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.down1(F.relu(conv1))))

    def _crop_head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        fc1 = self.fc1(F.relu(self.down2(F.relu(conv2))).flatten(1))
        return {"fc1": fc1, "logits": self.fc2(F.relu(fc1))}
