"""The families beyond integer shifts, ``Rotation90``, ``Flip``, ``Rotation``, ``SubpixelTranslation``:
``Transform`` dataclasses over ``shiftprobe.probe.resample``'s pixel operations. A map action needs the
layer's sampling grid symmetric about the image centre, ``a + b + r (h - 1) = H - 1`` (``grid_asymmetry``;
docs/measurement.md, "Transformation families"). ``family_from_name`` builds any family from its option name;
a family's ``name`` is its key in the results."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from shiftprobe.probe.resample import SHIFT_MODES, bilinear_shift, fourier_shift, rotate
from shiftprobe.probe.transform import Transform
from shiftprobe.probe.translation import Translation

SUBPIXEL_METHODS = ("bilinear", "fourier")
SUBPIXEL_AXES = ("xy", "x", "y", "both")
FLIP_AXES = ("horizontal", "vertical")
#: decimals kept in generated parameter values (so 3 * 0.1 is 0.3)
_DECIMALS = 10


def _number(value: Any, where: str, example: str) -> float:
    """``value`` as a finite float, or a ValueError naming it (``where``: e.g. ``"Rotation(step={!r})"``)
    and the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where.format(value)}: use a finite number, e.g. {example}")
    return float(value)


def _check_name(cls_name: str, name: Any) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"{cls_name}(name={name!r}): use a non-empty name without spaces around it, e.g. 'rot90'")


def _max_and_step(family, key: str, unit: str, top: float, allowed: str) -> None:
    """Check ``family.<key>`` (in ``(0, top]``, ``allowed`` in words) and ``family.step`` (in ``(0, <key>]``)
    and store both as floats; a ValueError names the value and gives the default as the example."""
    cls, default = type(family).__name__, {f.name: f.default for f in fields(family)}
    largest = _number(getattr(family, key), f"{cls}({key}={{!r}})", repr(default[key]))
    step = _number(family.step, f"{cls}(step={{!r}})", repr(default["step"]))
    if not 0 < largest <= top:
        raise ValueError(f"{cls}({key}={getattr(family, key)!r}): use {allowed}, e.g. {default[key]!r}")
    if not 0 < step <= largest:
        raise ValueError(f"{cls}(step={family.step!r}): use a positive step of at most {key}={largest:g} "
                         f"{unit}, e.g. {default['step']!r}")
    object.__setattr__(family, key, largest)
    object.__setattr__(family, "step", step)


def _steps(max_value: float, step: float) -> int:
    """How many whole ``step``s fit in ``max_value`` (tolerant of float round-off)."""
    return int(math.floor(max_value / step + 1e-9))


# -- geometry of a map: is its sampling grid symmetric about the image centre? --------------------
def grid_asymmetry(geometry, image_size: tuple[int, int], axis: int | None = None) -> str | None:
    """None when the map's sampling grid along ``axis`` (0: rows, 1: columns; None: both) is symmetric
    about the image centre (``a + b + r (h - 1) = H - 1``, module docstring), else why not."""
    if geometry is None or not getattr(geometry, "spatial", False):
        return "not a spatial map"
    if geometry.stride is None or geometry.receptive_field is None:
        return "the layer's stride and receptive field are not inferred"
    for i in (0, 1) if axis is None else (axis,):
        r, (a, b) = geometry.stride[i], geometry.receptive_field[2 * i : 2 * i + 2]
        h, size = geometry.shape[1 + i], image_size[i]
        total = a + b + r * (h - 1)
        if total != size - 1:
            name = "rows" if i == 0 else "columns"
            return (
                f"its sampling grid is not symmetric about the image centre along the {name} "
                f"(a + b + r (h - 1) = {a} + {b} + {r}*{h - 1} = {total}, not H - 1 = {size - 1})"
            )
    return None


