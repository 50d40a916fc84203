"""Uncertainty over test images from the accumulator's sums (docs/measurement.md, "Uncertainty"): the standard
error of a mean over images, ``sd(m, ddof=1) / sqrt(n)``, and a 95 % delta-method interval for a score
``1 - mean(a) / mean(c)`` with the pair-control covariance (a group may hold a subset of the images: ``n_a <= n_c``)."""

from __future__ import annotations

import math
from statistics import NormalDist

#: the z of a two-sided 95 % normal interval (1.95996...), the one constant the engine and the reports use
Z95 = NormalDist().inv_cdf(0.975)


def _sample_var(n: float, total: float, total_sq: float) -> float:
    return max(0.0, (total_sq - total * total / n) / (n - 1))


def mean_se(n: float, total: float, total_sq: float) -> float | None:
    """Standard error of the mean of ``n`` values from their sum and sum of squares (None if n < 2)."""
    n = float(n)
    if n < 2:
        return None
    return math.sqrt(_sample_var(n, float(total), float(total_sq)) / n)


def ratio_se(
    n_a: float, sum_a: float, sumsq_a: float, sum_ac: float, sum_c_a: float, n_c: float, sum_c: float, sumsq_c: float
) -> tuple[float, float] | None:
    """``(R, se(R))`` for ``R = mean(a) / mean(c)`` by the delta method, from the sums of ``a``, ``a^2``,
    ``a c`` and ``c`` over the ``n_a`` images of ``a`` and of ``c``, ``c^2`` over all ``n_c >= n_a`` images;
    None when ``n_a < 2`` or ``mean(c) == 0``."""
    n_a, n_c = float(n_a), float(n_c)
    if n_a < 2 or n_c < 2:
        return None
    a_bar, c_bar = float(sum_a) / n_a, float(sum_c) / n_c
    if c_bar == 0:
        return None
    r = a_bar / c_bar
    var_a = _sample_var(n_a, float(sum_a), float(sumsq_a))
    var_c = _sample_var(n_c, float(sum_c), float(sumsq_c))
    cov_ac = (float(sum_ac) - float(sum_a) * float(sum_c_a) / n_a) / (n_a - 1)
    var_r = (var_a / n_a - 2 * r * cov_ac / n_c + r * r * var_c / n_c) / (c_bar * c_bar)
    return r, math.sqrt(max(0.0, var_r))


def score_interval(score: float | None, r_se: tuple[float, float] | None) -> list[float] | None:
    """The 95 % interval ``[lo, hi]`` of ``score = 1 - R`` given ``(R, se(R))``; None if either is unknown."""
    if score is None or r_se is None:
        return None
    return [score - Z95 * r_se[1], score + Z95 * r_se[1]]
