"""``MaxPool2x2``: the lab's 2x2 max pool (stride 2), or its stride-1 form (the first step of the blur and
APS down-sampling), fast without autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaxPool2x2(nn.Module):
    """``max_pool2d(x, 2, stride)``, ``stride`` 2 or 1. Without autograd: two element-wise maxima of shifted
    or strided views (the same values, NaN included; several times faster on the CPU); with autograd
    ``F.max_pool2d`` itself, so training follows the lab exactly (ties included)."""

    def __init__(self, stride: int = 2):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MaxPool2x2 stride must be 1 or 2, got {stride!r}")
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 2, stride=self.stride)
        if self.stride == 1:
            rows = torch.maximum(x[..., :-1, :], x[..., 1:, :])
            return torch.maximum(rows[..., :-1], rows[..., 1:])
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])

    def extra_repr(self) -> str:
        return f"kernel_size=2, stride={self.stride}"
