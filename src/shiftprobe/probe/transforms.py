"""Integer translations of images and feature maps, and the ``Translation`` transform family.

Pure tensor functions, free of Lightning, so they can be tested directly and reused.

Convention (used everywhere in the project): ``T(dy, dx)`` moves content *down* by ``dy`` and *right*
by ``dx`` pixels, ``out[..., i + dy, j + dx] = in[..., i, j]``.

* ``crop`` mode: vacated pixels are 0 and content pushed out of the frame is lost.
* ``roll`` mode: circular (``torch.roll``).

Shifts act in pixel space, on images in [0, 1], *before* any normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SHIFT_MODES = ("crop", "roll")
SHIFT_PATTERNS = ("grid", "axis", "random")
#: MNIST's side; the default image size for checks made before any image is seen
IMAGE_SIZE = 28


def check_mode(mode: str) -> str:
    if mode not in SHIFT_MODES:
        raise ValueError(f"shift mode {mode!r} is not known; use one of {list(SHIFT_MODES)} (e.g. shift.mode=crop)")
    return mode


def check_pattern(pattern: str) -> str:
    if pattern not in SHIFT_PATTERNS:
        raise ValueError(f"shift.pattern={pattern!r} is not known; use one of {list(SHIFT_PATTERNS)}")
    return pattern


def check_max_shift(max_shift: int, size: int = IMAGE_SIZE) -> int:
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"shift.max_shift must be a non-negative integer, got {max_shift!r}")
    if max_shift >= size:
        raise ValueError(
            f"shift.max_shift={max_shift} is beyond what a {size}x{size} image allows: a shift of {size} or "
            f"more moves the whole image out of the frame. Use at most {size - 1} (presets: small=2, medium=4, large=8)."
        )
    return max_shift


def shift_images(x: torch.Tensor, dy: int, dx: int, mode: str = "crop") -> torch.Tensor:
    """Apply one shift ``T(dy, dx)`` to the last two dimensions of ``x``."""
    check_mode(mode)
    dy, dx = int(dy), int(dx)
    if mode == "roll":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_r = slice(max(0, -dy), h - max(0, dy))
    dst_r = slice(max(0, dy), h - max(0, -dy))
    src_c = slice(max(0, -dx), w - max(0, dx))
    dst_c = slice(max(0, dx), w - max(0, -dx))
    out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


def shift_images_per_sample(x: torch.Tensor, shifts: torch.Tensor, mode: str = "crop") -> torch.Tensor:
    """Shift each sample of ``x`` (``B x C x H x W``) by its own ``shifts[b] = (dy, dx)``.

    Vectorised (one gather), used for training-time augmentation and per-image shift plans.
    """
    check_mode(mode)
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    shifts = shifts.to(device=x.device, dtype=torch.long, non_blocking=True).view(b, 2)  # host plans: no wait
    rows = torch.arange(h, device=x.device).view(1, h) - shifts[:, 0:1]  # source row for each output row
    cols = torch.arange(w, device=x.device).view(1, w) - shifts[:, 1:2]
    if mode == "roll":
        rows, cols = rows % h, cols % w
        valid = None
    else:
        valid = ((rows >= 0) & (rows < h)).view(b, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, w)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x[batch, :, rows.view(b, h, 1), cols.view(b, 1, w)]  # advanced indices first: B x H x W x C
    out = out.permute(0, 3, 1, 2)
    if valid is not None:
        return (out * valid.unsqueeze(1).to(out.dtype)).contiguous()
    # The gather leaves a channels-last layout, which ``.contiguous()`` keeps when C == 1 (such a tensor
    # already counts as contiguous); a convolution would then take its channels-last kernel and round
    # differently from the unshifted batch (roll by (0, 0) would not give f(x) bit for bit).
    return out.clone(memory_format=torch.contiguous_format)


def shift_grid(max_shift: int, pattern: str = "grid") -> list[tuple[int, int]]:
    """The deterministic shift set of a pattern: ``grid`` (every |dy|, |dx| <= max) or ``axis`` (dy = 0)."""
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"shift.max_shift must be a non-negative integer, got {max_shift!r}")
    r = range(-max_shift, max_shift + 1)
    if pattern == "grid":
        return [(dy, dx) for dy in r for dx in r]
    if pattern == "axis":
        return [(0, dx) for dx in r]
    if pattern == "random":
        raise ValueError("the random pattern draws one shift per image; use random_shifts(...) for it")
    raise ValueError(f"shift pattern {pattern!r} is not known; use one of {list(SHIFT_PATTERNS)}")


def random_shifts(n: int, max_shift: int, seed: int, nonzero: bool = True, pattern: str = "grid") -> torch.Tensor:
    """``n`` seeded random shifts, uniform over the pattern's shifts within ``max_shift`` (``n x 2`` long).

    ``pattern="grid"`` draws from the square ``|dy|, |dx| <= max_shift``, ``"axis"`` from ``dy = 0``.
    With ``nonzero`` the shift (0, 0) is excluded (the ``random`` pattern requires it).
    """
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"shift.max_shift must be a non-negative integer, got {max_shift!r}")
    if nonzero and max_shift == 0:
        raise ValueError("shift.max_shift=0 leaves no non-zero shift to draw; use max_shift >= 1")
    g = torch.Generator().manual_seed(int(seed))
    side = 2 * max_shift + 1
    if pattern == "axis":
        if nonzero:
            idx = torch.randint(0, side - 1, (n,), generator=g)
            idx = idx + (idx >= max_shift).long()
        else:
            idx = torch.randint(0, side, (n,), generator=g)
        return torch.stack([torch.zeros_like(idx), idx - max_shift], dim=1)
    if nonzero:
        # draw an index among the side*side - 1 non-zero grid cells, so no rejection loop is needed
        centre = (side * side) // 2
        idx = torch.randint(0, side * side - 1, (n,), generator=g)
        idx = idx + (idx >= centre).long()
    else:
        idx = torch.randint(0, side * side, (n,), generator=g)
    return torch.stack([idx // side - max_shift, idx % side - max_shift], dim=1)


def overlap_slices(dy: int, dx: int, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices ``(a, b)`` such that ``shifted[a]`` and ``original[b]`` cover the region valid in both.

    For a map ``f`` and ``g = T(dy, dx) f`` in crop mode, ``g[..., a0, a1] == f[..., b0, b1]`` elementwise.
    """
    a = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    b = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    return a, b


