"""Per-pair metrics of ``f(x)`` and ``f(T x)``: pure tensor functions, one value per pair (docs/measurement.md,
"Metrics": ``cos``, ``dist``, ``rel``, ``sorted_rel``, ``aligned_rel`` on the certified positions,
``nearest_aligned_rel``, ``sorted_rel_certified``). The accumulator sums them in float64 where the device has it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from shiftprobe.probe.geometry import LayerGeometry, certified_slices

EPS = 1e-30
#: elements ``sort_rows`` sorts at once (64 MiB of float32; torch.sort's values and indices: 192 MiB more)
SORT_BLOCK = 2**24
_sort_pool: ThreadPoolExecutor | None = None


def sum_dtype(device: torch.device | str) -> torch.dtype:
    """float64, except on devices that lack it (Apple MPS): float32 there."""
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type  # hot path: no new device
    return torch.float32 if kind == "mps" else torch.float64


def working(t: torch.Tensor) -> torch.Tensor:
    """Half-precision features are compared in float32 (norms of bf16 values lose too much)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def norm(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim, computed in the input precision (a float64 copy of the input would
    cost more than the metric), returned in the sum dtype."""
    return torch.linalg.vector_norm(t, dim=-1).to(sum_dtype(t.device))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last dim with broadcasting; a batched matmul when ``a`` is ``B x 1 x D``."""
    if a.dim() == 3 and b.dim() == 3 and a.shape[1] == 1 and b.shape[0] == a.shape[0]:
        return torch.bmm(b, a.transpose(1, 2)).squeeze(-1).to(sum_dtype(a.device))
    return (a * b).sum(-1).to(sum_dtype(a.device))


def pair_metrics(f_x: torch.Tensor, f_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cos``, ``dist``, ``rel`` per pair of flattened features ``(..., D)`` (``f_x`` broadcasts)."""
    f_x, f_t = working(f_x), working(f_t)
    norm_x = norm(f_x)
    norm_t = norm(f_t)
    dist = norm(f_t - f_x)
    dot = _dot(f_x, f_t)
    cos = dot / (norm_x * norm_t).clamp_min(EPS)
    # cos of identical vectors must be exactly 1; rounding of the dot product can leave 1 - 1e-7
    cos = torch.where(dist == 0, torch.ones_like(cos), cos.clamp(-1.0, 1.0))
    norm_x = norm_x.expand_as(dist)
    return {"cos": cos, "dist": dist, "rel": dist / norm_x.clamp_min(EPS)}


def window_products(source: torch.Tensor, f_x: torch.Tensor, origins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(<f(x), window>, ||window||^2)`` for every window of ``source`` (``B x C x Hs x Ws``) the size of
    ``f_x`` (``B x C x h x w``) at ``origins`` (``S x 2``, each ``(y0, x0)``), as ``B x S`` in the sum dtype:
    box sums of the squared map's integral image, one FFT cross-correlation with ``f(x)``: no window made."""
    dtype = sum_dtype(source.device)
    src, fx = working(source).to(dtype), working(f_x).to(dtype)
    size = src.shape[-2:]
    h, w = fx.shape[-2:]
    integral = torch.nn.functional.pad(src.square().sum(1).cumsum(1).cumsum(2), (1, 0, 1, 0))
    y, x = origins[:, 0].to(source.device), origins[:, 1].to(source.device)
    norm2 = integral[:, y + h, x + w] - integral[:, y, x + w] - integral[:, y + h, x] + integral[:, y, x]
    # convolving with the flipped f(x) correlates (no conjugate to resolve): the window at (y0, x0) lands
    # at (y0 + h - 1, x0 + w - 1), inside the map, so the FFT's wrap-around never reaches it
    spectrum = (torch.fft.rfft2(src, s=size) * torch.fft.rfft2(fx.flip(-2, -1), s=size)).sum(1)
    conv = torch.fft.irfft2(spectrum, s=size)
    return conv[:, y + h - 1, x + w - 1], norm2


def window_pair_metrics(norm2_x: torch.Tensor, dot: torch.Tensor, norm2_t: torch.Tensor, same: torch.Tensor) -> dict:
    """``pair_metrics`` of ``f(x)`` (squared norms ``B``) and windows (``dot``, squared norms ``B x S``, from
    ``window_products``; ``||t - x||^2 = ||t||^2 + ||x||^2 - 2 <t, x>`` clamped at 0); ``same`` (``S`` bool)
    marks windows that are ``f(x)`` itself (distance 0)."""
    norm_x = norm2_x.sqrt().unsqueeze(1)
    dist = (norm2_t + norm2_x.unsqueeze(1) - 2 * dot).clamp_min(0).sqrt()
    dist = torch.where(same, torch.zeros((), dtype=dist.dtype, device=dist.device), dist)
    cos = dot / (norm_x * norm2_t.sqrt()).clamp_min(EPS)
    cos = torch.where(dist == 0, torch.ones_like(cos), cos.clamp(-1.0, 1.0))
    return {"cos": cos, "dist": dist, "rel": dist / norm_x.clamp_min(EPS).expand_as(dist)}


def sort_channels(f: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Sort each channel's h*w values: ``(..., C, h, w) -> (..., C, h*w)``, ascending; on the CPU by NumPy's
    vectorised sort (faster than ``torch.sort``) on row blocks in a thread pool. With ``inplace`` a contiguous
    ``f`` is sorted in its own memory (the caller no longer needs its spatial layout)."""
    f = working(f)
    flat = f.reshape(*f.shape[:-2], f.shape[-2] * f.shape[-1])
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64):
        return sort_rows(flat, inplace)
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


def sort_rows(flat: torch.Tensor, inplace: bool = False, block: int = SORT_BLOCK) -> torch.Tensor:
    """``torch.sort(flat, dim=-1).values`` taken ``block`` elements at a time, so that its values and int64
    indices (3 times a float32 block) stay a small, fixed addition to the memory budget's count on a GPU;
    with ``inplace`` a contiguous ``flat`` receives its sorted rows."""
    rows = flat.reshape(-1, flat.shape[-1])
    step = max(1, block // max(1, rows.shape[1]))
    if len(rows) <= step:
        return torch.sort(flat, dim=-1).values
    out = rows if inplace and flat.is_contiguous() else torch.empty_like(rows)
    for i in range(0, len(rows), step):
        out[i : i + step] = torch.sort(rows[i : i + step], dim=-1).values
    return out.view(flat.shape)


def sorted_rel(sorted_x: torch.Tensor, sorted_t: torch.Tensor, consume: bool = False) -> torch.Tensor:
    """``||sort(f(Tx)) - sort(f(x))|| / ||sort(f(x))||`` from per-channel sorted maps ``(..., C, hw)``
    (``consume``: ``sorted_t`` is the caller's temporary, the difference is formed in its memory)."""
    sx = sorted_x.flatten(-2)
    st = sorted_t.flatten(-2)
    diff = st.sub_(sx) if consume and st.shape == torch.broadcast_shapes(st.shape, sx.shape) else st - sx
    return norm(diff) / norm(sx).clamp_min(EPS).expand(st.shape[:-1])


def aligned_offset(dy: int, dx: int, stride: tuple[int, int]) -> tuple[int, int] | None:
    """The map offset ``(dy/r, dx/r)`` a shift should cause, or None if the stride does not divide it."""
    ry, rx = stride
    if dy % ry or dx % rx:
        return None
    return dy // ry, dx // rx


def aligned_rel_at(
    f_x: torch.Tensor, f_t: torch.Tensor, my: int, mx: int, geo: LayerGeometry, mode: str, norms: dict | None = None
) -> torch.Tensor:
    """``aligned_rel`` for a given map offset, per pair (maps ``(..., C, h, w)`` of equal shape);
    NaN where there is no certified position. ``norms``: a cache of ``||f(x)[Q - m]||`` by offset, for
    calls that share ``f_x`` (e.g. a batch's shifts against one ``f(x)`` broadcast over them)."""
    f_x, f_t = working(f_x), working(f_t)
    if mode == "roll" and geo.circular:
        expected = torch.roll(f_x, shifts=(my, mx), dims=(-2, -1))
        actual = f_t
    else:
        slices = certified_slices(geo.interior, my, mx)
        if slices is None:
            return torch.full(f_t.shape[:-3], float("nan"), dtype=sum_dtype(f_t.device), device=f_t.device)
        (a0, a1), (b0, b1) = slices
        actual = f_t[..., a0, a1]
        expected = f_x[..., b0, b1]
    num = norm((actual - expected).flatten(-3))
    if norms is None:
        return num / norm(expected.flatten(-3)).clamp_min(EPS)
    if (my, mx) not in norms:
        norms[my, mx] = norm(expected.flatten(-3)).clamp_min(EPS)
    return num / norms[my, mx]


def sorted_rel_certified_at(
    f_x: torch.Tensor, f_t: torch.Tensor, my: int, mx: int, geo: LayerGeometry, mode: str
) -> torch.Tensor:
    """``sorted_rel_certified`` for a given map offset, per pair (maps ``(..., C, h, w)`` of equal shape);
    NaN where there is no certified position."""
    f_x, f_t = working(f_x), working(f_t)
    if mode == "roll" and geo.circular:
        actual, expected = f_t, f_x  # the whole map (a roll does not change the sorted values)
    else:
        slices = certified_slices(geo.interior, my, mx)
        if slices is None:
            return torch.full(f_t.shape[:-3], float("nan"), dtype=sum_dtype(f_t.device), device=f_t.device)
        (a0, a1), (b0, b1) = slices
        actual, expected = f_t[..., a0, a1], f_x[..., b0, b1]
    # a window is not contiguous: its contiguous copy may be sorted in place
    sorted_t = sort_channels(actual.contiguous(), inplace=not actual.is_contiguous())
    sorted_x = sort_channels(expected.contiguous(), inplace=not expected.is_contiguous())
    return sorted_rel(sorted_x, sorted_t)


def nearest_offsets(dy: int, dx: int, stride: tuple[int, int]) -> list[tuple[int, int]]:
    ry, rx = stride
    cand_y = sorted({dy // ry, -((-dy) // ry)})
    cand_x = sorted({dx // rx, -((-dx) // rx)})
    return [(my, mx) for my in cand_y for mx in cand_x]


def aligned_values(
    f_x: torch.Tensor, f_t: torch.Tensor, dy: int, dx: int, geo: LayerGeometry, mode: str, norms: dict | None = None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(aligned_rel or None, nearest_aligned_rel)`` per pair for one shift; NaN = no overlap.
    ``norms``: see ``aligned_rel_at``."""
    offset = aligned_offset(dy, dx, geo.stride)
    if offset is not None:
        value = aligned_rel_at(f_x, f_t, *offset, geo, mode, norms)
        return value, value
    errs = torch.stack(
        [aligned_rel_at(f_x, f_t, my, mx, geo, mode, norms) for my, mx in nearest_offsets(dy, dx, geo.stride)]
    )
    # the best defined alignment; NaN only when no candidate has a certified position
    return None, torch.where(torch.isnan(errs), torch.inf, errs).amin(0).nan_to_num(nan=float("nan"), posinf=float("nan"))


def prediction_agreement(logits_x: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class is unchanged between the pair, else 0.0."""
    return (logits_x.argmax(-1) == logits_t.argmax(-1)).to(sum_dtype(logits_x.device))
