"""The lab's MNIST CNN, layer for layer, with named probe points and two research variants.

Lab network (``pool="max"``, ``padding="valid"``)::

    conv1 1->10 k5 -> [conv1 probe, 10x24x24] -> max_pool 2 -> ReLU
    -> conv2 10->20 k5 -> [conv2 probe, 20x8x8] -> max_pool 2 -> ReLU -> flatten 320
    -> fc1 320->50 -> [fc1 probe, pre-ReLU] -> ReLU -> fc2 50->10 -> [logits probe] -> log_softmax

``forward`` keeps the lab's contract and returns ``(log_probs, conv2_repr, fc1_repr)``.
The input is always pixels in [0, 1]; when ``normalize`` is on, (x - 0.1307) / 0.3081 is the
network's first (fixed, pointwise) step, so every shift is applied in pixel space before it.

Variants: ``pool="blur"`` (MaxPool(2, stride 1) then a binomial BlurPool, R. Zhang 2019),
``pool="aps"`` (MaxPool(2, stride 1) then adaptive polyphase sampling, Chaman & Dokmanić 2021, made by
``shiftprobe.models.variants.apply_variants``; with circular padding the stride-1 max pool pads
circularly too) and ``padding="circular"`` (both convolutions keep their map size with circular
padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.blurpool import BlurPool2d
from shiftprobe.models.crop_windows import CropWindowModel, CropWindows
from shiftprobe.models.maxpool import MaxPool2x2
from shiftprobe.models.variants import POOLS as POOLS  # the pools the lab CNN offers (re-exported)
from shiftprobe.models.variants import apply_variants, check_variant, circular_same

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PROBE_LAYERS = ("conv1", "conv2", "fc1", "logits")
CONV_LAYERS = ("conv1", "conv2")
PADDINGS = ("valid", "circular")


class LabCNN(CropWindowModel, nn.Module):
    """The lab CNN. ``probe(x)`` returns every probe point by name; ``forward`` the lab's triple."""

    #: probe points measured by default (module names, or aliases below)
    default_probe_layers = ("conv1", "conv2", "fc1", "logits")
    #: display names of modules: fc2's output is the logits
    layer_aliases = {"logits": "fc2"}

    def __init__(
        self,
        pool: str = "max",
        padding: str = "valid",
        blur_filter_size: int = 3,
        normalize: bool = False,
        image_size: int = 28,
    ):
        super().__init__()
        check_variant(pool, padding, PADDINGS)
        self.pool, self.padding, self.normalize = pool, padding, bool(normalize)
        conv_kw = circular_same(padding, 5)
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5, **conv_kw)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **conv_kw)
        if pool == "blur":
            self.pool1 = nn.Sequential(MaxPool2x2(stride=1), BlurPool2d(10, blur_filter_size, stride=2))
            self.pool2 = nn.Sequential(MaxPool2x2(stride=1), BlurPool2d(20, blur_filter_size, stride=2))
        else:
            self.pool1 = MaxPool2x2()
            self.pool2 = MaxPool2x2()
        self.map_sizes = self._map_sizes(image_size)
        side = self.map_sizes["pool2"]
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)
        if pool == "aps":  # the max pools become MaxPool2x2(1) + APSDownsample2d (no random draws)
            apply_variants(self, pool, padding)

    def _map_sizes(self, image_size: int) -> dict[str, int]:
        shrink = 0 if self.padding == "circular" else 4
        # a circularly padded stride-1 max pool keeps the size, then APS halves it rounding up
        ceil = (self.pool, self.padding) == ("aps", "circular")

        def halve(n: int) -> int:
            return -(-n // 2) if ceil else n // 2

        c1 = image_size - shrink
        p1 = halve(c1)
        c2 = p1 - shrink
        return {"conv1": c1, "pool1": p1, "conv2": c2, "pool2": halve(c2)}

    # -- the computation -------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> network input (normalised when ``normalize`` is on)."""
        return (x - self.mean) / self.std if self.normalize else x

    def head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the conv2 probe point."""
        fc1 = self.fc1(F.relu(self.pool2(conv2)).flatten(1))
        return {"fc1": fc1, "logits": self.fc2(F.relu(fc1))}

    def probe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every probe point by name: ``conv1`` (pre-pool), ``conv2`` (pre-pool), ``fc1`` (pre-ReLU), ``logits``."""
        conv1 = self.conv1(self.prepare(x))
        conv2 = self.conv2(F.relu(self.pool1(conv1)))
        return {"conv1": conv1, "conv2": conv2, **self.head(conv2)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lab's contract: ``(log_probs, conv2_repr, fc1_repr)``."""
        p = self.probe(x)
        return F.log_softmax(p["logits"], dim=1), p["conv2"], p["fc1"]

    # -- all crop-mode shifts of a batch at once (``shiftprobe.models.crop_windows``) -----------------
    def crop_windows(self) -> CropWindows | None:
        """The crop fast path with valid convolutions and max or blur pools: conv1 and the max pool (stride 2
        in the lab net, stride 1 as the blur variant's first step) are window-compatible; the blur (reflect
        padding) runs per shift. Circular padding and APS (its choice depends on the whole map): None."""
        if self.padding != "valid" or self.pool == "aps":
            return None
        if self.pool == "blur":
            return CropWindows(PROBE_LAYERS, self._crop_conv1, self.head, prewindow=self.pool1[0],
                               after_prewindow=self._crop_after_prewindow)
        return CropWindows(PROBE_LAYERS, self._crop_conv1, self.head, conv2=self._crop_conv2)

    def _crop_conv1(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.prepare(x))

    def _crop_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.pool1(conv1)))

    def _crop_after_prewindow(self, windows: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.pool1[1](windows)))


# Hand-derived receptive fields of the lab CNN (pool='max', padding='valid'), checked against a
# perturbation measurement (tests/models/test_receptive_fields.py) and the engine's inference.
#
# Receptive field of map position i (one axis, unbounded input), as (stride r, a, b): the inclusive
# pixel interval [r*i + a, r*i + b]. A layer with kernel k, stride s, padding p on a map with (r, a, b)
# gives (r*s, a - r*p, b + r*(k - 1 - p)); ReLU is pointwise.
#   conv1  k5 s1 on pixels:    [i, i+4]                 -> (1, 0, 4)
#   pool1  k2 s2 on conv1:     [2i, (2i+1)+4]           -> (2, 0, 5)
#   conv2  k5 s1 on pool1:     [2i, 2(i+4)+5]           -> (2, 0, 13)
#   pool2  k2 s2 on conv2:     [2*2i, 2(2i+1)+13]       -> (4, 0, 15)
# (The blur variant's reflect padding and the circular variant's wrap-around make the fields depend
# on the map border; they are not listed.)
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    "conv1": (1, 0, 4),
    "pool1": (2, 0, 5),
    "conv2": (2, 0, 13),
    "pool2": (4, 0, 15),
}
