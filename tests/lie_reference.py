"""An independent reference for the Lie derivative's tests: the transformations as explicit warps.

Imports nothing from ``shiftprobe``. A geometric generator is a flow ``v(u) = M u + b`` in pixels about
the centre ``((W - 1) / 2, (H - 1) / 2)``, ``u = (u_x, u_y)`` with y down (the issue's table, with
``rotate`` in today's sense, counter-clockwise as displayed); the warp ``T_t`` moves the content along
the flow exactly: output pixel ``u`` reads the input at ``phi_{-t}(u) = expm(-t M) u - t b``
(``grid_sample``, bilinear, ``align_corners=True``). ``saturate``: ``gray + (1 + t)(x - gray)`` with the
ITU-R BT.601 grey ``0.299 R + 0.587 G + 0.114 B``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: (M, b) per geometric generator; rows of M: v_x, v_y; columns: u_x, u_y
FLOWS = {
    "translate_x": ([[0, 0], [0, 0]], [1, 0]),
    "translate_y": ([[0, 0], [0, 0]], [0, 1]),
    "rotate": ([[0, 1], [-1, 0]], [0, 0]),
    "scale": ([[1, 0], [0, 1]], [0, 0]),
    "shear": ([[0, 1], [0, 0]], [0, 0]),
    "stretch": ([[1, 0], [0, -1]], [0, 0]),
    "hyperbolic_rotate": ([[0, 1], [1, 0]], [0, 0]),
}
GEOMETRIC = tuple(FLOWS)
AREA_PRESERVING = tuple(g for g in GEOMETRIC if g != "scale")
BT601 = (0.299, 0.587, 0.114)


def saturate(x: torch.Tensor, t: float) -> torch.Tensor:
    gray = sum(w * x[:, c : c + 1] for c, w in enumerate(BT601))
    return gray + (1 + t) * (x - gray)


def warp(
    x: torch.Tensor,
    generator: str,
    t: float,
    method: str = "bilinear",
    padding: str = "zeros",
    stride: int = 1,
) -> torch.Tensor:
    """``T_t x`` (a map of ``stride`` r: the image's flow in map coordinates, ``b / r``, same ``M``)."""
    if generator == "saturate":
        return saturate(x, t)
    n, _, h, w = x.shape
    m = torch.tensor(FLOWS[generator][0], dtype=torch.float64)
    b = torch.tensor(FLOWS[generator][1], dtype=torch.float64) / stride
    if method == "fourier":  # a translation as a DFT phase ramp
        axis, size, shift = (-1, w, float(b[0]) * t) if b[0] else (-2, h, float(b[1]) * t)
        k = torch.arange(size, dtype=x.dtype)
        k = torch.where(k < (size + 1) // 2, k, k - size)  # signed frequency index
        shape = [1, 1, 1, 1]
        shape[axis] = size
        ramp = torch.polar(torch.ones_like(k), -2 * math.pi * k * shift / size).view(shape)
        return torch.fft.ifft(torch.fft.fft(x, dim=axis) * ramp, dim=axis).real
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cx, cy = (w - 1) / 2, (h - 1) / 2
    u = torch.stack([xx - cx, yy - cy], dim=-1)  # h x w x 2, (u_x, u_y)
    src = u @ torch.linalg.matrix_exp(-t * m).T - t * b
    sx, sy = src[..., 0] + cx, src[..., 1] + cy
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], dim=-1).to(x.dtype).expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def rms_norms(d: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the RMS of ``d`` and that over the RMS of ``ref``."""
    rms_d = d.flatten(1).pow(2).mean(1).sqrt()
    return rms_d, rms_d / ref.flatten(1).pow(2).mean(1).sqrt()


def strokes(n: int, size: int = 28, seed: int = 0, width: float = 1.3, length: float = 2.5) -> torch.Tensor:
    """``(n, 1, size, size)`` float64 images of three smooth elongated Gaussian strokes each, at random
    orientations near the centre: smooth, anisotropic, and nearly 0 (below 1e-4) on the outer pixels.
    Each stroke peaks at 1/3, so the pixels stay in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    out = torch.zeros(n, 1, size, size, dtype=torch.float64)
    for i in range(n):
        for _ in range(3):
            cy, cx = (torch.rand(2, generator=g, dtype=torch.float64) * 6 + (size / 2 - 3)).tolist()
            th = float(torch.rand(1, generator=g) * math.pi)
            a = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
            b = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
            out[i, 0] += torch.exp(-(a**2) / (2 * length**2) - b**2 / (2 * width**2)) / 3
    return out
