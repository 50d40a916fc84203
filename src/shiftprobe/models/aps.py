"""Adaptive polyphase sampling (A. Chaman and I. Dokmanić 2021, "Truly Shift-Invariant Convolutional
Neural Networks").

Down-sampling by ``s`` keeps one of the ``s x s`` polyphase components of a map, ``x[:, :, i::s, j::s]``.
A plain stride keeps component ``(0, 0)`` whatever the input; APS keeps, per image, the component of
largest l2 norm over all channels. A circular shift of an ``H x W`` map (``H``, ``W`` multiples of ``s``)
permutes the components cyclically and shifts each one circularly, so it leaves the set of norms
unchanged: APS keeps the same component, circularly shifted. Behind circularly padded convolutions
and before a global pool, this makes a network exactly invariant to circular shifts (the positive
control in docs/measurement.md).

- Norms are summed in float64 (float32 on Apple MPS, which has no float64): a square of a float32 is
  exact in float64, so the order of the sum barely matters and two components tie only if their norms
  are equal; a tie keeps the lowest index ``i * s + j`` (``torch.argmax`` returns the first maximum).
- A map whose side is not a multiple of ``s`` is first padded circularly at its end (bottom, right) to
  the next multiple: the output has ``ceil(H / s) x ceil(W / s)`` positions, as a strided 3x3 "same"
  convolution would. Circular shifts of such a map do not permute its components: exact invariance
  needs sides that are multiples of ``s`` at every APS layer.
- A residual block down-samples twice, in its main path and in its skip path; both must keep the same
  component, or the two paths' outputs shift by different amounts and their sum is no longer a shifted
  copy. ``PolyphaseChoice`` shares one choice between them (the reference implementation passes the
  main path's indices to the skip path): the first APS layer of the pair to run in a call of the block
  chooses from its own map, the other one takes the same components.
"""

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
    """``(B, sy * sx, C, ceil(H / sy), ceil(W / sx))``: the polyphase components of ``x`` (B, C, H, W),
    component ``i * sx + j`` being ``x[:, :, i::sy, j::sx]`` (after circular padding to multiples of
    the stride)."""
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
    """One polyphase choice shared by the APS layers of a residual block (see the module docstring).

    ``reset`` is the block's forward pre-hook: every call of the block starts without a choice. The
    choice is kept per thread (the measurement runs batches in parallel threads on one model); a copy
    (``copy.deepcopy``, pickling) starts empty.
    """

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
    """Down-sampling by ``stride`` that keeps, per image, the polyphase component of largest l2 norm.

    Parameters
    ----------
    stride : int or (int, int)
        The down-sampling factor (2: half the rows and columns).
    choice : PolyphaseChoice, optional
        Shared with the other APS layer of a residual block: both keep the same component.
    """

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