# -- the families ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rotation90(Transform):
    """Quarter turns ``k * 90`` degrees counter-clockwise (``torch.rot90(x, k, dims=(-2, -1))``).

    A permutation of the pixels of a square image (the sorting test applies); the map action is the same
    quarter turn of the map (a symmetric grid on both axes, equal strides, a square map).

    Examples
    --------
    >>> import torch
    >>> fam = Rotation90()
    >>> fam.params()
    [1, 2, 3]
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> fam.act(x, 1)[0, 0].tolist()
    [[1.0, 3.0], [0.0, 2.0]]
    """

    name: str = "rot90"

    kind: ClassVar[str] = "rot90"
    parameter: ClassVar[str] = "k"
    permutes_pixels: ClassVar[bool] = True

    def __post_init__(self):
        _check_name("Rotation90", self.name)

    def params(self) -> list[int]:
        return [1, 2, 3]

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        return torch.rot90(x, _quarter_turns(param), dims=(-2, -1))

    def check_image_size(self, height: int, width: int) -> None:
        super().check_image_size(height, width)
        if height != width:
            raise ValueError(
                f"Rotation90 needs square images (a quarter turn of {height}x{width} is {width}x{height}); "
                "crop or pad the images to a square, or use Rotation(...)"
            )

    def map_problem(self, param, geometry, image_size) -> str | None:
        problem = grid_asymmetry(geometry, image_size)
        if problem is not None:
            return problem
        (sy, sx), h, w = geometry.stride, geometry.shape[1], geometry.shape[2]
        if sy != sx or h != w:
            return f"a quarter turn needs a square map with equal strides (map {h}x{w}, stride {sy}x{sx})"
        return None


def _quarter_turns(param) -> int:
    if isinstance(param, bool) or not isinstance(param, int):
        raise ValueError(f"Rotation90 parameter k={param!r}: use an integer number of quarter turns, e.g. 1")
    return param


@dataclass(frozen=True)
class Flip(Transform):
    """Mirror images: ``"horizontal"`` (left-right, the columns reversed) and ``"vertical"`` (up-down).

    A permutation of the pixels (the sorting test applies); the map action is the same flip of the map.
    ``axes``: the flips measured, each once.

    Examples
    --------
    >>> import torch
    >>> fam = Flip()
    >>> fam.params()
    ['horizontal', 'vertical']
    >>> fam.act(torch.tensor([[[[0.0, 1.0, 2.0]]]]), "horizontal").flatten().tolist()
    [2.0, 1.0, 0.0]
    """

    axes: tuple[str, ...] = FLIP_AXES
    name: str = "flip"

    kind: ClassVar[str] = "flip"
    parameter: ClassVar[str] = "flip"
    permutes_pixels: ClassVar[bool] = True

    def __post_init__(self):
        _check_name("Flip", self.name)
        axes = (self.axes,) if isinstance(self.axes, str) else self.axes
        try:
            axes = tuple(axes)
        except TypeError:
            raise ValueError(f"Flip(axes={self.axes!r}): use a list of {list(FLIP_AXES)}") from None
        bad = [a for a in axes if a not in FLIP_AXES]
        if bad or not axes or len(set(axes)) != len(axes):
            raise ValueError(
                f"Flip(axes={self.axes!r}): use a non-empty list of distinct values from {list(FLIP_AXES)}, "
                f"e.g. ['horizontal']" + (f" ({bad[0]!r} is not one)" if bad else "")
            )
        object.__setattr__(self, "axes", axes)

    def params(self) -> list[str]:
        return list(self.axes)

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        return torch.flip(x, dims=(_flip_dim(param),))

    def map_problem(self, param, geometry, image_size) -> str | None:
        return grid_asymmetry(geometry, image_size, 1 if _flip_dim(param) == -1 else 0)


def _flip_dim(param) -> int:
    if param not in FLIP_AXES:
        raise ValueError(f"Flip parameter {param!r}: use one of {list(FLIP_AXES)}")
    return -1 if param == "horizontal" else -2


