"""The generators of the Lie derivative, one definition per name (docs/measurement.md, "Generators"): flow fields
``v(u) = M u + b`` about the image centre (y down), ``d/dt T_t x = -v . grad x``, by bilinear (the symmetric
derivative, zero fill on images, edge fill on maps) or Fourier (translations, circular) resampling; on a map of
stride ``S`` the flow is ``S^-1 M S u' + S^-1 b``. ``saturate`` changes the colour of RGB images only."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

METHODS = ("bilinear", "fourier")
#: today's generators, measured when none are named
DEFAULT_GENERATORS = ("translate_x", "translate_y", "rotate")
#: ITU-R BT.601 luma weights (R, G, B) of ``saturate``'s grey
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

Matrix = tuple[tuple[float, float], tuple[float, float]]
ZERO: Matrix = ((0.0, 0.0), (0.0, 0.0))


@dataclass(frozen=True)
class Generator:
    """One generator: ``v(u) = matrix @ u + offset`` in pixels about the centre (rows: ``v_x``, ``v_y``;
    columns: ``u_x``, ``u_y``; y down), or a colour generator (``colour=True``)."""

    name: str
    flow: str
    unit: str
    unit_short: str
    matrix: Matrix = ZERO
    offset: tuple[float, float] = (0.0, 0.0)
    colour: bool = False

    @property
    def translation(self) -> bool:
        """A constant flow (a Fourier phase ramp can express it)."""
        return not self.colour and self.matrix == ZERO

    @property
    def divergence(self) -> float:
        """``div v = trace(M)`` (0: the flow preserves area)."""
        return self.matrix[0][0] + self.matrix[1][1]


GENERATORS: dict[str, Generator] = {g.name: g for g in (
        Generator("translate_x", "(1, 0)", "per input pixel", "per px", offset=(1.0, 0.0)),
        Generator("translate_y", "(0, 1)", "per input pixel", "per px", offset=(0.0, 1.0)),
        Generator("rotate", "(u_y, -u_x)", "per radian", "per rad", ((0.0, 1.0), (-1.0, 0.0))),
        Generator("scale", "(u_x, u_y)", "per unit of log-scale", "per log-scale", ((1.0, 0.0), (0.0, 1.0))),
        Generator("shear", "(u_y, 0)", "per unit of shear", "per shear", ((0.0, 1.0), (0.0, 0.0))),
        Generator("stretch", "(u_x, -u_y)", "per unit of log-stretch", "per log-stretch",
                  ((1.0, 0.0), (0.0, -1.0))),
        Generator("hyperbolic_rotate", "(u_y, u_x)", "per unit of hyperbolic angle", "per hyp. angle",
                  ((0.0, 1.0), (1.0, 0.0))),
        Generator("saturate", "gray + (1 + t)(x - gray)", "per unit of saturation", "per saturation",
                  colour=True),
)}


def _unknown(name, what: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{what} {name!r} is not known{hint}; use one of {list(choices)}"


def check_generators(generators: Sequence[str] | str) -> tuple[str, ...]:
    """The requested generators as a tuple; a ValueError names an unknown one, the closest name and the
    valid choices."""
    if isinstance(generators, str):
        generators = (generators,)
    out = tuple(generators)
    if not out:
        raise ValueError(f"generators=() measures nothing: give at least one of {list(GENERATORS)}")
    for g in out:
        if g not in GENERATORS:
            raise ValueError(_unknown(g, "generator", list(GENERATORS)))
    if len(set(out)) != len(out):
        raise ValueError(f"generators={list(out)} lists one twice; list each of {list(GENERATORS)} once")
    return out


def check_method(method: str, generators: Sequence[str]) -> str:
    """A ValueError for an unknown method, or for a non-translation with ``"fourier"`` (saying what to
    use)."""
    if method not in METHODS:
        raise ValueError(_unknown(method, "method", METHODS))
    if method == "fourier":
        bad = [g for g in generators if not GENERATORS[g].translation]
        if bad:
            shifts = [g for g in GENERATORS if GENERATORS[g].translation]
            raise ValueError(
                f"method='fourier' is a phase ramp, translations only ({shifts}); for {bad} use "
                f"method='bilinear', or drop {bad} from generators"
            )
    return method


def check_channels(generators: Sequence[str], channels: int) -> None:
    """A ValueError when ``saturate`` is asked of images that are not RGB."""
    colour = [g for g in generators if GENERATORS[g].colour]
    if colour and channels != 3:
        raise ValueError(
            f"generator {colour[0]!r} changes colour saturation and needs RGB images (C = 3); these have "
            f"C = {channels}: drop {colour[0]!r} from generators"
        )


# -- the flow on a map ------------------------------------------------------------------------------
def map_flow(generator: Generator, stride: tuple[int, int]) -> tuple[Matrix, tuple[float, float]]:
    """The image flow in the coordinates of a map of stride ``(r_y, r_x)``: ``S^-1 M S`` and ``S^-1 b``
    with ``S = diag(r_x, r_y)`` (see the module docstring)."""
    ry, rx = stride
    s = (rx, ry)
    m = tuple(tuple(generator.matrix[i][j] * s[j] / s[i] for j in range(2)) for i in range(2))
    return m, (generator.offset[0] / rx, generator.offset[1] / ry)  # type: ignore[return-value]


# -- derivatives of the transformation ------------------------------------------------------------
def central_difference(x: torch.Tensor, axis: int, fill: str) -> torch.Tensor:
    """``(x[j + 1] - x[j - 1]) / 2`` along ``axis``; outside the map ``0`` (``fill="zeros"``) or the edge
    value (``fill="border"``)."""
    n = x.shape[axis]
    if fill == "zeros":
        before = after = torch.zeros_like(x.narrow(axis, 0, 1))
    else:
        before, after = x.narrow(axis, 0, 1), x.narrow(axis, n - 1, 1)
    padded = torch.cat([before, x, after], dim=axis)
    return (padded.narrow(axis, 2, n) - padded.narrow(axis, 0, n)) / 2


def _field(row: tuple[float, float], offset: float, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``row[0] u_x + row[1] u_y + offset`` on the ``h x w`` grid about its centre, in ``like``'s dtype."""
    ux = torch.arange(w, dtype=torch.float64, device=like.device) - (w - 1) / 2
    uy = torch.arange(h, dtype=torch.float64, device=like.device) - (h - 1) / 2
    field = row[0] * ux.view(1, w) + row[1] * uy.view(h, 1) + offset
    return field.to(like.dtype)


