"""reporting/markdown.py, the Lie derivative: its section of results.json as a table in results.md, and
its layer-wise decomposition (table and lie_layerwise.png)."""

from __future__ import annotations

import torch
from family_sections import results as results_of
from family_sections import rot90
from results_factory import make_fake_results

import shiftprobe
from shiftprobe.probe.migrate import lie_section
from shiftprobe.reporting.figures import save_all_figures
from shiftprobe.reporting.format import Z95, fmt_pm
from shiftprobe.reporting.markdown import lie_derivative_lines, results_markdown

GEOMETRY = {
    "conv1": {"kind": "spatial", "measures": "equivariance", "stride": [1, 1], "note": None},
    "pool": {"kind": "spatial", "measures": "equivariance", "stride": None, "note": "translate_x: no stride"},
    "fc1": {"kind": "vector", "measures": "invariance", "stride": None, "note": None},
}


def _section(rel_conv1=0.1, untrained=None) -> dict:
    """A Lie derivative section: a block per generator; pool has no value (n/a), rotate of conv1 no se."""
    stats = {"rel": rel_conv1, "rel_se": 0.01, "abs": 0.5, "abs_se": 0.05}
    blocks = [
        {"param": "translate_x", "count": 40, "conv1": stats, "fc1": {"rel": 3e-7, "rel_se": 1e-8, "abs": 1e-7, "abs_se": 1e-9}},
        {"param": "rotate", "count": 40, "conv1": {"rel": 2.5, "rel_se": None, "abs": 1.0, "abs_se": None}, "fc1": stats},
    ]
    section = {
        "family": "lie_derivative", "kind": "lie_derivative", "parameter": "generator", "dims": 1, "n_images": 40,
        "config": {"generators": ["translate_x", "rotate"], "method": "bilinear", "norm": "...",
                   "units": {"translate_x": "per input pixel", "rotate": "per radian"}},
        "layers": ["conv1", "pool", "fc1"], "classifier": None, "geometry": GEOMETRY,
        "groups": {"param": blocks}, "summary": {"count": 80}, "seconds": 1.0,
        "map_action": {name: {"measures": g["measures"], "note": g["note"]} for name, g in GEOMETRY.items()},
    }
    if untrained is not None:
        section["untrained"] = _section(untrained)
    return section


def _rows(lines):
    return {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in lines if line.startswith("| ") and not line.startswith("| layer")}


def test_table_cells_units_notes_and_untrained_rows():
    lines = lie_derivative_lines(_section(untrained=0.7))
    text = "\n".join(lines)
    assert lines[1] == "## Lie derivative (infinitesimal transformations)"
    assert "over 40 images (bilinear interpolation)" in text
    header = next(line for line in lines if line.startswith("| layer"))
    assert header == "| layer | network | measures | translate_x (per px) | rotate (per rad) |"
    rows = _rows(lines)
    # rel ± Z95 se; no ± without a standard error; n/a where the layer has no value
    assert rows["conv1", "trained"] == "| conv1 | trained | equivariance (stride 1x1) | 0.1 ± 0.02 | 2.5 |"
    assert rows["conv1", "untrained"].split("|")[4].strip() == "0.7 ± 0.02"
    assert rows["pool", "trained"].endswith("| n/a | n/a |")
    # a half-width below 1e-6 is round-off: not printed (results.md's convention)
    assert rows["fc1", "trained"] == "| fc1 | trained | invariance | 3e-7 | 0.1 ± 0.02 |"
    assert "- pool: translate_x: no stride" in lines


def test_nothing_without_a_section_and_results_md_appends_it():
    assert lie_derivative_lines(None) == []
    res = make_fake_results()
    assert "## Lie derivative" not in results_markdown(res)
    res["families"]["lie_derivative"] = _section()
    md = results_markdown(res)
    assert "## Lie derivative" in md and "| conv1 | trained | equivariance (stride 1x1) | 0.1 ± 0.02 | 2.5 |" in md


def test_renders_what_lie_derivative_returns():
    torch.manual_seed(0)
    block = shiftprobe.lie_derivative(shiftprobe.LabCNN(), torch.rand(3, 28, 28), layers=["conv1", "logits"])
    lines = lie_derivative_lines(lie_section(block))
    rows = _rows(lines)
    assert set(rows) == {("conv1", "trained"), ("logits", "trained")}
    header = next(line for line in lines if line.startswith("| layer"))
    assert "translate_y (per px)" in header and "n/a" not in rows["conv1", "trained"]


