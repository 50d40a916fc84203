"""``SmallResNet`` (``model=resnet``): a small ResNet for 28x28 grey images, zero padding and skip
connections (He et al. 2016, CIFAR-style stem without max pool)::

    stem   conv3x3 1->w pad 1 + BN + ReLU                         -> [stem,   w x 28 x 28]
    layer1 BasicBlock w->w, stride 1 (identity skip)               -> [layer1, w x 28 x 28]
    layer2 BasicBlock w->2w, stride 2 (skip: 1x1 s2 conv + BN)     -> [layer2, 2w x 14 x 14]
    layer3 BasicBlock 2w->4w, stride 2 (skip: 1x1 s2 conv + BN)    -> [layer3, 4w x 7 x 7]
    gap    global average pool                                     -> [gap, B x 4w]
    fc     4w->10                                                  -> [fc = logits]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.common import GlobalAvgPool, PixelInputNet, check_positive_int
from shiftprobe.models.zoo import PADDINGS  # its own zero padding, or circular padding, as the zoo's

# Receptive fields (stride r, a, b: position i sees the pixels [r*i + a, r*i + b]; the rule in
# shiftprobe.models.lab; a skip connection takes the union of its paths; BatchNorm in eval mode is pointwise).
# layer1: stem [i-2, i+2]; layer2: layer1 [2i-3, 2i+3]; layer3: the same block on layer2.
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    "stem": (1, -1, 1),
    "layer1": (1, -3, 3),
    "layer2": (2, -6, 6),
    "layer3": (4, -12, 12),
}


class BasicBlock(nn.Module):
    """Two 3x3 zero-padded convolutions with BatchNorm, plus a skip connection (a 1x1 strided
    convolution + BN when the stride or the width changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class SmallResNet(PixelInputNet):
    """Stem, three BasicBlocks (strides 1, 2, 2; ``width`` channels in the stem and layer1), global average
    pooling, a linear classifier; ``forward(x)`` returns ``(log_probs, layer3_repr, gap_repr)``."""

    default_probe_layers: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "gap", "fc")
    layer_aliases: dict[str, str] = {"logits": "fc"}
    PADDINGS = PADDINGS

    def __init__(self, width: int = 16, **settings):
        super().__init__(**settings)
        self.width = w = check_positive_int("width", width)
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )
        self.layer1 = BasicBlock(w, w, stride=1)
        self.layer2 = BasicBlock(w, 2 * w, stride=2)
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2)
        self.gap = GlobalAvgPool()
        self.fc = nn.Linear(4 * w, self.num_classes)
        self.make_variant()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layer3 = self.layer3(self.layer2(self.layer1(self.stem(self.prepare(x)))))
        gap = self.gap(layer3)
        return F.log_softmax(self.fc(gap), dim=1), layer3, gap
