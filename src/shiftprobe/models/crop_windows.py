"""The crop fast path: every crop-mode shift of a batch from one pass over the zero-padded images (a valid
stride-1 convolution of a window is the window of the convolution). ``CropWindowModel`` is the base of the
networks ``conv1 -> 2x2 stride-2 down-sampling -> conv2 -> head`` that offer it; the engine runs
``self_check`` once and otherwise measures on the plain path (docs/performance.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropWindows:
    """The crop fast path of one network: ``layers`` (the probe points ``shifted`` returns), ``conv1`` (padded
    input -> conv1 map), ``head`` (conv2 maps -> ``{probe point: tensor}`` after conv2), and either ``conv2``
    (a conv1 map of one pooling phase -> its conv2 map) or ``prewindow`` (the window-compatible first part
    of the down-sampling) with ``after_prewindow`` (the rest, then conv2)."""

    layers: tuple[str, ...]
    conv1: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], dict]
    conv2: Callable[[torch.Tensor], torch.Tensor] | None = None
    prewindow: Callable[[torch.Tensor], torch.Tensor] | None = None
    after_prewindow: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def window_maps(self) -> tuple[str, ...]:
        """The probe points whose shifted maps are windows of one basis map: there a shifted map holds, at
        each position, the very number of the unshifted one (conv2 only without a pre-window stage)."""
        return ("conv1",) if self.prewindow is not None else ("conv1", "conv2")

    def basis(self, padded: torch.Tensor, max_shift: int) -> dict:
        """What every shift up to ``max_shift`` shares, from the network input of the images zero-padded by
        ``max_shift`` in pixel space (normalised after padding: the pad is the normalised black)."""
        m = int(max_shift)
        conv1 = self.conv1(padded)
        basis = {"max_shift": m, "conv1": conv1, "sides": {"conv1": conv1.shape[-1] - 2 * m}}
        if self.prewindow is not None:
            basis["prewindow"] = self.prewindow(conv1)
            basis["sides"]["prewindow"] = basis["prewindow"].shape[-1] - 2 * m
            return basis
        basis["conv2_phases"] = {(py, px): self.conv2(conv1[:, :, py:, px:]) for py in (0, 1) for px in (0, 1)}
        basis["sides"]["conv2"] = basis["conv2_phases"][0, 0].shape[-1] - m
        return basis

    def shifted(self, basis: dict, shifts: Sequence[tuple[int, int]], skip=()) -> dict[str, torch.Tensor]:
        """Every probe point of the crop-shifted images, ``B x S x ...``, for ``S`` shifts within the basis;
        ``skip``: probe points the caller does not read (``conv1`` is then not stacked, nor returned)."""
        b, s = len(basis["conv1"]), len(shifts)
        out = {} if "conv1" in skip else {"conv1": self._stacked(basis, "conv1", shifts)}
        if self.prewindow is not None:
            conv2 = self.after_prewindow(self._stacked(basis, "prewindow", shifts).flatten(0, 1))
            conv2 = conv2.view(b, s, *conv2.shape[1:])
        else:
            conv2 = self._stacked(basis, "conv2", shifts)
        head = self.head(conv2.reshape(b * s, *conv2.shape[2:]))
        return {**out, "conv2": conv2, **{k: v.view(b, s, *v.shape[1:]) for k, v in head.items()}}

    def _stacked(self, basis: dict, name: str, shifts) -> torch.Tensor:
        return torch.stack([self.window(basis, name, dy, dx) for dy, dx in shifts], dim=1)

    def window(self, basis: dict, name: str, dy: int, dx: int) -> torch.Tensor:
        """Probe point ``name`` (or ``prewindow``) of the images crop-shifted by ``(dy, dx)``: a view."""
        source, y0, x0 = self.source(basis, name, dy, dx)
        side = basis["sides"][name]
        return source[:, :, y0 : y0 + side, x0 : x0 + side]

    def source(self, basis: dict, name: str, dy: int, dx: int) -> tuple[torch.Tensor, int, int]:
        """``(map, y0, x0)``: probe point ``name`` of the crop-shifted images is the window of ``map`` at
        ``(y0, x0)`` (``name``: one of ``window_maps``, or ``prewindow``)."""
        m = basis["max_shift"]
        sy, sx = m - dy, m - dx  # the window's origin in the padded conv1 map
        if name == "conv1" or (name == "prewindow" and "prewindow" in basis):  # stride 1: the same origin
            return basis[name], sy, sx
        if name == "conv2" and "conv2_phases" in basis:  # the pooling phase of the origin, then its origin
            return basis["conv2_phases"][sy % 2, sx % 2], sy // 2, sx // 2
        raise KeyError(f"{name!r} is not one of the window maps {self.window_maps}")

    def self_check(self, padded: torch.Tensor, max_shift: int, plain: Mapping[tuple[int, int], Mapping[str, torch.Tensor]],
                   rtol: float) -> str | None:
        """None when every probe point of ``plain`` (``{shift: the network's own probe points of the images
        crop-shifted by it}``) equals its window within ``rtol`` of the map's largest value; else why not, in one
        line. A non-zero shift is what shows a padded layer: at the zero shift its windows are right."""
        got = self.shifted(self.basis(padded, max_shift), list(plain))
        for j, (shift, maps) in enumerate(plain.items()):
            for name in (n for n in self.layers if n in maps):
                expected, window = maps[name], got[name][:, j]
                if window.shape != expected.shape:
                    return f"the crop windows of {name!r} have shape {tuple(window.shape)}, not {tuple(expected.shape)}"
                worst = float((window.float() - expected.float()).abs().max())
                if not worst <= rtol * max(1.0, float(expected.abs().max())):
                    return f"the crop windows of {name!r} differ from the network's map by {worst:.3g} (shift {list(shift)})"
        return None


class CropWindowModel:
    """Base of the networks ``conv1 -> down-sampling -> conv2 -> head``: a subclass defines ``head`` (conv2
    -> ``{"fc1": ..., "logits": ..., ...}``) and ``crop_layers``; ``crop_windows()`` returns the fast path
    of the network as built (valid convolutions, stride-2 down-sampling), None for a variant."""

    crop_layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "logits")

    def crop_windows(self) -> CropWindows | None:
        if (self.pool, self.padding) != ("max", "valid"):
            return None
        return CropWindows(self.crop_layers, self.input_conv1, self.head, conv2=self.to_conv2)

    def to_conv2(self, conv1: torch.Tensor) -> torch.Tensor:
        """A conv1 map -> its conv2 map (through ``pool1`` and ReLU; AllConvCNN: its own)."""
        return self.conv2(F.relu(self.pool1(conv1)))

    def input_conv1(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.prepare(x))

    def probe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every probe point by name: ``conv1``, ``conv2`` (before their down-sampling), then the head's."""
        conv1 = self.input_conv1(x)
        conv2 = self.to_conv2(conv1)
        return {"conv1": conv1, "conv2": conv2, **self.head(conv2)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lab's contract: ``(log_probs, conv2_repr, fc1_repr)``."""
        p = self.probe(x)
        return F.log_softmax(p["logits"], dim=1), p["conv2"], p["fc1"]
