"""Per-pair invariance / equivariance metrics: pure tensor functions, free of Lightning.

Every function takes the representation ``f(x)`` of the original images and ``f(T x)`` of their
translated partners and returns one value per pair; the torchmetrics accumulator in
``shiftprobe.accumulator`` sums them in float64 so the means are exact under DDP.

Definitions (features flattened, norms are Euclidean):

* ``cos``        = cos(f(x), f(Tx))
* ``dist``       = ||f(Tx) - f(x)||
* ``rel``        = ||f(Tx) - f(x)|| / ||f(x)||
* ``sorted_rel`` = ||sort(f(Tx)) - sort(f(x))|| / ||sort(f(x))||, each channel's H*W values sorted
  (a translation permutes positions within a channel, so sorting removes it: the lab's hint)
* ``aligned_rel`` = ||f(Tx)[v] - (T' f(x))[v]|| / ||(T' f(x))[v]||, where ``T'`` shifts the map by
  ``(dy/r, dx/r)`` for the layer's cumulative stride ``r`` and ``v`` is the region valid in both
  (crop mode) or the whole map (roll mode); undefined when ``r`` does not divide the shift.
* ``nearest_aligned_rel``: the smallest ``aligned_rel`` over the integer map offsets nearest to
  ``(dy/r, dx/r)``; defined for every shift, equal to ``aligned_rel`` where that is defined. It shows
  how far from exact the best alignment is at shifts the stride does not divide.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from shiftprobe.shifts import check_mode, overlap_slices

_EPS = 1e-30
_sort_pool: ThreadPoolExecutor | None = None


def _norm64(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim, computed in the input precision, returned as float64.

    (Asking ``vector_norm`` for float64 would first copy the whole input to float64, which costs more
    than the metric itself; the per-pair values only need float32 accuracy, the sums over pairs are
    float64.)
    """
    return torch.linalg.vector_norm(t, dim=-1).to(torch.float64)


def _dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last dim with broadcasting; a batched matmul when ``a`` is ``B x 1 x D``."""
    if a.dim() == 3 and b.dim() == 3 and a.shape[1] == 1 and b.shape[0] == a.shape[0]:
        return torch.bmm(b, a.transpose(1, 2)).squeeze(-1).to(torch.float64)
    return (a * b).sum(-1).to(torch.float64)


def pair_metrics(f_x: torch.Tensor, f_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cos``, ``dist``, ``rel`` and the norms, per pair, for flattened features ``(..., D)``.

    ``f_x`` broadcasts against ``f_t`` (e.g. ``B x 1 x D`` against ``B x S x D``). Results are float64.
    """
    norm_x = _norm64(f_x)
    norm_t = _norm64(f_t)
    dist = _norm64(f_t - f_x)
    dot = _dot64(f_x, f_t)
    cos = dot / (norm_x * norm_t).clamp_min(_EPS)
    # cos of identical vectors must be exactly 1; rounding of the dot product can leave 1 - 1e-7
    cos = torch.where(dist == 0, torch.ones_like(cos), cos.clamp(-1.0, 1.0))
    norm_x = norm_x.expand_as(dist)
    return {"cos": cos, "dist": dist, "rel": dist / norm_x.clamp_min(_EPS)}


