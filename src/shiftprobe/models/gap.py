"""``GapCNN`` (``model=gap``): the lab's convolutions, then global average pooling and a linear head.

::

    conv1 1->10 k5 valid -> [conv1] -> max pool 2 -> [pool1] -> ReLU
    -> conv2 10->20 k5 valid -> [conv2] -> max pool 2 -> [pool2] -> ReLU
    -> global average pool -> [gap, B x 20] -> fc1 20->50 -> [fc1, pre-ReLU] -> ReLU -> fc2 50->10 -> [fc2 = logits]

The question it answers: does averaging the last map over all positions make the head invariant?
A translation that moves the pool2 map without changing its values leaves ``gap`` unchanged; crop
shifts lose content at the border and the pools alias, so it is not exact in general.
Any input of at least 16x16 pixels (28x28 gives maps 24, 12, 8, 4).

Variants (``shiftprobe.models.variants``): ``pool="blur"`` or ``"aps"`` (each max pool becomes a
stride-1 max pool then a blur or APS down-sampling) and ``padding="circular"`` (both convolutions keep
their map size with circular padding, the stride-1 max pools pad circularly). With
``pool="aps", padding="circular"`` the network is exactly invariant to circular shifts of images
whose side is a multiple of 4 (the positive control, docs/measurement.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.common import GlobalAvgPool, PixelInputNet
from shiftprobe.models.crop_windows import CropWindowModel, CropWindows
from shiftprobe.models.lab import PADDINGS as LAB_PADDINGS
from shiftprobe.models.lab import RECEPTIVE_FIELDS as LAB_RECEPTIVE_FIELDS
from shiftprobe.models.maxpool import MaxPool2x2
from shiftprobe.models.variants import circular_same

# The lab's paddings and receptive fields (models/lab.py, which derives them): the same convolutions
# and pools; gap, fc1 and fc2 are vectors that see every pixel.
PADDINGS = LAB_PADDINGS
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = dict(LAB_RECEPTIVE_FIELDS)


class GapCNN(CropWindowModel, PixelInputNet):
    """The lab CNN's convolutions and max pools, a global-average-pooling probe point ``gap``
    (B x 20) and a linear head fc1 20->50, fc2 50->10.

    ``forward(x)`` keeps the lab's contract ``(log_probs, conv2_repr, fc1_repr)``: log-probabilities,
    the conv2 map (pre-pool) and fc1 (pre-ReLU).
    """

    #: module names the measurement probes by default
    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "gap", "fc1", "fc2")
    #: display name -> module name
    layer_aliases: dict[str, str] = {"logits": "fc2"}

    PADDINGS = PADDINGS

    def __init__(self, **settings):
        """The variant settings (``PixelInputNet``): ``in_channels``, ``normalize``, ``pool``, ``padding``,
        ``blur_filter_size``."""
        super().__init__(**settings)
        self.conv1 = nn.Conv2d(self.in_channels, 10, kernel_size=5, **circular_same(self.padding, 5))
        self.pool1 = MaxPool2x2()
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **circular_same(self.padding, 5))
        self.pool2 = MaxPool2x2()
        self.gap = GlobalAvgPool()
        self.fc1 = nn.Linear(20, 50)
        self.fc2 = nn.Linear(50, 10)
        self.make_variant()

    def crop_windows(self) -> CropWindows | None:
        """The crop fast path (conv1 once on the padded images, pool1 and conv2 once per pooling phase, the head
        per shift) of the network as built: valid convolutions and 2x2 stride-2 max pools; else None."""
        if (self.pool, self.padding) != ("max", "valid"):
            return None
        return CropWindows(("conv1", "conv2", "gap", "fc1", "logits"), self._crop_conv1, self._crop_head,
                           conv2=self._crop_conv2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        conv2 = self.conv2(F.relu(self.pool1(self.conv1(self.prepare(x)))))
        fc1 = self.fc1(self.gap(F.relu(self.pool2(conv2))))
        return F.log_softmax(self.fc2(F.relu(fc1)), dim=1), conv2, fc1

    def _crop_conv1(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.prepare(x))

    def _crop_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.pool1(conv1)))

    def _crop_head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        gap = self.gap(F.relu(self.pool2(conv2)))
        fc1 = self.fc1(gap)
        return {"gap": gap, "fc1": fc1, "logits": self.fc2(F.relu(fc1))}
