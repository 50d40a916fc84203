"""Training-time rotations and flips of a whole batch at once, each image with its own parameter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotation_thetas(angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``B x 2 x 3`` ``affine_grid`` matrices (float64): the output at ``(x, y)`` (pixels about the centre,
    y down) reads the input at ``(x cos a - y sin a, x sin a + y cos a)``, i.e. ``S R S^-1`` in
    ``affine_grid``'s coordinates with ``S = diag(2 / W, 2 / H)``."""
    a = angles.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    ratio_xy, ratio_yx = height / width, width / height  # (2/W) / (2/H), (2/H) / (2/W)
    return torch.stack(
        [torch.stack([cos, -sin * ratio_xy, zero], dim=-1), torch.stack([sin * ratio_yx, cos, zero], dim=-1)],
        dim=-2,
    )


def rotate_per_sample(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate image ``b`` of ``x`` (``B x C x H x W`` float) by ``angles[b]`` degrees about its centre
    (pixel ``((H - 1) / 2, (W - 1) / 2)``), counter-clockwise as displayed for a positive angle (as
    ``torch.rot90(x, 1, dims=(-2, -1))``), bilinear, zero fill, with ONE batched affine grid."""
    if x.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    angles = torch.as_tensor(angles).reshape(-1)
    if angles.numel() != b:
        raise ValueError(f"{angles.numel()} angles for a batch of {b} images: give one angle per image")
    theta = rotation_thetas(angles.to(x.device), h, w).to(x.dtype)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip_per_sample(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """``x.flip(-1)`` (left-right mirror) for the images where ``flips[b]`` is true, ``x`` elsewhere."""
    flips = torch.as_tensor(flips, dtype=torch.bool, device=x.device).reshape(-1)
    if flips.numel() != x.shape[0]:
        raise ValueError(f"{flips.numel()} flip flags for a batch of {x.shape[0]} images: give one per image")
    return torch.where(flips.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
