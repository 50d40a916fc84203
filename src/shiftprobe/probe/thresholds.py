"""The numbers behind the verdicts: when a figure is "exact" (a relative error below exact_tolerance(dtype)
of the precision measured in is round-off, e3nn's practice) and how a score is worded."""

from __future__ import annotations

import torch

#: relative error that is still float round-off, by the dtype the network ran in
EXACT_TOL_BY_DTYPE = {
    torch.float64: 1e-9,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}
#: the float32 tolerance, the default for results that do not state their precision
EXACT_TOL = EXACT_TOL_BY_DTYPE[torch.float32]
#: a layer whose invariance score stays at or above this at every radius is "nearly invariant"
NEAR_INVARIANT = 0.9
#: ... at or above this (but below NEAR_INVARIANT) it is "partly invariant"; below, "not invariant"
PARTLY_INVARIANT = 0.5
#: trained and untrained scores closer than this are "about the same"
SAME_SCORE = 0.05


def exact_tolerance(dtype: torch.dtype | str) -> float:
    """The largest relative error counted as exact for a network run in ``dtype``."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return EXACT_TOL_BY_DTYPE.get(dtype, EXACT_TOL)
#: a classifier whose predicted-class entropy (unshifted images) is below this fraction of log2(K) ...
NEAR_CONSTANT_ENTROPY_FRACTION = 0.5
#: ... or (with 3 classes or more) whose most frequent class takes more than this share of the images is "near-constant"
#: (its consistency under shifts says little: a constant classifier is perfectly consistent)
NEAR_CONSTANT_TOP_SHARE = 0.5
