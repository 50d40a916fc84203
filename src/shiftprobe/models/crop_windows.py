"""All crop-mode shifts of a batch from one pass over the zero-padded images (the crop fast path).

A crop-mode shift of ``x`` by ``(dy, dx)`` is a window of ``x`` zero-padded by ``m = max |shift|``, and a
valid, stride-1 convolution of a window is the window of the convolution. ``CropWindowProbe`` is the
mixin of the networks built as

    conv1 (valid, stride 1) -> down-sampling (2x2, stride 2, valid) -> conv2 (valid, stride 1) -> head

(the lab CNN, ``GapCNN``, ``AllConvCNN``). conv1 runs once on the padded images; the stride-2
down-sampling and conv2 run once per pooling phase (4 phases); each shift's conv1 and conv2 maps are
windows of those maps, and only the head runs per shift. A network whose down-sampling is not
window-compatible as a whole (the blur pool: its reflect padding depends on the window) declares a
window-compatible first part (``crop_prewindow``, e.g. a stride-1 max pool) and the rest
(``crop_after_prewindow``), which runs per shift on the windows of the first part.

The engine (``shiftprobe.probe.engine``) uses ``supports_crop_windows``, ``crop_window_layers`` (the probe
points ``probe_crop_shifts`` returns), ``crop_window_maps`` (those that are windows of one basis map that
moves by ``shift / stride``), ``crop_shift_basis``, ``probe_crop_shifts``, ``crop_window_source`` and
``crop_window``. The tests check every probe point against ``probe(shift_images(x, dy, dx))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class CropWindowProbe:
    """Mixin: ``probe_crop_shifts`` for conv1 -> 2x2 stride-2 down-sampling -> conv2 -> head networks.

    A subclass defines ``crop_conv1(x)`` (the prepared input's conv1 map), ``crop_conv2(conv1)`` (the
    down-sampling and conv2 of a conv1 map), ``crop_head(conv2)`` (the probe points after conv2, by name)
    and ``crop_window_layers``; optionally ``crop_prewindow`` / ``crop_after_prewindow`` (see the module).
    """

    #: the probe points ``probe_crop_shifts`` returns (the crop fast path's reach)
    crop_window_layers: tuple[str, ...] = ()

    @property
    def supports_crop_windows(self) -> bool:
        return True

    @property
    def crop_window_maps(self) -> tuple[str, ...]:
        """The probe points whose shifted maps are windows of one basis map that moves by ``shift /
        stride``: there a shifted map holds, at each position, the very number of the unshifted one.
        conv1 always; conv2 (one map per pooling phase, so at even shifts) unless a pre-window stage is used."""
        return ("conv1",) if self.uses_prewindow else ("conv1", "conv2")

    @property
    def uses_prewindow(self) -> bool:
        """True when only the first part of the down-sampling is window-compatible (``crop_prewindow``)."""
        return False

    def crop_conv1(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crop_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crop_head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def crop_prewindow(self, conv1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crop_after_prewindow(self, windows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crop_shift_basis(self, x: torch.Tensor, max_shift: int) -> dict:
        """What every crop-mode shift up to ``max_shift`` of ``x`` shares: see ``probe_crop_shifts``."""
        if not self.supports_crop_windows:
            raise NotImplementedError(f"{type(self).__name__} has no crop-window fast path in this configuration")
        m = int(max_shift)
        conv1 = self.crop_conv1(F.pad(x, (m, m, m, m)))  # zeros in pixel space: exactly what crop mode fills in
        side1 = conv1.shape[-1] - 2 * m
        basis = {"max_shift": m, "conv1": conv1, "sides": {"conv1": side1}}
        if self.uses_prewindow:
            basis["prewindow"] = self.crop_prewindow(conv1)
            basis["sides"]["prewindow"] = basis["prewindow"].shape[-1] - 2 * m
            return basis
        basis["conv2_phases"] = {(py, px): self.crop_conv2(conv1[:, :, py:, px:]) for py in (0, 1) for px in (0, 1)}
        basis["sides"]["conv2"] = basis["conv2_phases"][0, 0].shape[-1] - m
        return basis

    def probe_crop_shifts(
        self, x: torch.Tensor | None, shifts: Sequence[tuple[int, int]], basis: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """The probe points of ``T(s) x`` for every crop-mode shift ``s``, as ``B x S x ...`` tensors, from
        ``basis`` (``crop_shift_basis``; built from ``x`` when None or too small for the shifts)."""
        shifts = [(int(dy), int(dx)) for dy, dx in shifts]
        need = max((max(abs(dy), abs(dx)) for dy, dx in shifts), default=0)
        if basis is None or basis["max_shift"] < need:
            basis = self.crop_shift_basis(x, need)
        conv1 = self._stacked_windows(basis, "conv1", shifts)
        b, s = conv1.shape[:2]
        if self.uses_prewindow:
            conv2 = self.crop_after_prewindow(self._stacked_windows(basis, "prewindow", shifts).flatten(0, 1))
            conv2 = conv2.view(b, s, *conv2.shape[1:])
        else:
            conv2 = self._stacked_windows(basis, "conv2", shifts)
        head = self.crop_head(conv2.reshape(b * s, *conv2.shape[2:]))
        return {"conv1": conv1, "conv2": conv2, **{k: v.view(b, s, *v.shape[1:]) for k, v in head.items()}}

    def _stacked_windows(self, basis: dict, name: str, shifts: list[tuple[int, int]]) -> torch.Tensor:
        return torch.stack([self.crop_window(basis, name, dy, dx) for dy, dx in shifts], dim=1)

    def crop_window(self, basis: dict, name: str, dy: int, dx: int) -> torch.Tensor:
        """Probe point ``name`` (or ``prewindow``) of the images crop-shifted by ``(dy, dx)``: a window (view)."""
        source, y0, x0 = self.crop_window_source(basis, name, dy, dx)
        side = basis["sides"][name]
        return source[:, :, y0 : y0 + side, x0 : x0 + side]

    def crop_window_source(self, basis: dict, name: str, dy: int, dx: int) -> tuple[torch.Tensor, int, int]:
        """``(map, y0, x0)``: probe point ``name`` (one of ``crop_window_maps``, or ``prewindow``) of the
        crop-shifted image is the window of ``map`` (a tensor of ``basis``) at origin ``(y0, x0)``."""
        m = basis["max_shift"]
        sy, sx = m - dy, m - dx  # window origin in the padded conv1 map
        if name == "conv1":
            return basis["conv1"], sy, sx
        if name == "prewindow" and "prewindow" in basis:  # stride 1: the same origin
            return basis["prewindow"], sy, sx
        if name == "conv2" and "conv2_phases" in basis:  # the pooling phase of the origin, then its origin there
            return basis["conv2_phases"][sy % 2, sx % 2], sy // 2, sx // 2
        raise KeyError(f"{name!r} is not one of crop_window_maps {self.crop_window_maps}")
