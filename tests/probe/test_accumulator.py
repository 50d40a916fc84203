"""``PairMetricAccumulator``: per-id sums, masked means' counts, maxima, and the shapes ``sums()`` returns."""

from __future__ import annotations

import torch
from reference import merge_sums

import shiftprobe
from shiftprobe.probe.accumulator import MASKED, PairMetricAccumulator


def _update(acc, ids, values):
    acc.update(shift_ids=torch.tensor(ids).view(1, -1), pair_values=torch.tensor(values, dtype=torch.float64).view(2, 1, -1))


def test_sums_counts_and_maxima_by_id():
    acc = PairMetricAccumulator(3, {"a": (("dist", "aligned_rel"), ())})
    _update(acc, [0, 2, 2], [[1.0, 2.0, 4.0], [0.5, float("nan"), 0.25]])
    raw = acc.sums()
    assert raw["pair_count"].tolist() == [1, 0, 2]
    assert raw["pair", "a", "dist"].tolist() == [1.0, 0.0, 6.0]
    # aligned_rel is masked: NaN is an undefined pair, counted apart and left out of the sum and the maximum
    assert raw["pair", "a", "aligned_rel"].tolist() == [0.5, 0.0, 0.25]
    assert raw["pair", "a", "aligned_rel_count"].tolist() == [1, 0, 1]
    assert raw["pair", "a", "aligned_rel_max"].tolist() == [0.5, 0.0, 0.25]
    both = merge_sums([raw, raw])
    assert both["pair", "a", "dist"].tolist() == [2.0, 0.0, 12.0] and both["pair", "a", "aligned_rel_max"][0] == 0.5


def test_one_parameter_keeps_its_shape():
    """torchmetrics squeezes a one-element result to a scalar; ``sums()`` gives every per-id sum its shape
    back, so a family of one parameter (or the Lie derivative of one generator) is measured (was: an
    IndexError on the 0-dim sums)."""
    acc = PairMetricAccumulator(1, {"a": (("dist", "rel"), ())}, masked=(*MASKED, "rel"))
    _update(acc, [0, 0], [[1.0, 3.0], [2.0, float("nan")]])
    raw = acc.sums()
    assert raw["pair_count"].shape == (1,) and raw["pair", "a", "rel_count"].tolist() == [1.0]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    section = shiftprobe.measure_family(net, torch.rand(4, 8, 8), None, shiftprobe.Flip(axes=("horizontal",)))
    assert [b["param"] for b in section["groups"]["param"]] == ["horizontal"] and section["summary"]["count"] == 4
    lie = shiftprobe.lie_derivative(net, torch.rand(3, 8, 8), layers=["0"], generators=["rotate"])
    assert lie["0"]["rotate"]["rel"] > 0
