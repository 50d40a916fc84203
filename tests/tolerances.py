"""Tolerances that follow the dtype, for the tests' numerical assertions (e3nn's practice).

A float figure computed two ways (another batch composition, another kernel, another CPU, another
summation order) agrees to the precision of the dtype it was computed in, not bit for bit: oneDNN and
the BLAS pick their kernels by shape and CPU, so a layer run on ``B`` images or on ``B S`` images, on a
zero-padded image or on the image itself, may round differently. Tests therefore compare float
results with the tolerance of their dtype, and assert bit-identity (``torch.equal``, ``==``) only where
the code guarantees it by construction: the same kernel on the same input, a copy, a permutation, a
maximum, integer arithmetic, a float64 sum in a fixed order.

``approx(expected, dtype)`` and ``assert_close_dtype(actual, expected, dtype)`` use ``TOLERANCES``:
float32 agrees to 1e-5 relative (``shiftprobe.probe.thresholds.exact_tolerance``: round-off, not a
failure of equivariance), 1e-6 absolute; float64 to 1e-9 relative, 1e-12 absolute. ``unit=True`` is
for quantities whose natural scale is 1 (a cosine, a score, a relative error): the absolute tolerance
is then the relative one (a score of exactly 1 is 1 within 1e-5 in float32).
"""

from __future__ import annotations

import math

import pytest
import torch

#: (relative, absolute) tolerance of a result computed in that dtype
TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


#: figures derived from a variance (standard errors, intervals, spreads over inits), by key suffix
SPREADS = ("_se", "_ci", "_std")
#: their absolute precision at unit scale: a variance from float64 sums of squares, E[x^2] - E[x]^2,
#: keeps about half of float64's digits, so its square root is good to ~sqrt(eps64) = 1.5e-8 (a standard
#: error of 0 may come out as 6e-9 when the per-pair values round differently); float32 is coarser anyway
SPREAD_ATOL = 1e-7


def tol(dtype: torch.dtype = torch.float32, unit: bool = False, scale: float = 1.0) -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` for a result computed in ``dtype`` (``torch.testing.assert_close``'s
    keywords); ``unit``: the quantity's scale is 1 (absolute = relative); ``scale`` multiplies both (a
    quantity that accumulates several roundings, e.g. a difference of two such results)."""
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol * scale, "atol": (rtol if unit else atol) * scale}


def approx(expected, dtype: torch.dtype = torch.float32, unit: bool = False, scale: float = 1.0):
    """``pytest.approx(expected)`` with the tolerance of ``dtype`` (see ``tol``)."""
    t = tol(dtype, unit, scale)
    return pytest.approx(expected, rel=t["rtol"], abs=t["atol"])


def assert_close_dtype(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None,
                       unit: bool = False, scale: float = 1.0, msg=None) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``dtype`` (default: ``actual``'s)."""
    t = tol(dtype or actual.dtype, unit, scale)
    torch.testing.assert_close(actual, expected, rtol=t["rtol"], atol=t["atol"], msg=msg)


def assert_same_figures(a, b, dtype: torch.dtype = torch.float32, skip=("seconds", "seconds_total", "fast_path"),
                        path: str = "", scales: dict | None = None) -> None:
    """Two results dicts (or family sections) hold the same figures, to the tolerance of the dtype the
    networks ran in: ints, strings, booleans and None exactly, NaN where the other is NaN, floats with
    ``approx(..., unit=True)`` (cosines, scores, relative errors, accuracies), figures derived from a
    variance (``SPREADS``) to at least ``SPREAD_ATOL``; a distance (a key with ``dist``) to the layer's
    scale, its control distance (``control[layer]["dist"]`` of the enclosing results): a distance of 0 is
    rounding noise of the size of the maps.
    ``skip``: keys left out (timings, which path ran)."""
    if isinstance(a, dict) and isinstance(a.get("control"), dict):
        scales = {k: v["dist"] for k, v in a["control"].items() if isinstance(v, dict) and "dist" in v}
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) - set(skip) == set(b) - set(skip), (path, set(a) ^ set(b))
        for key in set(a) - set(skip):
            assert_same_figures(a[key], b[key], dtype, skip, f"{path}/{key}", scales)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_figures(u, v, dtype, skip, f"{path}[{i}]", scales)
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert (math.isnan(a) and math.isnan(b)) or b == _figure_approx(a, dtype, path, scales), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _figure_approx(expected: float, dtype: torch.dtype, path: str, scales: dict | None):
    """``approx`` of one figure at ``path`` (``.../<layer>/<metric>``): see ``assert_same_figures``."""
    parts = path.split("/")
    layer, metric = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", parts[-1])
    rtol = TOLERANCES[dtype][0]
    atol = rtol
    if metric.split("[")[0].endswith(SPREADS):
        atol = max(atol, SPREAD_ATOL)
    if "dist" in metric and scales and layer in scales:
        atol *= abs(scales[layer])
    return pytest.approx(expected, rel=rtol, abs=atol)
