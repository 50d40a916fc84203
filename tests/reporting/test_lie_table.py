"""reporting/lie_table.py: the ``lie_derivative`` block of results.json as a table in results.md."""

from __future__ import annotations

import torch
from results_factory import make_fake_results

import shiftprobe
from shiftprobe.reporting.lie_table import lie_derivative_lines
from shiftprobe.reporting.markdown import results_markdown


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
