"""The paired-translation test set: items ``(x, T(s) x, y, s)``, deterministic for a seed.

A ``ShiftPlan`` says which shifts each test image is paired with:

* ``grid``   every ``(dy, dx)`` with ``|dy|, |dx| <= max_shift`` (the same list for every image);
* ``axis``   horizontal shifts only, ``dy = 0``;
* ``random`` one seeded random non-zero shift per image.

``PairedShiftDataset`` exposes the plan item by item (image-major order) for inspection, loaders and
tests; the measurement engine reads the same plan block-wise, which is much faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from shiftprobe.shifts import (
    SHIFT_PATTERNS,
    check_max_shift,
    check_mode,
    random_shifts,
    shift_grid,
    shift_images,
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
    def build(cls, max_shift: int, mode: str = "crop", pattern: str = "grid", seed: int = 0, n_images: int = 0):
        check_max_shift(max_shift)
        check_mode(mode)
        if pattern not in SHIFT_PATTERNS:
            raise ValueError(f"shift.pattern={pattern!r} is not known; use one of {list(SHIFT_PATTERNS)}")
        if pattern == "random":
            return cls(max_shift, mode, pattern, seed, n_images, per_image=random_shifts(n_images, max_shift, seed))
        return cls(max_shift, mode, pattern, seed, n_images, shifts=tuple(shift_grid(max_shift, pattern)))

    @property
    def side(self) -> int:
        return 2 * self.max_shift + 1

    @property
    def n_shift_ids(self) -> int:
        """Size of the shift-id space: every cell of the ``(2m+1) x (2m+1)`` grid."""
        return self.side * self.side

    def shift_id(self, dy, dx):
        """Index of a shift in the full grid (row-major, ``dy`` then ``dx``); works on ints and tensors."""
        return (dy + self.max_shift) * self.side + (dx + self.max_shift)

    def id_to_shift(self, sid: int) -> tuple[int, int]:
        return sid // self.side - self.max_shift, sid % self.side - self.max_shift

    @property
    def shifts_per_image(self) -> int:
        return 1 if self.pattern == "random" else len(self.shifts)

    def shifts_of(self, image_indices: torch.Tensor) -> torch.Tensor:
        """``B x S x 2`` long tensor: the shifts paired with each of the given images."""
        if self.per_image is not None:
            return self.per_image[image_indices.cpu()].view(-1, 1, 2)
        grid = torch.tensor(self.shifts, dtype=torch.long)
        return grid.view(1, -1, 2).expand(len(image_indices), -1, -1)


class PairedShiftDataset(Dataset):
    """Items ``(x, T(s) x, y, s)``: float pixel images ``1 x 28 x 28`` in [0, 1], label, shift ``(dy, dx)``.

    Built from the test split held as one uint8 tensor; shifts are applied in pixel space, before
    any normalisation (the network normalises internally when configured to).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, plan: ShiftPlan):
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images N x H x W, got {images.dtype} {tuple(images.shape)}")
        if plan.n_images and plan.n_images != len(images):
            raise ValueError(f"the plan was built for {plan.n_images} images, the set has {len(images)}")
        self.images, self.labels, self.plan = images, labels, plan

    def __len__(self) -> int:
        return len(self.images) * self.plan.shifts_per_image

    def __getitem__(self, index: int):
        s_per = self.plan.shifts_per_image
        i, j = divmod(int(index), s_per)
        shift = self.plan.shifts_of(torch.tensor([i]))[0, j]
        x = self.images[i].unsqueeze(0).float().div_(255)
        tx = shift_images(x, int(shift[0]), int(shift[1]), self.plan.mode)
        return x, tx, self.labels[i], shift.clone()