def sort_channels(f: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Sort each channel's H*W values: ``(..., C, H, W) -> (..., C, H*W)``, ascending.

    On the CPU NumPy's vectorised sort (several times faster than ``torch.sort``, which also builds
    indices) runs on row blocks in a thread pool; elsewhere ``torch.sort``. With ``inplace`` a
    contiguous ``f`` is sorted in its own memory (the caller no longer needs its spatial layout).
    """
    flat = f.reshape(*f.shape[:-2], f.shape[-2] * f.shape[-1])
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64):
        return torch.sort(flat, dim=-1).values
    if inplace and flat.is_contiguous():
        arr = flat.detach().numpy()
    else:
        arr = flat.detach().contiguous().numpy().copy()  # never alias the caller's tensor
    rows = arr.reshape(-1, arr.shape[-1])
    workers = max(1, torch.get_num_threads())
    if workers == 1 or rows.shape[0] < 512:
        rows.sort(axis=-1)
    else:
        global _sort_pool
        if _sort_pool is None or _sort_pool._max_workers != workers:  # noqa: SLF001
            _sort_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shiftprobe-sort")
        blocks = np.array_split(rows, workers)  # views: each block is sorted in place
        list(_sort_pool.map(lambda b: b.sort(axis=-1), blocks))
    return flat if inplace and flat.is_contiguous() else torch.from_numpy(arr)


def sorted_rel(sorted_x: torch.Tensor, sorted_t: torch.Tensor) -> torch.Tensor:
    """``||sort(f(Tx)) - sort(f(x))|| / ||sort(f(x))||`` from per-channel sorted maps ``(..., C, HW)``."""
    sx = sorted_x.flatten(-2)
    st = sorted_t.flatten(-2)
    return _norm64(st - sx) / _norm64(sx).clamp_min(_EPS).expand(st.shape[:-1])


def aligned_offset(dy: int, dx: int, stride: int) -> tuple[int, int] | None:
    """The map shift ``(dy/r, dx/r)`` that a shift ``(dy, dx)`` should cause, or None if ``r`` does not divide it."""
    if dy % stride or dx % stride:
        return None
    return dy // stride, dx // stride


def aligned_rel(
    f_x: torch.Tensor, f_t: torch.Tensor, dy: int, dx: int, stride: int, mode: str = "crop"
) -> torch.Tensor | None:
    """Exact equivariance test for maps ``(..., C, H, W)``; None when the stride does not divide the shift.

    ``f_x`` and ``f_t`` must have the same shape (the pairs of one shift).
    """
    offset = aligned_offset(dy, dx, stride)
    if offset is None:
        return None
    return aligned_rel_at(f_x, f_t, *offset, mode=mode)


def aligned_rel_at(f_x: torch.Tensor, f_t: torch.Tensor, my: int, mx: int, mode: str = "crop") -> torch.Tensor:
    """``||f_t[v] - (T(my, mx) f_x)[v]|| / ||(T(my, mx) f_x)[v]||`` for a given map offset."""
    check_mode(mode)
    h, w = f_x.shape[-2:]
    if mode == "roll":
        expected = torch.roll(f_x, shifts=(my, mx), dims=(-2, -1))
        actual = f_t
    else:
        if abs(my) >= h or abs(mx) >= w:
            return torch.full(f_x.shape[:-3], float("nan"), dtype=torch.float64, device=f_x.device)
        (a0, a1), (b0, b1) = overlap_slices(my, mx, h, w)
        actual = f_t[..., a0, a1]
        expected = f_x[..., b0, b1]
    num = _norm64((actual - expected).flatten(-3))
    return num / _norm64(expected.flatten(-3)).clamp_min(_EPS)


def nearest_aligned_rel(f_x: torch.Tensor, f_t: torch.Tensor, dy: int, dx: int, stride: int, mode: str = "crop"):
    """Smallest ``aligned_rel_at`` over the integer map offsets nearest to ``(dy/r, dx/r)`` (per pair).

    Shows that *no* alignment makes a map exactly equivariant to a shift its stride does not divide.
    """
    cand_y = sorted({dy // stride, -((-dy) // stride)})
    cand_x = sorted({dx // stride, -((-dx) // stride)})
    errs = [aligned_rel_at(f_x, f_t, my, mx, mode) for my in cand_y for mx in cand_x]
    return torch.stack(errs).amin(0)


def prediction_agreement(logits_x: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class is unchanged between the pair, else 0.0 (float64)."""
    return (logits_x.argmax(-1) == logits_t.argmax(-1)).to(torch.float64)
