"""Adaptive polyphase sampling (A. Chaman and I. Dokmanić 2021, "Truly Shift-Invariant Convolutional
Neural Networks"): down-sampling by ``s`` that keeps, per image, the polyphase component
``x[:, :, i::s, j::s]`` of largest l2 norm (summed in float64, float32 on MPS; a tie keeps the lowest
index ``i * s + j``). Why it makes a network exactly invariant to circular shifts: docs/measurement.md."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn


def _pair(stride) -> tuple[int, int]:
    sy, sx = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in (sy, sx)):
        raise ValueError(f"APS stride={stride!r} is not allowed: use an integer >= 1 or a pair of them")
    return int(sy), int(sx)


def polyphase_components(x: torch.Tensor, stride) -> torch.Tensor:
    """``(B, sy * sx, C, ceil(H / sy), ceil(W / sx))``: component ``i * sx + j`` is ``x[:, :, i::sy, j::sx]``,
    after padding ``x`` circularly at its end (bottom, right) to multiples of the stride."""
    sy, sx = _pair(stride)
    b, c, h, w = x.shape
    pad_h, pad_w = -h % sy, -w % sx
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        h, w = h + pad_h, w + pad_w
    parts = x.reshape(b, c, h // sy, sy, w // sx, sx).permute(0, 3, 5, 1, 2, 4)
    return parts.reshape(b, sy * sx, c, h // sy, w // sx)


def largest_component(components: torch.Tensor) -> torch.Tensor:
    """``(B,)``: for each image, the index of its component of largest l2 norm (the lowest on a tie)."""
    dtype = torch.float32 if components.device.type == "mps" else torch.float64
    norms = components.detach().to(dtype).square().sum(dim=(2, 3, 4))
    return norms.argmax(dim=1)


class PolyphaseChoice:
    """One polyphase choice shared by the main-path and skip-path APS layers of a residual block: the first
    to run in a call of the block chooses, the other takes the same components. ``reset`` is the block's
    forward pre-hook; the choice is kept per thread (the measurement runs batches in parallel threads on
    one model); a copy (``copy.deepcopy``, pickling) starts empty."""

    def __init__(self):
        self._local = threading.local()

    def reset(self, *_hook_args) -> None:
        self._local.index = None

    def get(self) -> torch.Tensor | None:
        return getattr(self._local, "index", None)

    def set(self, index: torch.Tensor) -> None:
        self._local.index = index

    def __deepcopy__(self, memo) -> PolyphaseChoice:
        return PolyphaseChoice()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._local = threading.local()


class APSDownsample2d(nn.Module):
    """Down-sampling by ``stride`` (int or pair) that keeps, per image, the polyphase component of largest
    l2 norm; ``choice``: shared with the other APS layer of a residual block."""

    def __init__(self, stride=2, choice: PolyphaseChoice | None = None):
        super().__init__()
        self.stride = _pair(stride)
        self.choice = choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        components = polyphase_components(x, self.stride)
        index = self.choice.get() if self.choice is not None else None
        if index is None or index.shape[0] != x.shape[0]:
            index = largest_component(components)
            if self.choice is not None:
                self.choice.set(index)
        return components[torch.arange(x.shape[0], device=x.device), index]

    def extra_repr(self) -> str:
        shared = ", shared choice" if self.choice is not None else ""
        return f"stride={self.stride}{shared}"
