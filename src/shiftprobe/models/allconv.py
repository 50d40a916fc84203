"""``AllConvCNN`` (``model=allconv``): the lab net with each 2x2 max pool replaced by a learned stride-2
convolution (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net")::

    conv1 1->10 k5 valid -> [conv1] -> ReLU -> down1 10->10 k2 s2 -> [down1] -> ReLU
    -> conv2 10->20 k5 valid -> [conv2] -> ReLU -> down2 20->20 k2 s2 -> [down2] -> ReLU -> flatten 320
    -> fc1 320->50 -> [fc1, pre-ReLU] -> ReLU -> fc2 50->10 -> [fc2 = logits]

A max pool is itself a non-linearity, so its linear replacement gets a ReLU in front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.common import PixelInputNet, check_positive_int
from shiftprobe.models.crop_windows import CropWindowModel
from shiftprobe.models.lab import PADDINGS, map_sides  # noqa: F401 (PADDINGS: the lab's, read by the app)
from shiftprobe.models.lab import RECEPTIVE_FIELDS as LAB_RECEPTIVE_FIELDS
from shiftprobe.models.variants import circular_same

# the lab's receptive fields: a k2 s2 convolution sees the pixels a k2 s2 max pool sees
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    {"pool1": "down1", "pool2": "down2"}.get(name, name): field for name, field in LAB_RECEPTIVE_FIELDS.items()
}


class AllConvCNN(CropWindowModel, PixelInputNet):
    """The lab CNN with stride-2 convolutions ``down1`` (10->10) and ``down2`` (20->20) instead of max
    pools; ``image_size`` (at least 16) fixes fc1's inputs."""

    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")
    layer_aliases: dict[str, str] = {"logits": "fc2"}

    def __init__(self, image_size: int = 28, **settings):
        super().__init__(**settings)
        self.image_size = check_positive_int("image_size", image_size, least=16)
        # a circularly padded stride-1 convolution before the down-sampling keeps the size: rounding up
        ceil = self.padding == "circular" and self.pool != "max"
        side = map_sides(image_size, self.padding, ceil)["pool2"]
        self.conv1 = nn.Conv2d(self.in_channels, 10, kernel_size=5, **circular_same(self.padding, 5))
        self.down1 = nn.Conv2d(10, 10, kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **circular_same(self.padding, 5))
        self.down2 = nn.Conv2d(20, 20, kernel_size=2, stride=2)
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, self.num_classes)
        self.make_variant()

    def to_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.down1(F.relu(conv1))))

    def head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        fc1 = self.fc1(F.relu(self.down2(F.relu(conv2))).flatten(1))
        return {"fc1": fc1, "logits": self.fc2(F.relu(fc1))}
