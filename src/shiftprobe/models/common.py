"""Pieces the model variants share: the fixed pixel normalisation and global average pooling."""

from __future__ import annotations

import torch
from torch import nn

from shiftprobe.models.lab import MNIST_MEAN, MNIST_STD
from shiftprobe.models.variants import check_variant


class PixelInputNet(nn.Module):
    """Base of the variants: input pixels in [0, 1]; with ``normalize`` on, (x - 0.1307) / 0.3081
    (the same constants for every channel) is the network's first, fixed and pointwise step, so a
    shift applied in pixel space commutes with it."""

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def set_variant(self, in_channels: int, pool: str, padding: str, paddings: tuple[str, ...]) -> None:
        """Check and keep the settings every variant network has: its input channels, pool and padding."""
        self.in_channels = check_positive_int("model.in_channels", in_channels)
        check_variant(pool, padding, paddings)
        self.pool, self.padding = pool, padding

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> network input (normalised when ``normalize`` is on)."""
        return (x - self.mean) / self.std if self.normalize else x


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: ``(B, C, H, W) -> (B, C)`` for any ``H, W``
    (``nn.AdaptiveAvgPool2d(1)`` then flatten, as one probe point)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: use an integer >= 1")
    return value
