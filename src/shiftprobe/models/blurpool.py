"""Anti-aliased down-sampling (R. Zhang 2019, "Making Convolutional Networks Shift-Invariant Again")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.errors import ArgumentError


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter of ``size`` taps (outer product of a Pascal-triangle row)."""
    if not isinstance(size, int) or size < 1 or size > 7:
        raise ArgumentError(f"blur_filter_size={size!r} is not allowed: use an integer from 1 to 7")
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = torch.outer(row, row)
    return (kernel / kernel.sum()).float()


class BlurPool2d(nn.Module):
    """Per-channel binomial blur with reflect padding, then subsampling by ``stride``. ``channels``: kept
    with the filter in the state_dict (the lab's ``pool=blur``: ``pool1.1.kernel``); None: any number of
    channels, the filter not in the state_dict (``apply_variants``: the plain weights load)."""

    def __init__(self, channels: int | None, filter_size: int = 3, stride=2):
        super().__init__()
        self.channels, self.filter_size, self.stride = channels, filter_size, stride
        before = (filter_size - 1) // 2
        self.padding = (before, filter_size - 1 - before, before, filter_size - 1 - before)
        kernel = binomial_filter(filter_size)
        if channels is None:
            self.register_buffer("kernel", kernel.view(1, 1, filter_size, filter_size), persistent=False)
        else:
            self.register_buffer("kernel", kernel.expand(channels, 1, filter_size, filter_size).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.filter_size > 1:
            x = F.pad(x, self.padding, mode="reflect")
        channels = x.shape[1] if self.channels is None else self.channels
        kernel = self.kernel.to(x.dtype).expand(channels, 1, self.filter_size, self.filter_size)
        return F.conv2d(x, kernel, stride=self.stride, groups=channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.filter_size}, stride={self.stride}"
