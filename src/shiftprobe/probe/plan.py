"""``ShiftPlan``: which shifts each test image is paired with, deterministic for a seed.

* ``grid``   every ``(dy, dx)`` with ``|dy|, |dx| <= max_shift`` (the same list for every image);
* ``axis``   horizontal shifts only, ``dy = 0``;
* ``random`` one seeded random non-zero shift per image.

The plan also holds the two seeded random shifts per image of R. Zhang's two-shift consistency,
drawn from the pattern's own distribution (``axis``: horizontal shifts only).

**Groups** (``ShiftPlan.groups``): the sets of shifts results.json reports a figure for, each a set of
shift ids: every shift of the grid, every radius ``max(|dy|, |dx|)``, the parity classes ``even``
(non-zero, both components even) and ``odd`` (non-zero, the rest), and ``summary`` (every non-zero
shift). ``membership`` is the ``n_shift_ids x n_groups`` 0/1 matrix the engine multiplies per-pair
values with to get each image's per-group sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shiftprobe.probe.transforms import (
    Translation,
    check_max_shift,
    check_mode,
    check_pattern,
    random_shifts,
    shift_grid,
)


@dataclass(frozen=True)
class ShiftPlan:
    """Which shifts pair with which images. ``per_image`` is set for ``random``, ``shifts`` otherwise."""

    max_shift: int
    mode: str
    pattern: str
    seed: int
    n_images: int
    shifts: tuple[tuple[int, int], ...] | None = None
    per_image: torch.Tensor | None = None  # n_images x 2, long

    @classmethod
    def build(
        cls,
        max_shift: int,
        mode: str = "crop",
        pattern: str = "grid",
        seed: int = 0,
        n_images: int = 0,
        image_size: int | None = None,
    ):
        if image_size is not None:
            check_max_shift(max_shift, image_size)
        else:
            check_max_shift(max_shift)
        check_mode(mode)
        check_pattern(pattern)
        if pattern == "random":
            return cls(max_shift, mode, pattern, seed, n_images, per_image=random_shifts(n_images, max_shift, seed))
        return cls(max_shift, mode, pattern, seed, n_images, shifts=tuple(shift_grid(max_shift, pattern)))

    @classmethod
    def from_transform(cls, transform: Translation, n_images: int, image_size: int | None = None) -> ShiftPlan:
        return cls.build(transform.max_shift, transform.mode, transform.pattern, transform.seed, n_images, image_size)

    @property
    def side(self) -> int:
        return 2 * self.max_shift + 1

    @property
    def n_shift_ids(self) -> int:
        """Size of the shift-id space: every cell of the ``(2m+1) x (2m+1)`` grid."""
        return self.side * self.side

    @property
    def uniform(self) -> bool:
        """Every image is paired with the same shifts."""
        return self.per_image is None

    def shift_id(self, dy, dx):
        """Index of a shift in the full grid (row-major, ``dy`` then ``dx``); works on ints and tensors."""
        return (dy + self.max_shift) * self.side + (dx + self.max_shift)

    def id_to_shift(self, sid: int) -> tuple[int, int]:
        return sid // self.side - self.max_shift, sid % self.side - self.max_shift

    @property
    def shifts_per_image(self) -> int:
        return 1 if self.pattern == "random" else len(self.shifts)

    @property
    def n_pairs(self) -> int:
        return self.n_images * self.shifts_per_image

    def shifts_of(self, image_indices: torch.Tensor) -> torch.Tensor:
        """``B x S x 2`` long tensor: the shifts paired with each of the given images."""
        if self.per_image is not None:
            return self.per_image[image_indices.cpu()].view(-1, 1, 2)
        grid = torch.tensor(self.shifts, dtype=torch.long)
        return grid.view(1, -1, 2).expand(len(image_indices), -1, -1)

    def groups(self) -> list[tuple]:
        """The reported groups, in membership-column order: ``("shift", sid)`` for every shift id,
        ``("radius", r)`` for ``r = 0 .. max_shift``, ``("parity", "even")``, ``("parity", "odd")``,
        ``("summary",)``."""
        return (
            [("shift", sid) for sid in range(self.n_shift_ids)]
            + [("radius", r) for r in range(self.max_shift + 1)]
            + [("parity", "even"), ("parity", "odd"), ("summary",)]
        )

    def in_group(self, group: tuple, dy: int, dx: int) -> bool:
        """Whether shift ``(dy, dx)`` belongs to ``group`` (one of ``groups()``)."""
        kind = group[0]
        nonzero = (dy, dx) != (0, 0)
        if kind == "shift":
            return self.shift_id(dy, dx) == group[1]
        if kind == "radius":
            return max(abs(dy), abs(dx)) == group[1]
        if kind == "parity":
            even = dy % 2 == 0 and dx % 2 == 0
            return nonzero and (even if group[1] == "even" else not even)
        if kind == "summary":
            return nonzero
        raise ValueError(f"unknown group {group!r}")

    def group_shift_ids(self, group: tuple) -> list[int]:
        """The shift ids of ``group`` (every cell of the grid, measured or not)."""
        return [sid for sid in range(self.n_shift_ids) if self.in_group(group, *self.id_to_shift(sid))]

    def membership(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n_shift_ids x n_groups`` 0/1 matrix: entry ``(s, g)`` is 1 when shift id ``s`` is in group ``g``."""
        groups = self.groups()
        out = torch.zeros(self.n_shift_ids, len(groups), dtype=dtype)
        for g, group in enumerate(groups):
            out[self.group_shift_ids(group), g] = 1
        return out

    def two_shift_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent seeded random shifts per image (zero allowed, except for the ``random``
        pattern, which never pairs an image with itself), from the pattern's distribution."""
        draw_pattern = "axis" if self.pattern == "axis" else "grid"
        nonzero = self.pattern == "random"
        return (
            random_shifts(self.n_images, self.max_shift, self.seed + 1, nonzero=nonzero, pattern=draw_pattern),
            random_shifts(self.n_images, self.max_shift, self.seed + 2, nonzero=nonzero, pattern=draw_pattern),
        )
