"""reporting/markdown.py: results.md's tables and the conclusions generated from the numbers."""

from __future__ import annotations

import copy

import pytest
from results_factory import block, make_fake_results, shift, translation

from shiftprobe.probe.thresholds import EXACT_TOL
from shiftprobe.reporting.format import fmt
from shiftprobe.reporting.markdown import results_markdown, summary_lines, write_results_markdown
from shiftprobe.reporting.verdicts import conv_exactness


def _what_this_shows(md: str) -> str:
    return md.split("## What this shows", 1)[1]


def _sentence(md: str, layer: str) -> str:
    lines = [line for line in _what_this_shows(md).splitlines() if line.startswith(f"- **{layer}**")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("pattern", ["grid", "axis", "random"])
def test_markdown_has_every_layer_and_radius(tmp_path, pattern):
    res = make_fake_results(max_shift=3, pattern=pattern)
    md = write_results_markdown(res, tmp_path / "results.md").read_text()
    t = translation(res)
    for layer in t["layers"]:
        assert f"| {layer} |" in md
        assert f"**{layer}**" in _what_this_shows(md)
    for r in (b["param"] for b in t["groups"]["radius"]):
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
    just_below = translation(make_fake_results(conv1_aligned=EXACT_TOL * 0.9))
    just_above = translation(make_fake_results(conv1_aligned=EXACT_TOL * 1.1))
    assert conv_exactness(just_below, "conv1")["kind"] == "every"
    assert conv_exactness(just_above, "conv1")["kind"] == "none"


def test_invariance_sentence_tracks_the_numbers():
    weak = _sentence(results_markdown(make_fake_results(max_shift=4, slope=0.15)), "fc1")
    strong = _sentence(results_markdown(make_fake_results(max_shift=4, slope=0.01)), "fc1")
    assert "**fc1** is not invariant" in weak and "falls from" in weak and "radius 4" in weak
    assert "nearly (not exactly) invariant" in strong
    # the numbers in the sentence are the radius blocks' numbers
    res = make_fake_results(max_shift=4, slope=0.15)
    assert fmt(block(translation(res), "radius", 1)["fc1"]["invariance_score"]) in weak


def test_conv2_inexact_even_shift_changes_verdict():
    res = make_fake_results(max_shift=2)
    res2 = copy.deepcopy(res)
    for s in translation(res2)["groups"]["param"]:
        if s["conv2"]["aligned_rel"] is not None and s["param"] != [0, 0]:
            s["conv2"]["aligned_rel"] = 0.3
    assert conv_exactness(translation(res), "conv2")["kind"] == "stride"
    assert conv_exactness(translation(res2), "conv2")["kind"] == "none"
    assert "**not** exactly equivariant" in _sentence(results_markdown(res2), "conv2")


def test_without_untrained_block():
    res = make_fake_results(untrained=False)
    md = results_markdown(res)
    assert "untrained" not in _what_this_shows(md)
    assert "trained / untrained" not in md
    assert all("untrained" not in line for line in summary_lines(res))


def test_summary_lines():
    lines = summary_lines(make_fake_results(max_shift=2))
    assert len(lines) == 1 + 4
    assert lines[0].startswith("accuracy 0.989 (untrained 0.101); crop shifts, grid pattern")
    assert "exact at every shift" in lines[1] and lines[1].startswith("conv1")
    assert "exact only at even shifts" in lines[2]
    assert "invariance" in lines[3] and "consistency" in lines[4]


def test_summary_lines_print_rel_beside_the_score():
    """Issue 19 item 11: the score alone (``fc1 invariance 0.434 (untrained 0.112)``) read as "training made
    fc1 four times more invariant"; rel beside it shows that the untrained fc1 changes no more under a shift."""
    res = make_fake_results(max_shift=2)
    t = translation(res)
    t["summary"]["fc1"].update(invariance_score=0.434, rel=0.21)
    t["untrained"]["summary"]["fc1"].update(invariance_score=0.112, rel=0.61)
    fc1 = next(line for line in summary_lines(res) if line.startswith("fc1"))
    assert fc1 == "fc1     invariance 0.434 (untrained 0.112), rel 0.21 (untrained 0.61)"
    conv1 = next(line for line in summary_lines(res) if line.startswith("conv1"))
    assert "rel" not in conv1.split("sorting hint")[1]  # a conv layer's line keeps the exact test and the hint


def test_odd_shift_best_alignment_is_reported_from_the_numbers():
    res = make_fake_results(max_shift=2)
    for value in (0.406, 0.0123):
        block(translation(res), "parity", "odd")["conv2"]["nearest_aligned_rel"] = value
        md = results_markdown(res)
        assert f"best integer alignment still differs by {value}" in md
        assert "odd: best alignment" in md


def test_geometry_table_from_the_inferred_geometry():
    md = results_markdown(make_fake_results(max_shift=2, engine_keys=True))
    table = md.split("## Geometry inferred from the network", 1)[1].split("\n## ", 1)[0]
    assert "| conv2 | spatial | 20x8x8 | 2x2 | rows [0, 13], cols [0, 13] (14x14 px) | rows [0, 7], cols [0, 7] | no |" in table
    assert "| fc1 | vector | 50 | – | – | – | no |" in table
    # a file from before the geometry was inferred (strides only): no table
    assert "## Geometry inferred" not in results_markdown(make_fake_results(max_shift=2))


def test_geometry_note_is_reported_for_a_map_without_exact_test():
    res = make_fake_results(max_shift=2, engine_keys=True)
    translation(res)["geometry"]["fc1"]["note"] = "the map does not grow in step with the input"
    assert "the map does not grow in step with the input" in _sentence(results_markdown(res), "fc1")


def test_exactness_threshold_follows_the_precision():
    """A bf16 network is exact up to 5e-2: aligned_rel 0.04 is round-off there, a failure in float32."""
    bf16 = make_fake_results(conv1_aligned=0.04, engine_keys=True, dtype="bfloat16")
    fp32 = make_fake_results(conv1_aligned=0.04, engine_keys=True)
    assert conv_exactness(translation(bf16), "conv1")["kind"] == "every"
    assert conv_exactness(translation(fp32), "conv1")["kind"] == "none"
    assert "ran in bfloat16; exact means a relative error below 0.05" in results_markdown(bf16)
    assert "exactly equivariant at every measured shift" in _sentence(results_markdown(bf16), "conv1")


def test_a_results_dict_of_schema_2_is_migrated_first():
    """The callback and older code hand over 0.2 dicts (translation at the top level): same report."""
    res = make_fake_results(max_shift=2, engine_keys=True)
    t = translation(res)
    old = {k: x for k, x in t.items() if k not in ("groups", "config", "family", "kind", "parameter", "dims")}
    old.update(shift_mode="crop", shift_pattern="grid", max_shift=2, strides={"conv1": 1, "conv2": 2},
               shifts=[{"dy": b["param"][0], "dx": b["param"][1], **{k: x for k, x in b.items() if k != "param"}}
                       for b in t["groups"]["param"]],
               radial=[{"radius": b["param"], **{k: x for k, x in b.items() if k != "param"}} for b in t["groups"]["radius"]],
               parity={b["param"]: {k: x for k, x in b.items() if k != "param"} for b in t["groups"]["parity"]})
    del old["untrained"]
    del t["untrained"]
    assert results_markdown(old) == results_markdown(res)
    assert shift(t, 1, 0)["conv2"]["aligned_rel"] is None