def test_a_run_without_translation_gets_the_table_too():
    text = results_markdown(results_of(rot90(), _section()))
    assert "Rotations by 90" in text and "Lie derivative" in text and "| conv1 |" in text
    lie_only = results_markdown(results_of(_section()))  # no transform family at all
    assert "Lie derivative" in lie_only and "| fc1 | trained | invariance |" in lie_only


# -- the layer-wise decomposition -------------------------------------------------------------------
def _layerwise_section():
    x = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    kwargs = dict(layers=["conv1", "output"], generators=["translate_x", "scale"], layerwise=True)
    torch.manual_seed(0)
    trained = shiftprobe.lie_derivative(shiftprobe.LabCNN(), x, **kwargs)
    torch.manual_seed(1)
    untrained = shiftprobe.lie_derivative(shiftprobe.LabCNN(), x, **kwargs)
    return {**lie_section(trained), "untrained": lie_section(untrained)}


def test_layerwise_table_rows_totals_ranking_and_figure(tmp_path):
    section = _layerwise_section()
    lines = lie_derivative_lines(section)
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
    top = section["layerwise"]["layerwise_ranking"]["scale"][:3]
    assert f"- largest for scale (trained): {', '.join(top)}" in lines
    # the cell is the contribution's rel ± Z95 se
    conv1 = section["layerwise"]["layerwise"]["conv1"]["translate_x"]["contribution"]
    assert rows["conv1", "trained"].split("|")[3].strip() == fmt_pm(conv1["rel"], Z95 * conv1["rel_se"])
    # the figure, written in place (no temporary file left), one log panel per generator
    figures = save_all_figures(results_of(section), tmp_path, dpi=60)
    assert list(figures) == ["lie_layerwise"] and (tmp_path / "lie_layerwise.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lie_layerwise.png"]
    axes = figures["lie_layerwise"].axes
    assert len(axes) == 2 and axes[0].get_yscale() == "log"
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels[:6] == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"] and "pool2 → fc1" in labels


def test_no_layerwise_section_or_figure_without_it(tmp_path):
    assert not any("Layer-wise" in line for line in lie_derivative_lines(_section()))
    assert save_all_figures(results_of(_section()), tmp_path / "none") == {}
    assert not (tmp_path / "none").exists()


def test_renders_what_measure_writes():
    """A schema-3 section from ``measure`` keeps each layer's ``measures`` and note in ``map_action``."""
    torch.manual_seed(0)
    res = shiftprobe.measure(shiftprobe.LabCNN().eval(), torch.rand(3, 28, 28), layers=["conv1", "pool1", "logits"],
                             transform=[], lie_derivative=["translate_x"], progress=False)
    section = res.families["lie_derivative"]
    rows = _rows(lie_derivative_lines(section))
    assert rows["conv1", "trained"].split("|")[3].strip() == "equivariance (stride 1x1)"
    assert rows["logits", "trained"].split("|")[3].strip() == "invariance"
    for layer, action in section["map_action"].items():
        assert rows[layer, "trained"].split("|")[3].strip().split(" (")[0] == action["measures"]
        assert not action["note"] or f"- {layer}: {action['note']}" in lie_derivative_lines(section)


def test_largest_lists_only_modules_that_contribute():
    """Flatten and the linear head after a global pool add nothing (their input is already invariant): the
    'largest for' line names the modules that contribute, not a module at 0 as third largest."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    res = shiftprobe.measure(net, torch.rand(3, 12, 12), transform=[], lie_derivative=["translate_x"],
                             layerwise=True, progress=False)
    section = res.families["lie_derivative"]
    zero = [m for m, e in section["layerwise"]["layerwise"].items() if e["translate_x"]["contribution"]["rel"] == 0]
    assert zero  # the premise: some module contributes exactly 0
    line = next(x for x in lie_derivative_lines(section) if x.startswith("- largest for translate_x"))
    named = line.split(": ", 1)[1].split(", ")
    assert named and not set(named) & set(zero)
