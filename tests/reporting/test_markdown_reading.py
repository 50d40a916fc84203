"""results.md reads right at first sight: intervals beside the headline figures, the exact test before
the lab's sorting hint, the score-vs-rel disagreement explained only when there is one, and the
near-constant-prediction warning only when flagged (issue 13 items 1-3, issue 11 "Reports")."""

from __future__ import annotations

import copy
import re

import pytest
from results_factory import OLD_GEOMETRY, make_fake_results, translation
from results_with_intervals import MEAN_SE, SCORE_HW, with_new_keys

from shiftprobe.reporting.format import Z95, fmt
from shiftprobe.reporting.markdown import conclusions, results_markdown, summary_lines
from shiftprobe.reporting.verdicts import invariance_disagreement

SCORE_PM = f"± {fmt(SCORE_HW, 2)}"  # ± 0.02
MEAN_PM = f"± {fmt(Z95 * MEAN_SE, 2)}"  # ± 0.0098


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _paragraph(md: str, layer: str) -> str:
    lines = [line for line in _section(md, "What this shows").splitlines() if line.startswith(f"- **{layer}**")]
    assert len(lines) == 1, lines
    return lines[0]


def _disagreeing(res: dict) -> dict:
    """fc1's untrained network changes less under shifts (lower rel) yet scores lower: the issue's case."""
    res = copy.deepcopy(res)
    t = translation(res)
    un = t["untrained"]
    for block in [un["summary"], *un["groups"]["radius"]]:
        if block.get("param") == 0:
            continue
        block["fc1"]["rel"] *= 0.3
        block["fc1"]["invariance_score"] -= 0.3
    t["control"]["fc1"]["dist"] = 40.0
    un["control"]["fc1"]["dist"] = 0.2
    return res


def test_plus_minus_beside_every_headline_figure():
    md = results_markdown(with_new_keys())
    radius = _section(md, "Key scores by radius")
    assert f"0.844 {SCORE_PM} / 0.907 {SCORE_PM}" in radius  # fc1 at r=1, trained / untrained
    assert MEAN_PM in radius  # rel, consistency: 1.96 se
    summary = _section(md, "Summary over all non-zero shifts")
    row = next(line for line in summary.splitlines() if line.startswith("| fc1 | trained |"))
    assert row.count("±") == 3  # cos, rel, invariance
    assert "| fc1 | untrained, 3 inits |" in summary and "(sd 0.01)" in summary
    fc1 = _paragraph(md, "fc1")
    assert f"0.844 {SCORE_PM} at radius 1" in fc1 and "over 3 untrained initialisations" in fc1
    conv2 = _paragraph(md, "conv2")
    assert f"0.3 {MEAN_PM} (nearest_aligned_rel)" in conv2
    header = md.split("## Key scores", 1)[0]
    assert re.search(r"0\.989 \(untrained: 0\.101\), ± [0-9.]+ and ± [0-9.]+ \(95 %\)", header)
    assert "95 % interval over the 100 test images" in _section(md, "What this shows")


def test_older_results_have_no_plus_minus_and_say_so():
    res = make_fake_results(max_shift=2)
    md = results_markdown(res)
    for title in ("Key scores by radius", "Summary over all non-zero shifts"):
        assert "±" not in _section(md, title)
    assert "no standard errors or intervals" in _section(md, "What this shows")
    assert "certified" not in _section(md, "Summary over all non-zero shifts")
    assert "Warning" not in md


def test_conv_paragraph_leads_with_the_exact_test_then_the_sorting_hint():
    md = results_markdown(with_new_keys(certified=1.0))
    for layer in ("conv1", "conv2"):
        text = _paragraph(md, layer)
        assert text.index("exactly equivariant") < text.index("The lab's sorting hint")
        assert "on the region the exact test certifies it is 1" in text
        assert "as an exact layer must: the gap is the frame's border, not the layer" in text
        assert "content entering and leaving the frame" in text
    radius = _section(md, "Key scores by radius")
    rows = [line.split(" | ")[1] for line in radius.splitlines() if line.startswith("| conv2 |")]
    assert rows == ["aligned_rel (exact test)", "the lab's sorting hint (sorted equivariance)",
                    "sorting hint on the certified region"]


