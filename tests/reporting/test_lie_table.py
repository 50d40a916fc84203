"""reporting/lie_table.py: the ``lie_derivative`` block of results.json as a table in results.md."""

from __future__ import annotations

import torch
from results_factory import make_fake_results

import shiftprobe
from shiftprobe.reporting.lie_table import lie_derivative_lines
from shiftprobe.reporting.markdown import fmt_pm, results_markdown


def _block(rel_conv1=0.1):
    stats = {"rel": rel_conv1, "rel_se": 0.01, "abs": 0.5, "abs_se": 0.05}
    return {
        "conv1": {"translate_x": stats, "rotate": {"rel": 2.5, "rel_se": None, "abs": 1.0, "abs_se": None}},
        "pool": {"translate_x": None, "rotate": None},
        "fc1": {"translate_x": {"rel": 3e-7, "rel_se": 1e-8, "abs": 1e-7, "abs_se": 1e-9}, "rotate": stats},
        "n_images": 40,
        "norm": "...",
        "units": {"translate_x": "per input pixel", "rotate": "per radian"},
        "method": "bilinear",
        "generators": ["translate_x", "rotate"],
        "layers": ["conv1", "pool", "fc1"],
        "geometry": {
            "conv1": {"kind": "spatial", "measures": "equivariance", "stride": [1, 1], "note": None},
            "pool": {"kind": "spatial", "measures": "equivariance", "stride": None, "note": "translate_x: no stride"},
            "fc1": {"kind": "vector", "measures": "invariance", "stride": None, "note": None},
        },
        "seconds": 1.0,
    }


def _rows(lines):
    return {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines if line.startswith("| ") and not line.startswith("| layer")}


def test_table_cells_units_notes_and_untrained_rows():
    lines = lie_derivative_lines({"lie_derivative": _block(), "untrained": {"lie_derivative": _block(0.7)}})
    text = "\n".join(lines)
    assert lines[1] == "## Lie derivative (infinitesimal transformations)"
    assert "over 40 images (bilinear interpolation)" in text
    header = next(line for line in lines if line.startswith("| layer"))
    assert header == "| layer | network | measures | translate_x (per px) | rotate (per rad) |"
    rows = _rows(lines)
    # rel ± 1.96 se; no ± without a standard error; n/a where the layer has no value
    assert rows["conv1", "trained"] == "| conv1 | trained | equivariance (stride 1x1) | 0.1 ± 0.02 | 2.5 |"
    assert rows["conv1", "untrained"].split("|")[4].strip() == "0.7 ± 0.02"
    assert rows["pool", "trained"].endswith("| n/a | n/a |")
    # a half-width below 1e-6 is round-off: not printed (results.md's convention)
    assert rows["fc1", "trained"] == "| fc1 | trained | invariance | 3e-7 | 0.1 ± 0.02 |"
    assert "- pool: translate_x: no stride" in lines


def test_nothing_without_a_block_and_results_md_appends_it():
    assert lie_derivative_lines({"layers": ["fc1"]}) == []
    res = make_fake_results()
    assert "## Lie derivative" not in results_markdown(res)
    res["lie_derivative"] = _block()
    md = results_markdown(res)
    assert "## Lie derivative" in md and "| conv1 | trained | equivariance (stride 1x1) | 0.1 ± 0.02 | 2.5 |" in md


def test_renders_what_lie_derivative_returns():
    torch.manual_seed(0)
    block = shiftprobe.lie_derivative(shiftprobe.LabCNN(), torch.rand(3, 28, 28), layers=["conv1", "logits"])
    lines = lie_derivative_lines({"lie_derivative": block})
    rows = _rows(lines)
    assert set(rows) == {("conv1", "trained"), ("logits", "trained")}
    header = next(line for line in lines if line.startswith("| layer"))
    assert "translate_y (per px)" in header and "n/a" not in rows["conv1", "trained"]


def test_a_run_without_translation_gets_the_table_too():
    from family_sections import rot90

    text = results_markdown({"families": {"rot90": rot90()}, "lie_derivative": _block()})
    assert "Rotations by 90" in text or "rot90" in text
    assert "Lie derivative" in text and "| conv1 |" in text


# -- the layer-wise decomposition -------------------------------------------------------------------
def _layerwise_results():
    torch.manual_seed(0)
    net = shiftprobe.LabCNN()
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    trained = shiftprobe.lie_derivative(net, x, layers=["conv1", "output"], generators=["translate_x", "scale"],
                                        layerwise=True)
    torch.manual_seed(1)
    untrained = shiftprobe.lie_derivative(shiftprobe.LabCNN(), x, layers=["conv1", "output"],
                                          generators=["translate_x", "scale"], layerwise=True)
    return {"lie_derivative": trained, "untrained": {"lie_derivative": untrained}}


def test_layerwise_table_rows_totals_and_ranking():
    res = _layerwise_results()
    lines = lie_derivative_lines(res)
    text = "\n".join(lines)
    assert "### Layer-wise decomposition (lie_layerwise.png)" in text
    header = [line for line in lines if line.startswith("| module")]
    assert header == ["| module | network | translate_x (per px) | scale (per log-scale) |"]
    rows = _rows(lines)
    for module in ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2"):
        assert (module, "trained") in rows and (module, "untrained") in rows
    # gaps with something in them (F.relu, flatten) are shown, identity gaps (exactly 0) are not
    assert ("pool2 → fc1", "trained") in rows and ("conv1 → pool1", "trained") not in rows
    for label in ("*sum of the modules*", "*sum between modules*", "*end-to-end (the output's)*"):
        assert (label, "trained") in rows and (label, "untrained") in rows
    top = res["lie_derivative"]["layerwise_ranking"]["scale"][:3]
    assert f"- largest for scale (trained): {', '.join(top)}" in lines
    # the cell is the contribution's rel ± 1.96 se
    conv1 = res["lie_derivative"]["layerwise"]["conv1"]["translate_x"]["contribution"]
    assert rows["conv1", "trained"].split("|")[3].strip() == fmt_pm(conv1["rel"], 1.96 * conv1["rel_se"])


def test_no_layerwise_section_without_it():
    lines = lie_derivative_lines({"lie_derivative": _block()})
    assert not any("Layer-wise" in line for line in lines)


def test_the_layerwise_figure_is_written_in_place(tmp_path):
    from shiftprobe.reporting.lie_figure import save_lie_figures

    res = _layerwise_results()
    figures = save_lie_figures(res, tmp_path)
    assert list(figures) == ["lie_layerwise"]
    assert (tmp_path / "lie_layerwise.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lie_layerwise.png"]  # no temporary file left
    axes = figures["lie_layerwise"].axes
    assert len(axes) == 2 and axes[0].get_yscale() == "log"
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels[:6] == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"] and "pool2 → fc1" in labels
    assert save_lie_figures({"lie_derivative": _block()}, tmp_path / "none") == {}
    assert not (tmp_path / "none").exists()
