"""reporting/format.py: numbers as results.md prints them, and the ± of a 95 % interval."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from shiftprobe.reporting.format import (
    Z95,
    finite,
    fmt,
    fmt_pm,
    halfwidth,
    num,
    run_ci,
    score_text,
    se_pm,
    table,
    val,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "n/a"),
        (float("nan"), "n/a"),
        (0.0, "0"),
        (3e-7, "3e-7"),
        (2.5e-6, "2.5e-6"),
        (0.98912, "0.989"),
        (41.234, "41.2"),
        (7, "7"),
        (-0.0421, "-0.0421"),
        (123456.0, "1.23e5"),
    ],
)
def test_fmt(value, text):
    assert fmt(value) == text


def test_finite_and_num():
    assert finite(True) is None and finite("x") is None and finite(float("inf")) is None and finite("0.5") == 0.5
    assert num(0.5) == "0.5" and num(-45.0) == "-45" and num("vertical") == "vertical"


def test_z95_is_the_normal_quantile():
    """One z for every 95 % interval (the engine's score intervals, results.md's ±, the sweep's within-run)."""
    assert Z95 == pytest.approx(NormalDist().inv_cdf(0.975), abs=1e-15)
    assert Z95 == pytest.approx(1.959963984540054, abs=1e-12)


def test_halfwidth_prefers_the_interval_then_the_standard_error():
    block = {"fc1": {"invariance_score": 0.5, "invariance_score_ci": [0.4, 0.7], "rel": 0.3, "rel_se": 0.01}}
    assert halfwidth(block, "fc1", "invariance_score") == pytest.approx(0.15)
    assert halfwidth(block, "fc1", "rel") == pytest.approx(Z95 * 0.01)
    assert halfwidth(block, "fc1", "cos") is None
    assert halfwidth({"fc1": {"rel_ci": [None, 1.0]}}, "fc1", "rel") is None
    assert halfwidth(None, "fc1", "rel") is None
    assert fmt_pm(0.436, 0.00331) == "0.436 ± 0.0033"
    assert fmt_pm(1.0, 6e-10) == "1" and fmt_pm(0.5, None) == "0.5"  # round-off: no ±
    assert fmt_pm(0.958, 0.0024, pct=True) == "95.8% ± 0.2%"
    assert val(block, "fc1", "invariance_score") == "0.5 ± 0.15" and val(block, "fc1", "cos") == "n/a"


def test_score_text_and_se_pm():
    block = {"fc1": {"invariance_score": 0.62, "invariance_score_ci": [0.6, 0.64], "rel": 0.3, "rel_se": 0.004}}
    assert score_text(block, "fc1", "invariance_score") == "0.62 [0.6, 0.64]"
    assert score_text(block, "fc1", "rel") == f"0.3 ± {fmt(Z95 * 0.004, 2)}"
    assert score_text(block, "fc1", "cos") == "n/a"
    assert se_pm(0.97, 0.017) == f"0.97 ± {fmt(Z95 * 0.017, 2)}" and se_pm(0.97, None) == "0.97"
    assert se_pm(math.nan, 0.1) == "n/a"


def test_table():
    assert table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_a_proportions_run_interval_ends_at_0_and_1_and_a_scores_does_not():
    """8 images, 1 right: 0.125 ± 1.96 · 0.117 would start at -0.104, an accuracy no run can have."""
    p, n = 0.125, 8
    se = (p * (1 - p) / n) ** 0.5
    lo, hi = run_ci({"accuracy": p, "accuracy_se": se}, "accuracy")
    assert lo == 0.0 and hi == pytest.approx(p + 1.959964 * se, rel=1e-6)
    assert run_ci({"shifted_acc_ci": [0.9, 1.2]}, "shifted_acc") == (0.9, 1.0)
    lo, _ = run_ci({"invariance_score": -0.2, "invariance_score_se": 0.1}, "invariance_score")
    assert lo == pytest.approx(-0.2 - 1.959964 * 0.1, rel=1e-6)  # a score below 0 is a figure, not an error
