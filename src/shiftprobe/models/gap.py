"""``GapCNN`` (``model=gap``): the lab's convolutions and max pools, then global average pooling and a
linear head: does averaging the last map over all positions make the head invariant?

::

    conv1 1->10 k5 valid -> [conv1] -> max pool 2 -> [pool1] -> ReLU
    -> conv2 10->20 k5 valid -> [conv2] -> max pool 2 -> [pool2] -> ReLU
    -> global average pool -> [gap, B x 20] -> fc1 20->50 -> [fc1, pre-ReLU] -> ReLU -> fc2 50->10 -> [fc2 = logits]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.common import GlobalAvgPool, PixelInputNet
from shiftprobe.models.crop_windows import CropWindowModel
from shiftprobe.models.lab import PADDINGS, RECEPTIVE_FIELDS  # noqa: F401 (the lab's, read by the app)
from shiftprobe.models.maxpool import MaxPool2x2
from shiftprobe.models.variants import circular_same


class GapCNN(CropWindowModel, PixelInputNet):
    """The lab CNN's convolutions and max pools, a global-average-pooling probe point ``gap`` (B x 20) and
    a linear head fc1 20->50, fc2 50->10; any input of at least 16x16 pixels."""

    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "gap", "fc1", "fc2")
    layer_aliases: dict[str, str] = {"logits": "fc2"}
    crop_layers = ("conv1", "conv2", "gap", "fc1", "logits")

    def __init__(self, **settings):
        super().__init__(**settings)
        self.conv1 = nn.Conv2d(self.in_channels, 10, kernel_size=5, **circular_same(self.padding, 5))
        self.pool1 = MaxPool2x2()
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **circular_same(self.padding, 5))
        self.pool2 = MaxPool2x2()
        self.gap = GlobalAvgPool()
        self.fc1 = nn.Linear(20, 50)
        self.fc2 = nn.Linear(50, self.num_classes)
        self.make_variant()

    def head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        gap = self.gap(F.relu(self.pool2(conv2)))
        fc1 = self.fc1(gap)
        return {"gap": gap, "fc1": fc1, "logits": self.fc2(F.relu(fc1))}
