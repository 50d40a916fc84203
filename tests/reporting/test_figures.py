"""reporting/figures.py: every figure renders to a valid, non-empty PNG for the grid, axis and random
patterns; the example-pairs figure draws what ``shiftprobe.probe.examples.example_pairs`` computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from results_factory import make_fake_results

from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.examples import example_pairs
from shiftprobe.reporting import figures
from shiftprobe.reporting.figures import (
    plot_example_pairs,
    plot_radial_profiles,
    plot_sensitivity_heatmaps,
    save_all_figures,
    sensitivity_grid,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 9:19] = torch.rand(n, 1, 12, 10, generator=g)
    return x


@pytest.mark.parametrize("pattern", ["grid", "axis", "random"])
def test_heatmaps_and_radial_png(tmp_path, pattern):
    # the untrained panels once (they do not depend on the pattern): rendering is what costs here
    res = make_fake_results(max_shift=2, pattern=pattern, untrained=pattern == "grid")
    fig = plot_sensitivity_heatmaps(res, path=tmp_path / "h.png", dpi=60)
    assert isinstance(fig, Figure)
    _assert_png(tmp_path / "h.png")
    fig = plot_radial_profiles(res, path=tmp_path / "r.png", dpi=60)
    assert isinstance(fig, Figure)
    _assert_png(tmp_path / "r.png")


def test_heatmap_layout_and_chosen_metric(tmp_path):
    res = make_fake_results(max_shift=2)
    fig = plot_sensitivity_heatmaps(res, metric_by_layer={"conv2": "aligned_rel"})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 8  # 4 layers x (trained, untrained)
    assert any("conv2" in t and "aligned_rel" in t for t in titles)
    assert any("fc1" in t and "invariance score" in t for t in titles)
    # one metric for all layers, including layers where it does not exist
    plot_sensitivity_heatmaps(res, metric_by_layer="aligned_rel", path=tmp_path / "a.png")
    _assert_png(tmp_path / "a.png")


def test_sensitivity_grid_blank_cells():
    res = make_fake_results(max_shift=2, pattern="random", n_random=5)
    axis = list(range(-2, 3))
    grid = sensitivity_grid(res, "fc1", "invariance_score", axis, axis)
    assert grid.shape == (5, 5)
    assert int(np.isfinite(grid).sum()) == 5
    odd = sensitivity_grid(make_fake_results(max_shift=2), "conv2", "aligned_rel", axis, axis)
    assert np.isnan(odd[axis.index(1), axis.index(0)]) and np.isfinite(odd[axis.index(2), axis.index(0)])
    # dy indexes rows (downwards), dx columns (rightwards)
    res = make_fake_results(max_shift=2)
    entry = next(s for s in res["shifts"] if (s["dy"], s["dx"]) == (-2, 1))
    g = sensitivity_grid(res, "fc1", "invariance_score", axis, axis)
    assert g[0, 3] == pytest.approx(entry["fc1"]["invariance_score"])


@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_example_pairs_with_random_net(tmp_path, mode):
    torch.manual_seed(0)
    net = LabCNN().train()
    examples = example_pairs(net, _images(), [(1, 1), (2, 0)], "conv2", mode=mode, n_channels=2)
    assert net.training  # mode restored
    assert examples["layer"] == "conv2" and examples["stride"] == (2, 2) and len(examples["pairs"]) == 4
    assert len(examples["channels"]) == 2
    for pair in examples["pairs"]:
        assert pair["f_x"].shape == pair["f_t"].shape == (2, 8, 8)
        if pair["shift"] == (1, 1):
            assert pair["aligned_diff"] is None  # stride 2 does not divide an odd shift
        else:  # (2, 0): map offset (1, 0); the first row of f(Tx) has no certified counterpart
            diff = pair["aligned_diff"]
            assert torch.isnan(diff[:, 0]).all() and torch.isfinite(diff[:, 1:]).all()
            # valid convs + stride-2 max pool: exact at even shifts on the certified region, crop and roll
            assert diff[:, 1:].abs().max() < 1e-5
    fig = plot_example_pairs(examples, path=tmp_path / "e.png", dpi=60)
    assert isinstance(fig, Figure)
    _assert_png(tmp_path / "e.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no exact" in t and "does not divide" in t for t in texts)
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel().startswith("max|Δ|")]
    assert labels  # even shifts get an aligned difference
    assert all(label == "max|Δ| 0" or "e-" in label for label in labels)


def test_save_all_figures(tmp_path, monkeypatch):
    res = make_fake_results(max_shift=1, untrained=False)  # small: rendering is what costs here
    torch.manual_seed(0)
    examples = example_pairs(LabCNN(), _images(1), [(1, 1), (2, 2)], "conv2", n_channels=1)
    figs = save_all_figures(res, tmp_path / "figs", examples=examples, dpi=60)
    assert set(figs) == {"heatmaps", "radial", "examples"}
    for name in figs:
        _assert_png(tmp_path / "figs" / f"{name}.png")
    # without examples: no examples.png (the other two, drawn above, are stubbed: drawing is what costs)
    for name in ("plot_sensitivity_heatmaps", "plot_radial_profiles"):
        monkeypatch.setattr(figures, name, lambda results, path=None, dpi=None: Figure())
    figs = save_all_figures(res, tmp_path / "nofig", dpi=60)
    assert set(figs) == {"heatmaps", "radial"}
    assert not (tmp_path / "nofig" / "examples.png").exists()