def test_sorting_hint_below_one_on_the_certified_region_blames_the_layer():
    text = _paragraph(results_markdown(with_new_keys(certified=0.7)), "conv1")
    assert "the layer's own values change" in text and "frame's border, not the layer" not in text


def test_sorting_hint_without_certified_version_still_explains_the_border():
    text = _paragraph(results_markdown(make_fake_results(max_shift=2)), "conv1")
    assert "The lab's sorting hint" in text
    assert "stays below 1 even for an exactly equivariant layer" in text
    assert "no certified-region version" in text


def test_sorting_hint_is_exact_with_circular_shifts_and_padding():
    res = make_fake_results(max_shift=2, mode="roll")
    translation(res)["geometry"] = {**OLD_GEOMETRY, "conv1": {**OLD_GEOMETRY["conv1"], "circular": True}}
    assert "itself an exact test" in _paragraph(results_markdown(res), "conv1")


def test_disagreement_sentence_only_when_score_and_rel_disagree():
    agree = with_new_keys()
    assert invariance_disagreement(translation(agree), "fc1") is None
    assert "disagree" not in _paragraph(results_markdown(agree), "fc1")

    disagree = _disagreeing(agree)
    found = invariance_disagreement(translation(disagree), "fc1")
    assert found is not None and found["direction"] == 1 and found["radii"]
    text = _paragraph(results_markdown(disagree), "fc1")
    assert "**the two disagree, and both are true**" in text
    assert "divides by the distance between unrelated images" in text
    assert "multiplied by 200 (0.2 → 40)" in text
    # the other layers keep their plain comparison
    assert "disagree" not in _paragraph(results_markdown(disagree), "logits")


def test_disagreement_needs_an_untrained_network():
    res = _disagreeing(with_new_keys())
    del translation(res)["untrained"]
    assert invariance_disagreement(translation(res), "fc1") is None


@pytest.mark.parametrize("flag", [True, False, None])
def test_near_constant_warning_only_when_flagged(flag):
    res = with_new_keys(near_constant_untrained=bool(flag))
    t = translation(res)
    if flag is None:
        for net in (t, t["untrained"]):
            del net["predictions"]
    md = results_markdown(res)
    warning = "**Warning: the untrained network's predictions are near-constant**"
    if flag:
        first = conclusions(res)[0]
        assert first.startswith(warning)
        assert "class 3 for 91.0% of the images" in first and "0.7 of at most 3.32 bits" in first
        assert "Consistency among correctly classified images" in first and "trained 0.91" in first
        assert "Compare it by its layer scores" in first
        assert "**near-constant**" in md.split("## Key scores", 1)[0]
        assert "untrained predictions near-constant" in summary_lines(res)[-1]
    else:
        assert "near-constant" not in md
        assert "near-constant" not in "\n".join(summary_lines(res))


def test_consistency_correct_next_to_consistency():
    res = with_new_keys(near_constant_untrained=False)
    text = _paragraph(results_markdown(res), "logits")
    assert "of the correctly classified ones" in text
    assert "among correctly classified images 0.91" in text
    assert "(0.91 " in summary_lines(res)[-1] and "among correct" in summary_lines(res)[-1]


def test_section_order_warning_then_layers_then_how_sure():
    """The lab net's shape (max shift 4, the fc1 case of issue 13): warning first, one paragraph per layer."""
    res = _disagreeing(with_new_keys(make_fake_results(max_shift=4)))
    md = results_markdown(res)
    shows = _section(md, "What this shows")
    paragraphs = [line for line in shows.splitlines() if line.startswith("- ")]
    order = [p.split("**")[1] for p in paragraphs]
    assert order[0].startswith("Warning")
    assert order[1:5] == ["conv1", "conv2", "fc1", "logits"]
    assert paragraphs[-1].startswith("- **How sure**")