@dataclass(frozen=True)
class Rotation(Transform):
    """Rotations by continuous angles about the image centre: bilinear, zero fill.

    The angles are ``k * step`` degrees, ``0 < |k * step| <= max_angle <= 180``, counter-clockwise positive.
    The map action rotates the map by the same angle: approximate (interpolation, the corners), never an exact
    test.

    Examples
    --------
    >>> Rotation(max_angle=10, step=5).params()
    [-10.0, -5.0, 5.0, 10.0]
    """

    max_angle: float = 45.0
    step: float = 5.0
    name: str = "rotation"

    kind: ClassVar[str] = "rotation"
    parameter: ClassVar[str] = "angle_deg"
    generators: ClassVar[tuple[str, ...]] = ("rotate",)
    exact_test: ClassVar[bool] = False

    def __post_init__(self):
        _check_name("Rotation", self.name)
        _max_and_step(self, "max_angle", "degrees", 180, "a number of degrees in (0, 180]")

    def params(self) -> list[float]:
        n = _steps(self.max_angle, self.step)
        return [round(k * self.step, _DECIMALS) for k in range(-n, n + 1) if k != 0]

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        return rotate(x, _number(param, "Rotation angle {!r}", "5.0"))

    def map_problem(self, param, geometry, image_size) -> str | None:
        problem = grid_asymmetry(geometry, image_size)
        if problem is None and geometry.stride[0] != geometry.stride[1]:
            return f"a rotation needs equal strides along rows and columns (stride {geometry.stride[0]}x{geometry.stride[1]})"
        return problem


@dataclass(frozen=True)
class SubpixelTranslation(Transform):
    """Fractional shifts of the image content, by bilinear interpolation or a phase ramp in the DFT.

    ``axes="xy"`` (default): offsets ``t = step, 2 step, ..., max_offset`` along x (``("x", t)``: right)
    and along y (``("y", t)``: down), two curves; ``"x"`` or ``"y"``: one of them; ``"both"``: the 2-D
    grid of ``(oy, ox)`` with ``|oy|, |ox| <= max_offset`` in steps of ``step``, ``(0, 0)`` left out.
    ``method``: ``bilinear_shift`` or ``fourier_shift``; ``mode``: ``roll`` (circular) or ``crop`` (zero fill).
    The map action moves the map by ``offset / stride`` with the same method and mode, compared over the whole
    map for a circular layer under roll, else on the positions certified for both integer offsets around it.

    Examples
    --------
    >>> import torch
    >>> fam = SubpixelTranslation(max_offset=0.5, step=0.25)
    >>> fam.params()
    [('x', 0.25), ('x', 0.5), ('y', 0.25), ('y', 0.5)]
    >>> fam.act(torch.tensor([[[[0.0, 4.0, 8.0]]]]), ("x", 0.5)).flatten().tolist()
    [0.0, 2.0, 6.0]
    """

    max_offset: float = 1.0
    step: float = 0.125
    axes: str = "xy"
    method: str = "bilinear"
    mode: str = "crop"
    name: str = "subpixel"

    kind: ClassVar[str] = "subpixel"
    parameter: ClassVar[str] = "offset_px"

    def __post_init__(self):
        _check_name("SubpixelTranslation", self.name)
        _max_and_step(self, "max_offset", "pixels", math.inf, "a positive number of pixels")
        for key, value, allowed in (("axes", self.axes, SUBPIXEL_AXES), ("method", self.method, SUBPIXEL_METHODS),
                                    ("mode", self.mode, SHIFT_MODES)):
            if value not in allowed:
                raise ValueError(f"SubpixelTranslation({key}={value!r}): use one of {list(allowed)}")

    @property
    def dims(self) -> int:
        return 2 if self.axes == "both" else 1

    @property
    def generators(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"translate_{a}" for a in "xy" if self.axes in ("xy", "both", a))

    def offsets(self) -> list[float]:
        """The positive offsets ``step, 2 step, ..., max_offset`` (pixels)."""
        return [round(k * self.step, _DECIMALS) for k in range(1, _steps(self.max_offset, self.step) + 1)]

    def params(self) -> list[tuple]:
        ts = self.offsets()
        if self.axes == "both":
            grid = [-t for t in reversed(ts)] + [0.0] + ts
            return [(oy, ox) for oy in grid for ox in grid if (oy, ox) != (0.0, 0.0)]
        return [(axis, t) for axis in ("x", "y") if axis in self.axes for t in ts]

    def param_to_json(self, param):
        oy, ox = subpixel_offsets(param)
        if self.axes == "both":
            return [oy, ox]
        return {"axis": param[0], "offset": param[1]} if isinstance(param, tuple) else param

    def check_image_size(self, height: int, width: int) -> None:
        super().check_image_size(height, width)
        side = {"x": width, "y": height}.get(self.axes, min(height, width))  # the sides it shifts along
        if self.max_offset >= side:
            raise ValueError(
                f"SubpixelTranslation(max_offset={self.max_offset:g}) moves a {height}x{width} image entirely out "
                f"of the frame: use at most {side - 1}"
            )

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        return self._shift(x, *subpixel_offsets(param))

    def _shift(self, x, oy, ox):
        if self.method == "fourier":
            return fourier_shift(x, oy, ox, self.mode)
        return bilinear_shift(x, oy, ox, self.mode)

    def map_problem(self, param, geometry, image_size) -> str | None:
        if geometry is None or not getattr(geometry, "spatial", False):
            return "not a spatial map"
        if geometry.stride is None:
            return "the layer's stride is not inferred"
        if not self._whole_map(geometry) and geometry.interior is None:
            return "the layer's receptive field is not inferred, so no position is certified"
        return None

    def _whole_map(self, geometry) -> bool:
        return self.mode == "roll" and bool(geometry.circular)

    def _map_offsets(self, param, geometry) -> tuple[float, float]:
        oy, ox = subpixel_offsets(param)
        return oy / geometry.stride[0], ox / geometry.stride[1]

    def _act_on_map(self, feature, param, geometry):
        return self._shift(feature, *self._map_offsets(param, geometry))

    def map_region(self, param, geometry) -> tuple[slice, slice] | None:
        if self._whole_map(geometry):
            return None
        my, mx = self._map_offsets(param, geometry)
        lo_y, hi_y, lo_x, hi_x = geometry.interior
        # q interior, and q - floor(m), q - ceil(m) interior (an empty slice when none is)
        y0, y1 = max(lo_y, lo_y + math.ceil(my)), min(hi_y, hi_y + math.floor(my))
        x0, x1 = max(lo_x, lo_x + math.ceil(mx)), min(hi_x, hi_x + math.floor(mx))
        return slice(y0, max(y0, y1 + 1)), slice(x0, max(x0, x1 + 1))


