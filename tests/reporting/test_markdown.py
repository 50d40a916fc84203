"""reporting/markdown.py: JSON round trip, markdown tables, and conclusions generated from the numbers."""

from __future__ import annotations

import copy
import json

import pytest
from results_factory import make_fake_results

from shiftprobe.reporting.markdown import (
    EXACT_TOL,
    conv_exactness,
    fmt,
    load_results,
    results_markdown,
    summary_lines,
    write_results_json,
    write_results_markdown,
)


def _what_this_shows(md: str) -> str:
    return md.split("## What this shows", 1)[1]


def _sentence(md: str, layer: str) -> str:
    lines = [line for line in _what_this_shows(md).splitlines() if line.startswith(f"- **{layer}**")]
    assert len(lines) == 1, lines
    return lines[0]


def test_json_round_trip_with_null_and_nan(tmp_path):
    res = make_fake_results()
    res["accuracy"] = float("nan")
    res["summary"]["fc1"]["rel"] = float("inf")
    odd = next(s for s in res["shifts"] if s["dy"] == 1 and s["dx"] == 0)
    assert odd["conv2"]["aligned_rel"] is None
    path = write_results_json(res, tmp_path / "out" / "results.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "accuracy": null')  # indent 2
    back = load_results(path)
    assert back["accuracy"] is None and back["summary"]["fc1"]["rel"] is None
    odd_back = next(s for s in back["shifts"] if s["dy"] == 1 and s["dx"] == 0)
    assert odd_back["conv2"]["aligned_rel"] is None
    assert odd_back["conv1"]["aligned_rel"] == pytest.approx(3e-7)
    # everything else survives unchanged
    expected = json.loads(json.dumps(res, allow_nan=True).replace("NaN", "null").replace("Infinity", "null"))
    assert back == expected


def test_json_accepts_tensors_and_tuples(tmp_path):
    torch = pytest.importorskip("torch")
    res = {"a": torch.tensor(0.5), "b": (1, 2), "c": torch.tensor([float("nan"), 1.0])}
    back = load_results(write_results_json(res, tmp_path / "r.json"))
    assert back == {"a": 0.5, "b": [1, 2], "c": [None, 1.0]}


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
    ],
)
def test_fmt(value, text):
    assert fmt(value) == text


@pytest.mark.parametrize("pattern", ["grid", "axis", "random"])
def test_markdown_has_every_layer_and_radius(tmp_path, pattern):
    res = make_fake_results(max_shift=3, pattern=pattern)
    path = write_results_markdown(res, tmp_path / "results.md")
    md = path.read_text()
    for layer in res["layers"]:
        assert f"| {layer} |" in md
        assert f"**{layer}**" in _what_this_shows(md)
    radii = [row["radius"] for row in res["radial"]]
    for r in radii:
        assert f"r={r}" in md
    assert "0.989 (untrained: 0.101)" in md
    assert "`crop`" in md and f"`{pattern}`" in md and "41.2 s" in md
    assert "trained / untrained" in md


def test_conv1_exact_conv2_even_only():
    md = results_markdown(make_fake_results(max_shift=2))
    conv1 = _sentence(md, "conv1")
    assert "exactly equivariant at every measured shift" in conv1 and "3e-7" in conv1
    conv2 = _sentence(md, "conv2")
    assert "only at even shifts" in conv2 and "2e-7" in conv2
    parity = md.split("## What holds exactly", 1)[1].split("## Summary", 1)[0]
    assert "| conv1 | 1 | trained | 3e-7 | exact | 3e-7 | exact |" in parity
    assert "| conv2 | 2 | trained | 2e-7 | exact | n/a | n/a |" in parity
    assert "architecture, not from training" in md


def test_large_aligned_rel_is_not_exact_and_sentence_follows_numbers():
    exact = results_markdown(make_fake_results(max_shift=2, conv1_aligned=3e-7))
    broken = results_markdown(make_fake_results(max_shift=2, conv1_aligned=0.04))
    s_exact, s_broken = _sentence(exact, "conv1"), _sentence(broken, "conv1")
    assert s_exact != s_broken
    assert "**not** exactly equivariant" in s_broken and "0.04" in s_broken
    assert "| conv1 | 1 | trained | 0.04 | not exact | 0.04 | not exact |" in broken
    # the trained and untrained networks now differ, and the text says so
    assert "exact equivariance differs" in broken


