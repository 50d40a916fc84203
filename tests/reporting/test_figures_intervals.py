"""Figures show the exact test and the intervals: heatmaps.png leads with the exact-test checkerboard of
the spatial layers, radial.png draws 95 % bands where the results carry intervals and says so where
they do not (issue 13 item 5, issue 11 "Reports"). Figures are built, not saved, to stay fast."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from results_factory import make_fake_results, translation
from results_with_intervals import SCORE_HW, with_new_keys

from shiftprobe.reporting.figures import (
    exact_test_grid,
    plot_radial_profiles,
    plot_sensitivity_heatmaps,
    radial_band,
)

AXIS = list(range(-2, 3))


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]


def _bands(fig) -> int:
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def test_exact_test_grid_is_the_checkerboard():
    t = translation(with_new_keys(make_fake_results(max_shift=2, conv2_aligned=0.0)))
    values, nearest = exact_test_grid(t, "conv2", AXIS, AXIS)
    even = np.array([[dy % 2 == 0 and dx % 2 == 0 for dx in AXIS] for dy in AXIS])
    assert (nearest == ~even).all()  # best alignment exactly where stride 2 does not divide
    assert (values[even] == 0).all() and np.allclose(values[~even], 0.3)
    values, nearest = exact_test_grid(t, "conv1", AXIS, AXIS)
    assert not nearest.any() and np.isfinite(values).all()


def test_heatmaps_lead_with_the_exact_test_rows():
    fig = plot_sensitivity_heatmaps(with_new_keys())
    titles = _titles(fig)
    exact = [t for t in titles if "exact test" in t]
    assert len(exact) == 4  # conv1, conv2 x (trained, untrained)
    assert len(titles) == 4 + 8  # and the key score of every layer x (trained, untrained)
    assert titles.index(exact[0]) < titles.index(next(t for t in titles if "fc1" in t))
    assert any("checkerboard" in t.get_text() for ax in fig.axes for t in ax.texts)
    # every score panel states its widest interval
    scores = [t for t in titles if "exact test" not in t]
    assert all(f"± ≤ {SCORE_HW}" in t for t in scores)


def test_heatmaps_without_exact_rows_or_intervals():
    res = make_fake_results(max_shift=2)
    assert len(_titles(plot_sensitivity_heatmaps(res, exact_test=False))) == 8
    fig = plot_sensitivity_heatmaps(res, metric_by_layer={"conv2": "aligned_rel"})
    assert not any("exact test," in t for t in _titles(fig))  # a chosen metric: just that metric
    fig = plot_sensitivity_heatmaps(res)
    assert len([t for t in _titles(fig) if "exact test" in t]) == 4  # aligned_rel alone suffices
    assert "no intervals" in fig.get_suptitle()


def test_radial_band_prefers_the_interval():
    t = translation(with_new_keys())
    r, lo, hi = radial_band(t, "fc1", "invariance_score")
    values = [row["fc1"]["invariance_score"] for row in t["groups"]["radius"]]
    assert np.allclose(hi - lo, 2 * SCORE_HW) and np.allclose((lo + hi) / 2, values)
    assert radial_band(translation(make_fake_results(max_shift=2)), "fc1", "invariance_score") is None


def test_radial_bands_drawn_when_intervals_exist():
    fig = plot_radial_profiles(with_new_keys())
    # per network: conv1, conv2 (whole map, certified), fc1 (score, rel), logits (score, 3 below)
    assert _bands(fig) == 2 * (2 + 2 + 2 + 4)
    assert "widest ±0.02" in fig.get_suptitle()
    titles = _titles(fig)
    assert titles[:2] == ["conv1: exact test (log)", "conv2: exact test (log)"]
    assert any("sorting hint" in t for t in titles)


@pytest.mark.parametrize("untrained", [True, False])
def test_radial_without_intervals_says_so(untrained):
    fig = plot_radial_profiles(make_fake_results(max_shift=2, untrained=untrained))
    assert _bands(fig) == 0
    assert "no intervals" in fig.get_suptitle()
