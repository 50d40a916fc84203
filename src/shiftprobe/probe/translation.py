"""Integer translations: ``Translation`` (patterns ``grid``, ``axis``, ``random``), its plan (ids over the
whole ``(2m + 1)^2`` grid; groups: every shift, radius, parity, the summary; the two-shift consistency draws)
and its map metrics: the map offset ``s / r`` compared on the certified positions (a circular layer under
roll: the whole map), ``aligned_rel``, ``nearest_aligned_rel``, ``sorted_rel_certified``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from shiftprobe.probe.geometry import certified_slices
from shiftprobe.probe.metrics import (
    aligned_offset,
    aligned_values,
    sorted_rel_certified_at,
    sum_dtype,
    working,
)
from shiftprobe.probe.resample import check_mode, shift_images, shift_images_per_sample
from shiftprobe.probe.transform import MapAction, Plan, Transform

SHIFT_PATTERNS = ("grid", "axis", "random")
#: MNIST's side: the image size of the checks made before any image is seen
IMAGE_SIZE = 28


def check_max_shift(max_shift: int, size: int = IMAGE_SIZE, shape: str | None = None) -> int:
    """``max_shift`` checked against the side ``size`` it shifts along (of an image ``shape``, "HxW")."""
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"Translation(max_shift={max_shift!r}): use a non-negative integer, e.g. 4")
    if max_shift >= size:
        raise ValueError(
            f"Translation(max_shift={max_shift}) is beyond what a {shape or f'{size}x{size}'} image allows: a shift of {size} or "
            f"more moves the whole image out of the frame. Use at most {size - 1}."
        )
    return max_shift


def shift_grid(max_shift: int, pattern: str = "grid") -> list[tuple[int, int]]:
    """The shifts of a deterministic pattern: ``grid`` (every ``|dy|, |dx| <= max_shift``) or ``axis`` (dy = 0)."""
    check_max_shift(max_shift, max_shift + 1)
    r = range(-max_shift, max_shift + 1)
    if pattern == "axis":
        return [(0, dx) for dx in r]
    if pattern != "grid":
        raise ValueError(f"shift_grid: pattern {pattern!r} has no fixed shifts; use 'grid' or 'axis' (random_shifts)")
    return [(dy, dx) for dy in r for dx in r]


def random_shifts(n: int, max_shift: int, seed: int, nonzero: bool = True, pattern: str = "grid") -> torch.Tensor:
    """``n`` seeded random shifts (``n x 2`` long), uniform over the pattern's shifts (``grid``: the square,
    ``axis``: ``dy = 0``); ``nonzero`` leaves ``(0, 0)`` out (drawn among the other cells: no rejection)."""
    check_max_shift(max_shift, max_shift + 1)
    if nonzero and max_shift == 0:
        raise ValueError("Translation(max_shift=0) leaves no non-zero shift to draw; use max_shift >= 1")
    g = torch.Generator().manual_seed(int(seed))
    side = 2 * max_shift + 1
    cells = side if pattern == "axis" else side * side
    idx = torch.randint(0, cells - int(nonzero), (n,), generator=g)
    if nonzero:
        idx = idx + (idx >= cells // 2).long()
    if pattern == "axis":
        return torch.stack([torch.zeros_like(idx), idx - max_shift], dim=1)
    return torch.stack([idx // side - max_shift, idx % side - max_shift], dim=1)


@dataclass(frozen=True)
class Translation(Transform):
    """Integer translations of at most ``max_shift`` pixels along each axis. ``mode``: ``"crop"`` (zero fill)
    or ``"roll"`` (circular); ``pattern``: ``"grid"`` (every ``(dy, dx)`` of the square), ``"axis"``
    (horizontal only) or ``"random"`` (one seeded non-zero shift per image, drawn with ``seed``, which also
    draws the two-shift consistency's shifts)."""

    max_shift: int = 4
    mode: str = "crop"
    pattern: str = "grid"
    seed: int = 0

    name: ClassVar[str] = "translation"
    kind: ClassVar[str] = "translation"
    parameter: ClassVar[str] = "shift"
    permutes_pixels: ClassVar[bool] = True
    generators: ClassVar[tuple[str, ...]] = ("translate_x", "translate_y")
    map_metrics: ClassVar[tuple[str, ...]] = ("aligned_rel", "nearest_aligned_rel", "sorted_rel_certified")

    def __post_init__(self):
        check_max_shift(self.max_shift, self.max_shift + 1)
        check_mode(self.mode)
        if self.pattern not in SHIFT_PATTERNS:
            raise ValueError(
                f"Translation(pattern={self.pattern!r}) is not known; use one of {list(SHIFT_PATTERNS)}"
            )
        if self.max_shift == 0:
            raise ValueError("Translation(max_shift=0) measures no shift: use max_shift >= 1")

    @property
    def dims(self) -> int:
        return 2

    def params(self) -> list[tuple[int, int]]:
        """The shifts (the random pattern draws one per image from the whole grid)."""
        return shift_grid(self.max_shift, "axis" if self.pattern == "axis" else "grid")

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        return shift_images(x, param[0], param[1], self.mode)

    def apply(self, x: torch.Tensor, params) -> torch.Tensor:
        """``B x S x C x H x W``; ``params``: ``S`` shifts for every image, or ``B x S x 2`` (host) per image."""
        b = len(x)
        shifts = params if isinstance(params, torch.Tensor) else torch.tensor(params).view(1, -1, 2).expand(b, -1, -1)
        s = shifts.shape[1]
        xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        return shift_images_per_sample(xs, shifts.reshape(b * s, 2), self.mode).view(b, s, *x.shape[1:])

    def check_image_size(self, height: int, width: int) -> None:
        """The shifts within the image: the ``axis`` pattern shifts along its width only."""
        check_max_shift(self.max_shift, width if self.pattern == "axis" else min(height, width), f"{height}x{width}")

    def plan(self, n_images: int, image_size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Plan:
        """Parameter ids over the whole ``(2m + 1)^2`` grid (row-major), paired as the pattern says."""
        self.check_image_size(*image_size)
        grid = tuple(shift_grid(self.max_shift))
        index = {p: j for j, p in enumerate(grid)}

        def ids(shifts) -> torch.Tensor:
            return torch.tensor([index[tuple(s)] for s in shifts.tolist()], dtype=torch.long)

        nonzero = [j for j, p in enumerate(grid) if p != (0, 0)]
        even = [j for j in nonzero if grid[j][0] % 2 == 0 and grid[j][1] % 2 == 0]
        groups = [("param", list(p), (j,)) for j, p in enumerate(grid)]
        groups += [("radius", r, tuple(j for j, p in enumerate(grid) if max(map(abs, p)) == r))
                   for r in range(self.max_shift + 1)]
        groups += [("parity", "even", tuple(even)), ("parity", "odd", tuple(j for j in nonzero if j not in even)),
                   ("summary", None, tuple(nonzero))]
        draw = "axis" if self.pattern == "axis" else "grid"
        random = self.pattern == "random"  # never pairs an image with itself
        draws = tuple(ids(random_shifts(n_images, self.max_shift, self.seed + k, nonzero=random, pattern=draw))
                      for k in (1, 2))
        pairs = ids(random_shifts(n_images, self.max_shift, self.seed)).view(-1, 1) if random else \
            tuple(index[p] for p in self.params())
        return Plan(grid, tuple(groups), pairs, draws)  # type: ignore[arg-type]

    def map_problem(self, param, geometry, image_size) -> str | None:
        if not geometry.spatial:
            return "not a spatial map"
        if not geometry.exact_test:
            return geometry.note or "the layer's stride and receptive field are not inferred"
        if aligned_offset(*param, geometry.stride) is None:
            return f"the stride {list(geometry.stride)} does not divide the shift {list(param)}"
        return None

    def map_action_note(self, geometry, image_size) -> str | None:
        return None if geometry.exact_test else self.map_problem((0, 0), geometry, image_size)

    def layer_map_metrics(self, geometry, image_size) -> tuple[str, ...]:
        return self.map_metrics if geometry.spatial and geometry.exact_test else ()

    def map_action(self, feature, param, geometry, image_size) -> MapAction | None:
        if self.map_problem(param, geometry, image_size) is not None:
            return None
        my, mx = aligned_offset(*param, geometry.stride)
        feature = working(feature)
        if self.mode == "roll" and geometry.circular:
            return MapAction(torch.roll(feature, shifts=(my, mx), dims=(-2, -1)))
        slices = certified_slices(geometry.interior, my, mx)
        if slices is None:
            return MapAction(feature[..., :0, :0], (slice(0, 0), slice(0, 0)))
        return MapAction(feature[..., slices[1][0], slices[1][1]], slices[0])

    @staticmethod
    def window_exact(param, geometry) -> bool:
        """Whether ``map_values`` claims a shift's map metrics without reading the maps where the maps are
        crop windows of ``f(x)``'s own (``MapContext.windows``): the stride divides the shift."""
        return aligned_offset(*param, geometry.stride) is not None

    def param_to_json(self, param) -> list[int]:
        return list(param)

    def map_values(self, f_x: torch.Tensor, f_t: torch.Tensor, params, ctx) -> tuple[dict, dict]:
        """``aligned_rel``, ``nearest_aligned_rel``, ``sorted_rel_certified`` (``B x S``, NaN where undefined)
        and the no-overlap flags; ``params``: the chunk's shifts (a list, or ``B x S x 2`` per image)."""
        if isinstance(params, torch.Tensor):
            values = _aligned_per_pair(f_x, f_t, params, self.mode, ctx)
        else:
            values = _aligned_uniform(f_x, f_t, params, self.mode, ctx)
        a, n, c, a_out, n_out = values
        return ({"aligned_rel": a, "nearest_aligned_rel": n, "sorted_rel_certified": c},
                {"aligned_rel": a_out, "nearest_aligned_rel": n_out, "sorted_rel_certified": a_out})


def _aligned_uniform(f_x, f_t, shifts: list, mode: str, ctx):
    """``map_values`` for the same shifts for every image: one column per shift. Where the crop fast path's
    maps are windows of ``f(x)``'s own maps (``ctx.windows``, checked bit for bit), a shift the stride
    divides holds the very numbers of ``f(x)`` on the certified positions: all three are exactly 0."""
    geo = ctx.geometry
    dtype = sum_dtype(f_x.device)
    b = f_x.shape[0]
    nan = torch.full((b,), float("nan"), dtype=dtype, device=f_x.device)
    zero = torch.zeros((b,), dtype=dtype, device=f_x.device)
    no = torch.zeros((b,), dtype=torch.bool, device=f_x.device)
    aligned, nearest, certified, aligned_out = [], [], [], []
    for j, (dy, dx) in enumerate(shifts):
        offset = aligned_offset(dy, dx, geo.stride)
        if ctx.windows and Translation.window_exact((dy, dx), geo):
            value = nan if certified_slices(geo.interior, *offset) is None else zero
            aligned.append(value), nearest.append(value), certified.append(value)
            aligned_out.append(torch.isnan(value))
            continue
        value, near = aligned_values(f_x, f_t[:, j], dy, dx, geo, mode, ctx.norms)
        nearest.append(near.to(dtype))
        if value is None:
            aligned.append(nan), certified.append(nan), aligned_out.append(no)
        else:
            value = value.to(dtype)
            aligned.append(value), aligned_out.append(torch.isnan(value))
            certified.append(_certified_sorted(f_x, f_t[:, j], value, offset, geo, mode, ctx.accelerator))
    aligned, nearest, certified, aligned_out = (torch.stack(v, dim=1) for v in (aligned, nearest, certified, aligned_out))
    return aligned, nearest, certified, aligned_out, torch.isnan(nearest)


def _aligned_per_pair(f_x, f_t, shifts: torch.Tensor, mode: str, ctx):
    """``map_values`` for per-image shifts (``B x S x 2``, host): the pairs of each shift together (grouped
    on the host; each group's indices go to the device in one non-blocking copy)."""
    geo, device = ctx.geometry, f_x.device
    shape = shifts.shape[:2]
    aligned = torch.full(shape, float("nan"), dtype=sum_dtype(device), device=device)
    nearest, certified = aligned.clone(), aligned.clone()
    aligned_out = torch.zeros(shape, dtype=torch.bool, device=device)
    nearest_out = aligned_out.clone()
    for dy, dx in sorted(set(map(tuple, shifts.reshape(-1, 2).tolist()))):
        rows, cols = torch.nonzero((shifts[..., 0] == dy) & (shifts[..., 1] == dx), as_tuple=True)
        where = (rows.to(device, non_blocking=True), cols.to(device, non_blocking=True))
        x, t = f_x[where[0]], f_t[where]
        value, near = aligned_values(x, t, dy, dx, geo, mode)
        nearest[where] = near.to(aligned.dtype)
        nearest_out[where] = torch.isnan(near)
        if value is not None:
            value = value.to(aligned.dtype)
            aligned[where] = value
            aligned_out[where] = torch.isnan(value)
            offset = aligned_offset(dy, dx, geo.stride)
            certified[where] = _certified_sorted(x, t, value, offset, geo, mode, ctx.accelerator)
    return aligned, nearest, certified, aligned_out, nearest_out


def _certified_sorted(f_x, f_t, aligned: torch.Tensor, offset, geo, mode: str, accelerator: bool) -> torch.Tensor:
    """``sorted_rel_certified`` of the pairs of one shift. Sorting is a contraction, so a pair whose certified
    maps are identical (``aligned_rel == 0``) scores exactly 0 unsorted. Skipping those is a CPU speed-up
    decided on the values (host reads); on an accelerator every pair is sorted and the exact ones set to 0
    with ``torch.where`` (the same figures, no synchronisation)."""
    todo = (aligned != 0) & ~torch.isnan(aligned)  # NaN (no overlap) stays NaN
    if accelerator:
        return torch.where(todo, sorted_rel_certified_at(f_x, f_t, *offset, geo, mode).to(aligned.dtype), aligned)
    if not bool(aligned.any()):  # every pair exact to the last bit (NaN counts as true)
        return aligned
    out = torch.where(todo, torch.zeros_like(aligned), aligned)
    if bool(todo.all()):
        return sorted_rel_certified_at(f_x, f_t, *offset, geo, mode).to(out.dtype)
    if bool(todo.any()):
        out[todo] = sorted_rel_certified_at(f_x[todo], f_t[todo], *offset, geo, mode).to(out.dtype)
    return out
