"""reporting/figures.py, other families: <family>.png from a hand-built section (never running a network)."""

from __future__ import annotations

import family_sections as fs
import numpy as np
import pytest
from family_sections import param_blocks
from matplotlib.collections import PolyCollection

from shiftprobe.reporting.figures import curve_series, family_grid, grid_axes, plot_family, save_all_figures


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("maker", [fs.rot90, fs.rotation, fs.subpixel, fs.flip, fs.subpixel_grid])
def test_every_family_writes_a_png(tmp_path, maker):
    section = maker()
    fig = plot_family(section["family"], section, path=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert fig.get_suptitle()


def test_save_all_figures_names_each_family_file(tmp_path):
    figures = save_all_figures(fs.results(fs.rot90(), fs.rotation()), tmp_path, dpi=60)
    assert sorted(figures) == ["rot90", "rotation"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["rot90.png", "rotation.png"]
    empty = fs.rot90()
    empty["groups"]["param"] = []  # nothing measured: no figure, no folder
    assert save_all_figures(fs.results(empty), tmp_path / "none") == {} and not (tmp_path / "none").exists()


def test_curves_one_line_per_layer_trained_solid_untrained_dashed():
    section = fs.rotation()
    fig = plot_family("rotation", section)
    top = _panels(fig)[0]
    lines = [line for line in top.get_lines() if len(line.get_xdata()) == len(param_blocks(section))]
    assert len(lines) == 2 * len(section["layers"])  # every layer, trained and untrained
    assert sorted(line.get_linestyle() for line in lines) == ["-"] * 4 + ["--"] * 4
    fc1 = next(line for line in lines if line.get_label() == "fc1")
    assert list(fc1.get_xdata()) == sorted(e["param"] for e in param_blocks(section))
    by_angle = {e["param"]: e["fc1"]["invariance_score"] for e in param_blocks(section)}
    assert np.allclose(fc1.get_ydata(), [by_angle[a] for a in fc1.get_xdata()])
    assert any(isinstance(c, PolyCollection) for c in top.collections)  # the interval bands
    # rows: invariance, aligned_rel (conv1), consistency; no sorting row for a family that permutes nothing
    assert [ax.get_title() for ax in _panels(fig)][:2] == ["invariance score", "aligned_rel (log)"]
    only = plot_family("rotation", fs.rotation(untrained=False))
    assert all(line.get_linestyle() != "--" for line in _panels(only)[0].get_lines()
               if len(line.get_xdata()) == len(param_blocks(section)))


def test_subpixel_along_x_and_y_are_two_columns_of_curves():
    section = fs.subpixel()
    series = curve_series(section)
    assert [name for name, _ in series] == ["along x", "along y"]
    assert [x for x, _, _ in series[0][1]] == [k / 8 for k in range(1, 9)]
    fig = plot_family("subpixel", section)
    titles = [ax.get_title() for ax in _panels(fig)]
    assert "invariance score · along x" in titles and "invariance score · along y" in titles


def test_rot90_in_degrees_and_flips_as_categories():
    assert [t for _, t, _ in curve_series(fs.rot90())[0][1]] == ["90°", "180°", "270°"]
    assert [x for x, _, _ in curve_series(fs.flip())[0][1]] == [0.0, 1.0]


def test_grid_family_is_a_heatmap_per_layer():
    section = fs.subpixel_grid()
    oys, oxs = grid_axes(section)
    assert oys == oxs == [-0.5, -0.25, 0.0, 0.25, 0.5]
    grid = family_grid(section, "fc1", "invariance_score", oys, oxs)
    assert np.isnan(grid[2, 2]) and np.isfinite(grid).sum() == 24
    low = next(e for e in param_blocks(section) if e["param"] == [0.5, -0.25])
    assert grid[4, 1] == pytest.approx(low["fc1"]["invariance_score"])
    fig = plot_family("subpixel", section)
    images = [ax for ax in _panels(fig) if ax.get_images()]
    # invariance (trained) per layer, then aligned_rel where measured (conv1 only)
    assert len(images) == len(section["layers"]) + 1