def test_exactness_threshold_is_the_named_constant():
    just_below = make_fake_results(conv1_aligned=EXACT_TOL * 0.9)
    just_above = make_fake_results(conv1_aligned=EXACT_TOL * 1.1)
    assert conv_exactness(just_below, "conv1")["kind"] == "every"
    assert conv_exactness(just_above, "conv1")["kind"] == "none"


def test_invariance_sentence_tracks_the_numbers():
    weak = _sentence(results_markdown(make_fake_results(max_shift=4, slope=0.15)), "fc1")
    strong = _sentence(results_markdown(make_fake_results(max_shift=4, slope=0.01)), "fc1")
    assert "**fc1** is not invariant" in weak and "falls from" in weak and "radius 4" in weak
    assert "nearly (not exactly) invariant" in strong
    # the numbers in the sentence are the radial numbers
    res = make_fake_results(max_shift=4, slope=0.15)
    r1 = next(r for r in res["radial"] if r["radius"] == 1)["fc1"]["invariance_score"]
    assert fmt(r1) in weak


def test_conv2_inexact_even_shift_changes_verdict():
    res = make_fake_results(max_shift=2)
    res2 = copy.deepcopy(res)
    for s in res2["shifts"]:
        if s["conv2"]["aligned_rel"] is not None and (s["dy"], s["dx"]) != (0, 0):
            s["conv2"]["aligned_rel"] = 0.3
    assert conv_exactness(res, "conv2")["kind"] == "stride"
    assert conv_exactness(res2, "conv2")["kind"] == "none"
    assert "**not** exactly equivariant" in _sentence(results_markdown(res2), "conv2")


def test_without_untrained_block():
    res = make_fake_results(untrained=False)
    md = results_markdown(res)
    assert "untrained" not in _what_this_shows(md)
    assert "trained / untrained" not in md
    lines = summary_lines(res)
    assert all("untrained" not in line for line in lines)


def test_summary_lines():
    lines = summary_lines(make_fake_results(max_shift=2))
    assert len(lines) == 1 + 4
    assert lines[0].startswith("accuracy 0.989 (untrained 0.101); crop shifts, grid pattern")
    assert "exact at every shift" in lines[1] and lines[1].startswith("conv1")
    assert "exact only at even shifts" in lines[2]
    assert "invariance" in lines[3] and "consistency" in lines[4]


def test_odd_shift_best_alignment_is_reported_from_the_numbers():
    res = make_fake_results(max_shift=2)
    for value in (0.406, 0.0123):
        res["parity"]["odd"]["conv2"]["nearest_aligned_rel"] = value
        md = results_markdown(res)
        assert f"best integer alignment still differs by {value}" in md
        assert "odd: best alignment" in md


def test_geometry_table_from_the_inferred_geometry():
    md = results_markdown(make_fake_results(max_shift=2, engine_keys=True))
    table = md.split("## Geometry inferred from the network", 1)[1].split("\n## ", 1)[0]
    assert "| conv2 | spatial | 20x8x8 | 2x2 | rows [0, 13], cols [0, 13] (14x14 px) | rows [0, 7], cols [0, 7] | no |" in table
    assert "| fc1 | vector | 50 | – | – | – | no |" in table
    assert "## Geometry inferred" not in results_markdown(make_fake_results(max_shift=2))  # older files: no table


def test_geometry_note_is_reported_for_a_map_without_exact_test():
    res = make_fake_results(max_shift=2, engine_keys=True)
    res["geometry"]["fc1"]["note"] = "the map does not grow in step with the input"
    assert "the map does not grow in step with the input" in _sentence(results_markdown(res), "fc1")


def test_exactness_threshold_follows_the_precision():
    """A bf16 network is exact up to 5e-2: aligned_rel 0.04 is round-off there, a failure in float32."""
    bf16 = make_fake_results(conv1_aligned=0.04, engine_keys=True, dtype="bfloat16")
    fp32 = make_fake_results(conv1_aligned=0.04, engine_keys=True)
    assert conv_exactness(bf16, "conv1")["kind"] == "every" and conv_exactness(fp32, "conv1")["kind"] == "none"
    assert "ran in bfloat16; exact means a relative error below 0.05" in results_markdown(bf16)
    assert "exactly equivariant at every measured shift" in _sentence(results_markdown(bf16), "conv1")
