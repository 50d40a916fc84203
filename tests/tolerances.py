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

import pytest
import torch

#: (relative, absolute) tolerance of a result computed in that dtype
TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


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
