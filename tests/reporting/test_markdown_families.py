"""reporting/markdown.py, other families: one table and a few sentences per family, derived from the
figures of a hand-built section (tests/reporting/family_sections.py)."""

from __future__ import annotations

import copy

import family_sections as fs
from family_sections import param_blocks
from results_factory import make_fake_results, translation

from shiftprobe.reporting.markdown import (
    family_section_lines,
    family_sentences,
    family_table,
    param_label,
    results_markdown,
    summary_lines,
)


def table_rows(lines: list[str]) -> list[list[str]]:
    rows = [line for line in lines if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # without the header


def sentences(section) -> str:
    return "\n".join(family_sentences(section))


def test_one_row_per_parameter_then_all():
    for section in (fs.rot90(), fs.rotation(), fs.subpixel(), fs.subpixel_grid(), fs.flip()):
        rows = table_rows(family_table(section))
        labels = [param_label(section, e["param"]) for e in param_blocks(section)]
        assert [r[0] for r in rows] == [*labels, "**all**"], section["family"]
        assert len({len(r) for r in rows}) == 1  # every row has every column


def test_parameter_labels():
    assert param_label(fs.rot90(), 3) == "k=3 (270°)"
    assert param_label(fs.rotation(), -45.0) == "-45°"
    assert param_label(fs.subpixel(), {"axis": "x", "offset": 0.5}) == "x 0.5 px"
    assert param_label(fs.subpixel_grid(), [0.25, -0.5]) == "(0.25, -0.5) px"
    assert param_label(fs.flip(), "vertical") == "vertical"


def test_cells_hold_the_figures_and_their_intervals():
    section = fs.rotation()
    header = [c.strip() for c in family_table(section)[0].strip("|").split("|")]
    rows = table_rows(family_table(section))
    fc1 = header.index("fc1 invariance")
    at_45 = next(r for r in rows if r[0] == "45°")
    assert at_45[fc1] == "0.4 [0.38, 0.42] / 0.275"  # trained [interval] / untrained
    assert "conv1 aligned_rel" in header and "conv1 sorted equivariance" not in header  # rotations permute nothing
    assert "conv1 sorted equivariance" in family_table(fs.rot90())[0]


def test_exact_invariance_only_below_the_tolerance():
    assert "logits is invariant to every quarter turn (k = 1, 2, 3): its largest mean relative change (rel) is 3e-7, " \
           "below the exactness tolerance 1e-5" in sentences(fs.rot90())
    assert "logits is invariant" not in sentences(fs.rot90(logits_rel=1e-3))


def test_exact_equivariance_names_the_parameters_where_it_holds():
    text = sentences(fs.rot90())
    assert "conv1 is exactly equivariant at k=2 (180°) only" in text
    assert "not at k=1 (90°) and k=3 (270°) (aligned_rel up to 0.9)" in text
    assert "conv1 is exactly equivariant to both flips" in sentences(fs.flip())
    # rotations have no exact test: aligned_rel is a measure, no sentence claims exactness
    assert "exactly" not in sentences(fs.rotation())


def test_rotation_trend_follows_the_intervals():
    assert "The invariance score of fc1 falls from 0.9 [0.88, 0.92] at 5° to 0.4 [0.38, 0.42] at 45°." in sentences(
        fs.rotation()
    )
    flat = fs.rotation()
    for e in param_blocks(flat):
        e["fc1"]["invariance_score"], e["fc1"]["invariance_score_ci"] = 0.7, [0.6, 0.8]
    assert "fc1 stays about the same from 5° (0.7 [0.6, 0.8]) to 45° (0.7 [0.6, 0.8]): the 95 % intervals overlap" in sentences(
        flat
    )
    for e in param_blocks(flat):  # disjoint intervals, but closer than SAME_SCORE: no "falls" either
        a = abs(e["param"])
        e["fc1"]["invariance_score"], e["fc1"]["invariance_score_ci"] = 0.9 - a / 1500, [0.9 - a / 1500 - 1e-4, 0.9 - a / 1500 + 1e-4]
    assert "fc1 stays about the same from 5°" in sentences(flat) and "they differ by less than 0.05" in sentences(flat)


def test_half_pixel_against_one_pixel():
    assert (
        "The half-pixel shift changes fc1 more than the one-pixel shift: invariance score 0.62 [0.6, 0.64] vs "
        "0.71 [0.69, 0.73] along x; 0.62 [0.6, 0.64] vs 0.71 [0.69, 0.73] along y." in sentences(fs.subpixel())
    )
    assert "changes fc1 less than the one-pixel shift" in sentences(fs.subpixel(half=0.8, one=0.71))
    wide = sentences(fs.subpixel(half=0.66, one=0.71, hw=0.05))  # the intervals overlap: no claim
    assert "The half-pixel and one-pixel shifts change fc1 about alike (the 95 % intervals overlap)" in wide
    assert "more than" not in wide


def test_grid_names_the_lowest_and_highest_cells():
    assert "The invariance score of fc1 is lowest at (-0.5, -0.5) px" in sentences(fs.subpixel_grid())


def test_classifier_and_training_sentences():
    text = sentences(fs.rotation())
    assert "logits: the predicted class stays the same for 75.0% ± 0.8% of the transformed images" in text
    assert "lowest at -45° (55.0%)" in text and "against 97.0% untransformed" in text
    assert "Training made fc1 more invariant to rotations: 0.65 [0.63, 0.67] vs 0.375 [0.355, 0.395] untrained." in text
    same = fs.rotation()
    same["untrained"] = copy.deepcopy({k: v for k, v in same.items() if k != "untrained"})
    assert "Training left the invariance of fc1 to rotations about the same (the 95 % intervals overlap)" in sentences(same)
    assert "Training" not in sentences(fs.rotation(untrained=False))


def test_section_states_settings_and_time():
    lines = "\n".join(family_section_lines("subpixel", fs.subpixel()))
    assert lines.startswith("## Sub-pixel shifts (`subpixel`)")
    assert "max_offset=1.0, step=0.125, axes=xy, method=bilinear, mode=crop; 16 parameters measured" in lines
    assert "**Measurement time**: 2.5 s (trained)" in lines
    assert "2.0 s (untrained)" in "\n".join(family_section_lines("rot90", fs.rot90()))


def test_translation_report_then_the_other_families():
    res = make_fake_results(engine_keys=True)
    plain = results_markdown(res)
    both = results_markdown(fs.results(translation(res), fs.rot90()))
    assert both.startswith(plain) and "## Rotations by 90° (`rot90`)" in both[len(plain):]
    assert both.endswith("\n") and "\n\n\n" not in both
    # translation leads wherever it was measured
    assert results_markdown(fs.results(fs.rot90(), translation(res))) == both


def test_without_translation_the_report_is_the_families():
    md = results_markdown(fs.results(fs.rot90(), fs.rotation(), seconds_total=9.5))
    assert md.startswith("# shiftprobe: how invariant / equivariant is each layer?")
    assert "## Rotations by 90° (`rot90`)" in md and "## Rotations (`rotation`)" in md
    assert "9.5 s for every family" in md and "Key scores by radius" not in md


def test_near_constant_predictions_are_flagged():
    section = fs.rot90()
    assert "near-constant" not in sentences(section)
    section["untrained"]["predictions"] = {"near_constant": True}
    assert "The untrained network's predictions are near-constant" in sentences(section)


def test_console_lines_one_per_family_with_rel_beside_the_score():
    lines = summary_lines(fs.results(fs.rot90(), fs.flip()))
    assert len(lines) == 2
    assert lines[0].startswith("rot90: 3 parameters, 2.5 s (trained), 2.0 s (untrained); invariance score (untrained), "
                               "rel (untrained): ")
    # fc1: score 0.517 (untrained 0.2), rel (1 - 0.517) * 0.8 = 0.387 (untrained 0.64)
    assert "fc1 0.517 (0.2) rel 0.387 (0.64)" in lines[0]
    assert lines[1].startswith("flip: 2 parameters, 2.5 s (trained); invariance score, rel: ")