def subpixel_offsets(param) -> tuple[float, float]:
    """``(oy, ox)`` in pixels of a ``SubpixelTranslation`` parameter: ``("x", t)``, ``("y", t)``,
    ``{"axis": "x", "offset": t}`` or ``(oy, ox)``."""
    if isinstance(param, dict):
        param = (param.get("axis"), param.get("offset"))
    if isinstance(param, (tuple, list)) and len(param) == 2:
        first, second = param
        if first in ("x", "y"):
            t = _number(second, "SubpixelTranslation offset {!r}", "0.5")
            return (0.0, t) if first == "x" else (t, 0.0)
        return _number(first, "SubpixelTranslation offset oy={!r}", "0.5"), _number(second, "SubpixelTranslation offset ox={!r}", "0.5")
    raise ValueError(f"SubpixelTranslation parameter {param!r}: use ('x', t), ('y', t) or (oy, ox)")


#: every family by its Hydra option name (``kind``)
FAMILIES: dict[str, type] = {
    "translation": Translation,
    "rot90": Rotation90,
    "flip": Flip,
    "rotation": Rotation,
    "subpixel": SubpixelTranslation,
}


def family_from_name(name: str, **settings):
    """The family object of a Hydra option name, with its settings.

    Examples
    --------
    >>> family_from_name("rotation", max_angle=90, step=45).params()
    [-90.0, -45.0, 45.0, 90.0]
    """
    if name not in FAMILIES:
        raise ValueError(f"transform {name!r} is not known; use one of {list(FAMILIES)}")
    cls = FAMILIES[name]
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"transform {name!r} has no setting {unknown[0]!r}; its settings are {known}")
    return cls(**settings)


def as_transforms(transform) -> list[Transform]:
    """``measure``'s ``transform=`` as a list of transforms (names allowed), each once by name."""
    items = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    out = [family_from_name(item) if isinstance(item, str) else item for item in items]
    for item in out:
        if not isinstance(item, Transform):
            raise TypeError(
                f"transform={item!r}: use shiftprobe.Translation(), Rotation90(), Flip(), Rotation() or "
                "SubpixelTranslation(), a list of them, or their names"
            )
    names = [t.name for t in out]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"transform lists {name!r} twice; give each family once (or distinct name=...)")
    return out
