"""reporting/figures.py: every figure renders to a valid, non-empty PNG for the grid, axis and random
patterns; the example-pairs figure draws the examples stored in the results (never running a network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from results_factory import make_fake_results, shift, translation

import shiftprobe
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.results import to_jsonable
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


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize("pattern", ["grid", "axis", "random"])
def test_heatmaps_and_radial_png(tmp_path, pattern):
    # the untrained panels once (they do not depend on the pattern): rendering is what costs here
    res = make_fake_results(max_shift=2, pattern=pattern, untrained=pattern == "grid")
    assert isinstance(plot_sensitivity_heatmaps(res, path=tmp_path / "h.png", dpi=60), Figure)
    _assert_png(tmp_path / "h.png")
    assert isinstance(plot_radial_profiles(res, path=tmp_path / "r.png", dpi=60), Figure)
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
    axis = list(range(-2, 3))
    grid = sensitivity_grid(translation(make_fake_results(max_shift=2, pattern="random", n_random=5)), "fc1",
                            "invariance_score", axis, axis)
    assert grid.shape == (5, 5) and int(np.isfinite(grid).sum()) == 5
    t = translation(make_fake_results(max_shift=2))
    odd = sensitivity_grid(t, "conv2", "aligned_rel", axis, axis)
    assert np.isnan(odd[axis.index(1), axis.index(0)]) and np.isfinite(odd[axis.index(2), axis.index(0)])
    # dy indexes rows (downwards), dx columns (rightwards)
    g = sensitivity_grid(t, "fc1", "invariance_score", axis, axis)
    assert g[0, 3] == pytest.approx(shift(t, -2, 1)["fc1"]["invariance_score"])


@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_example_pairs_as_results_json_stores_them(tmp_path, mode):
    """The engine computes the examples during the measurement; results.json holds them as nested lists
    (NaN as null), and the figure is drawn from them alone."""
    torch.manual_seed(0)
    net = LabCNN().train()
    with pytest.warns(UserWarning, match="train mode"):
        res = shiftprobe.measure(net, _images(), layers=["conv1", "conv2"],
                                 transform=shiftprobe.Translation(max_shift=2, mode=mode))
    assert net.training  # mode restored
    examples = res.families["translation"]["examples"]
    assert examples["layer"] == "conv2" and examples["stride"] == [2, 2] and len(examples["pairs"]) == 4
    stored = json.loads(json.dumps(to_jsonable(examples)))
    for pair in stored["pairs"]:
        f_x, f_t = np.asarray(pair["f_x"]), np.asarray(pair["f_t"])
        assert f_x.shape == f_t.shape == (3, 8, 8)
        if pair["shift"] == [1, 1]:
            assert pair["aligned_diff"] is None  # stride 2 does not divide an odd shift
        else:  # (2, 2): map offset (1, 1); f(Tx)'s first row and column have no certified counterpart in crop mode
            diff = np.asarray(pair["aligned_diff"], dtype=float)
            inner = diff[:, 1:, 1:]
            assert np.isfinite(inner).all() and np.abs(inner).max() < 1e-5  # exact on the certified region
            if mode == "crop":
                assert np.isnan(diff[:, 0]).all() and np.isnan(diff[:, :, 0]).all()
    fig = plot_example_pairs(stored, path=tmp_path / "e.png", dpi=60)
    _assert_png(tmp_path / "e.png")
    assert any("no exact" in t and "does not divide" in t for t in _texts(fig))
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel().startswith("max|Δ|")]
    assert labels and all(label == "max|Δ| 0" or "e-" in label for label in labels)
    # an exact match draws a blank panel: it says "0 everywhere" (issue 19 item 11), only there
    zero = sum(label == "max|Δ| 0" for label in labels)
    assert sum(t == "0 everywhere" for t in _texts(fig)) == zero


def _example(channels: int, zero: bool) -> dict:
    rng = np.random.default_rng(0)
    f_x = rng.normal(size=(1, 4, 4))
    diff = np.zeros((1, 4, 4)) if zero else rng.normal(size=(1, 4, 4)) * 1e-3
    diff[0, 0] = np.nan
    pixels = rng.uniform(size=(6, 6, channels)) if channels == 3 else rng.uniform(size=(6, 6))
    pair = {"image": 0, "shift": [2, 0], "x": pixels.tolist(), "tx": pixels.tolist(), "f_x": f_x.tolist(),
            "f_t": f_x.tolist(), "aligned_diff": [[[None if np.isnan(v) else v for v in row] for row in ch] for ch in diff]}
    return {"layer": "conv", "mode": "crop", "stride": [2, 2], "circular": False, "channels": [5], "pairs": [pair]}


def test_example_panel_says_zero_everywhere_only_when_it_is():
    assert "0 everywhere" in _texts(plot_example_pairs(_example(1, zero=True)))
    assert "0 everywhere" not in _texts(plot_example_pairs(_example(1, zero=False)))


def test_colour_examples_are_drawn_in_colour():
    ex = _example(3, zero=False)
    fig = plot_example_pairs(ex)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (6, 6, 3)  # RGB, not a grey colour map of one channel
    assert np.allclose(np.asarray(image), np.asarray(ex["pairs"][0]["x"]))


def test_save_all_figures(tmp_path, monkeypatch):
    res = make_fake_results(max_shift=1, untrained=False)  # small: rendering is what costs here
    translation(res)["examples"] = _example(1, zero=True)
    figs = save_all_figures(res, tmp_path / "figs", dpi=60)
    assert set(figs) == {"heatmaps", "radial", "examples"}
    for name in figs:
        _assert_png(tmp_path / "figs" / f"{name}.png")
    # without examples: no examples.png (the other two, drawn above, are stubbed: drawing is what costs)
    del translation(res)["examples"]
    for name in ("plot_sensitivity_heatmaps", "plot_radial_profiles"):
        monkeypatch.setattr(figures, name, lambda results, path=None, dpi=None: Figure())
    assert set(save_all_figures(res, tmp_path / "nofig", dpi=60)) == {"heatmaps", "radial"}
    assert not (tmp_path / "nofig" / "examples.png").exists()


class _Constant(torch.nn.Module):
    """The same output for every image: unrelated images do not differ, so every invariance score is n/a."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 2)

    def forward(self, x):
        return self.head(torch.zeros(len(x), 1))


def test_heatmaps_of_a_score_that_is_na_everywhere():
    """Measured but undefined (a constant network): the panel says n/a, not "not measured", and the title
    does not blame an older results.json for the missing intervals."""
    res = shiftprobe.measure(_Constant().eval(), torch.rand(4, 12, 12), layers=["head"],
                             transform=shiftprobe.Translation(max_shift=1), progress=False)
    fig = plot_sensitivity_heatmaps(res)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["invariance_score\nn/a\nfor head"]
    assert "older results.json" not in fig._suptitle.get_text()


def test_radial_panel_of_a_score_that_is_na_everywhere(recwarn):
    """The invariance panel of a constant network says n/a, and no legend warning reaches the user."""
    res = shiftprobe.measure(_Constant().eval(), torch.rand(4, 12, 12), layers=["head"],
                             transform=shiftprobe.Translation(max_shift=1), progress=False)
    fig = plot_radial_profiles(res)
    assert [t.get_text() for t in fig.axes[0].texts] == ["n/a at every radius"]
    assert not [w for w in recwarn if "legend" in str(w.message)]
