"""The lab's MNIST CNN, layer for layer, with named probe points and its ``pool`` / ``padding`` variants::

    conv1 1->10 k5 -> [conv1 probe, 10x24x24] -> max_pool 2 -> ReLU
    -> conv2 10->20 k5 -> [conv2 probe, 20x8x8] -> max_pool 2 -> ReLU -> flatten 320
    -> fc1 320->50 -> [fc1 probe, pre-ReLU] -> ReLU -> fc2 50->10 -> [logits probe] -> log_softmax
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.blurpool import BlurPool2d
from shiftprobe.models.crop_windows import CropWindowModel, CropWindows
from shiftprobe.models.maxpool import MaxPool2x2
from shiftprobe.models.variants import apply_variants, check_variant, circular_same

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PADDINGS = ("valid", "circular")


def map_sides(image_size: int, padding: str, ceil: bool) -> dict[str, int]:
    """The sides of the conv1, pool1, conv2 and pool2 maps: each 5x5 convolution takes 4 pixels (valid) or
    none (circular); each down-sampling halves, rounding up when ``ceil``."""
    sides, side = {}, image_size
    for conv, pool in (("conv1", "pool1"), ("conv2", "pool2")):
        side = sides[conv] = side - (0 if padding == "circular" else 4)
        side = sides[pool] = -(-side // 2) if ceil else side // 2
    return sides


class LabCNN(CropWindowModel, nn.Module):
    """The lab CNN: input pixels in [0, 1], ``(x - 0.1307) / 0.3081`` first when ``normalize`` is on;
    ``pool="blur"`` keeps its filter in the state_dict (``pool1.1.kernel``). ``probe(x)`` returns every
    probe point by name; ``forward`` the lab's triple."""

    default_probe_layers = ("conv1", "conv2", "fc1", "logits")
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
        # a circularly padded stride-1 max pool keeps the size, then APS halves it rounding up
        self.map_sizes = map_sides(image_size, padding, ceil=(pool, padding) == ("aps", "circular"))
        side = self.map_sizes["pool2"]
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)
        if pool == "aps":  # the max pools become MaxPool2x2(1) + APSDownsample2d (no random draws)
            apply_variants(self, pool, padding)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> network input (normalised when ``normalize`` is on)."""
        return (x - self.mean) / self.std if self.normalize else x

    def head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the conv2 probe point."""
        fc1 = self.fc1(F.relu(self.pool2(conv2)).flatten(1))
        return {"fc1": fc1, "logits": self.fc2(F.relu(fc1))}

    def crop_windows(self) -> CropWindows | None:
        """The crop fast path, also for ``pool="blur"`` with valid convolutions: its stride-1 max pool is
        window-compatible, the blur (reflect padding) runs per shift."""
        if (self.pool, self.padding) != ("blur", "valid"):
            return super().crop_windows()
        return CropWindows(self.crop_layers, self.input_conv1, self.head, prewindow=self.pool1[0],
                           after_prewindow=self._after_prewindow)

    def _after_prewindow(self, windows: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.pool1[1](windows)))


# Hand-derived receptive fields (pool='max', padding='valid'; tests/models/test_receptive_fields.py):
# map position i sees the pixels [r*i + a, r*i + b]; a layer with kernel k, stride s, padding p on a map
# with (r, a, b) gives (r*s, a - r*p, b + r*(k - 1 - p)); ReLU is pointwise.
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    "conv1": (1, 0, 4),
    "pool1": (2, 0, 5),
    "conv2": (2, 0, 13),
    "pool2": (4, 0, 15),
}