def flow_derivative(x: torch.Tensor, matrix: Matrix, offset: tuple[float, float], fill: str, method: str
                    ) -> torch.Tensor:
    """``-v(u) . grad x`` for ``v(u) = matrix @ u + offset``, for a batch of images or maps ``x``
    (``... x h x w``): bilinear's symmetric derivative, or ``method="fourier"``'s (a translation)."""
    if method == "fourier":
        return fourier_derivative(x, offset)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for axis, row, b in ((-1, matrix[0], offset[0]), (-2, matrix[1], offset[1])):
        if row == (0.0, 0.0) and b == 0.0:
            continue  # this component of the flow is 0 everywhere
        out = out - central_difference(x, axis, fill) * _field(row, b, h, w, x)
    return out


def fourier_derivative(x: torch.Tensor, offset: tuple[float, float]) -> torch.Tensor:
    """``d/dt`` of the phase-ramp translation by ``t * offset`` (x, y) pixels (``shiftprobe.probe.resample.fourier_shift``) at
    ``t = 0``, in closed form: the real part of ``ifft(-2 pi i f fft(x))`` per axis (no autograd, so it
    runs inside a forward-mode pass)."""
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    out = torch.zeros_like(work)
    for axis, b in ((-1, offset[0]), (-2, offset[1])):
        if b:
            freq = torch.fft.fftfreq(x.shape[axis], device=x.device, dtype=work.dtype)
            freq = freq if axis == -1 else freq.view(-1, 1)
            spectrum = torch.fft.fft(work, dim=axis) * (-2j * torch.pi * b * freq)
            out = out + torch.fft.ifft(spectrum, dim=axis).real
    return out.to(x.dtype)


def image_derivative(x: torch.Tensor, name: str, method: str = "bilinear") -> torch.Tensor:
    """``d/dt T_t x`` at ``t = 0`` for a batch of input images ``(N, C, H, W)`` (zero fill outside);
    ``saturate``: ``x - gray`` (RGB only)."""
    g = GENERATORS[name]
    if not g.colour:
        return flow_derivative(x, g.matrix, g.offset, "zeros", method)
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"saturate needs RGB images (3 channels), got shape {tuple(x.shape)}")
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=x.device).to(x.dtype).view(3, 1, 1)
    return x - (x * weights).sum(dim=-3, keepdim=True)


def map_derivative(m: torch.Tensor, name: str, method: str, stride: tuple[int, int]) -> torch.Tensor:
    """``d/ds T'_s m`` at ``s = 0`` for a map of stride ``(r_y, r_x)`` (edge fill): the image's flow in map
    coordinates (:func:`map_flow`). Not for ``saturate`` (a colour change does not move a map)."""
    return flow_derivative(m, *map_flow(GENERATORS[name], stride), "border", method)