@dataclass(frozen=True)
class Translation:
    """Integer translations, the ``transform=`` of :func:`shiftprobe.measure`.

    Parameters
    ----------
    max_shift : int
        Largest ``|dy|``, ``|dx|`` in pixels.
    mode : {"crop", "roll"}
        ``crop``: zero fill, content pushed out is lost; ``roll``: circular.
    pattern : {"grid", "axis", "random"}
        ``grid``: every ``(dy, dx)`` of the square; ``axis``: horizontal only (``dy = 0``);
        ``random``: one seeded non-zero shift per image.
    seed : int
        Seeds the ``random`` pattern and the two-shift consistency draws.

    Examples
    --------
    >>> Translation(max_shift=1, pattern="axis").shifts()
    [(0, -1), (0, 0), (0, 1)]
    """

    max_shift: int = 4
    mode: str = "crop"
    pattern: str = "grid"
    seed: int = 0

    name = "translation"

    def __post_init__(self):
        if not isinstance(self.max_shift, int) or isinstance(self.max_shift, bool) or self.max_shift < 0:
            raise ValueError(f"Translation(max_shift={self.max_shift!r}): use a non-negative integer, e.g. 4")
        check_mode(self.mode)
        check_pattern(self.pattern)
        if self.pattern == "random" and self.max_shift == 0:
            raise ValueError("Translation(pattern='random', max_shift=0) has no non-zero shift: use max_shift >= 1")

    def shifts(self) -> list[tuple[int, int]]:
        """The shifts every image is paired with (not defined for the per-image ``random`` pattern)."""
        return shift_grid(self.max_shift, self.pattern)

    def apply(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Shift each image of ``x`` (``B x C x H x W``) by its row of ``shifts`` (``B x 2``)."""
        return shift_images_per_sample(x, shifts, self.mode)
