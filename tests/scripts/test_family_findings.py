"""``scripts/family_findings.py`` on a hand-made sweep: the tables hold the seed means and the paired
differences computed here by hand."""

import json
import math
import sys

import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from family_findings import collect, findings_markdown, main  # noqa: E402

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975, 2 degrees of freedom


def _job(path, overrides, fc1_half, fc1_one, rot_fc1):
    entries = []
    for axis in ("x", "y"):
        for offset, value in ((0.5, fc1_half), (1.0, fc1_one)):
            entries.append({"param": {"axis": axis, "offset": offset}, "count": 10,
                            "fc1": {"invariance_score": value + (0.01 if axis == "x" else -0.01)},
                            "logits": {"invariance_score": 0.5, "consistency": 0.9}})
    rotation = [{"param": angle, "count": 10, "fc1": {"invariance_score": rot_fc1 - abs(angle) / 100},
                 "logits": {"invariance_score": 0.4, "consistency": 0.8}} for angle in (-45.0, 45.0)]
    results = {"summary": {}, "families": {"subpixel": {"entries": entries}, "rotation": {"entries": rotation}}}
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "results.json").write_text(json.dumps(results))


def _sweep(tmp_path):
    half = {"0": 0.60, "1": 0.62, "2": 0.61}
    one = {"0": 0.70, "1": 0.75, "2": 0.71}
    k = 0
    for experiment, rot in (("lab", 0.5), ("rotate_augmented", 0.7)):
        for seed in ("0", "1", "2"):
            _job(tmp_path / str(k), [f"experiment={experiment}", f"seed={seed}", "transform=[subpixel,rotation]"],
                 half[seed], one[seed], rot + int(seed) * 0.01)
            k += 1
    return half, one


def test_subpixel_offsets_average_the_axes_and_the_rotation_angles_their_signs(tmp_path):
    half, _ = _sweep(tmp_path)
    values, seeds = collect(tmp_path)
    assert seeds["experiment=lab"] == {"0", "1", "2"}
    got = values["subpixel"]["experiment=lab"]["fc1", "invariance_score", 0.5]
    assert all(math.isclose(got[s], half[s]) for s in half)  # (v + 0.01 + v - 0.01) / 2
    rot = values["rotation"]["experiment=rotate_augmented"]["fc1", "invariance_score", 45.0]
    assert math.isclose(rot["1"], 0.71 - 0.45)


def test_paired_half_minus_one_pixel_and_augmented_minus_lab_by_hand(tmp_path):
    half, one = _sweep(tmp_path)
    text = findings_markdown(tmp_path, baseline="experiment=lab")
    diffs = [half[s] - one[s] for s in half]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    halfwidth = T_975_DF2 * sd / math.sqrt(3)
    assert f"{mean:+.3f} ± {halfwidth:.3f}, lower" in text
    # augmented minus lab at 45 degrees: +0.2 on every seed, a zero-width interval, "higher"
    assert "Paired difference `experiment=rotate_augmented` minus `experiment=lab`" in text
    assert "+0.200 ± 0.000, higher" in text


def test_cli_writes_families_md(tmp_path):
    _sweep(tmp_path / "sweep")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "families.md").read_text().startswith("# Transformation families")
    assert main([str(tmp_path / "missing")]) == 1


def test_subpixel_methods_table_pairs_half_against_one_pixel_by_hand():
    from subpixel_methods import methods_markdown

    def figures(half, one):
        return {(layer, metric, offset): (half if offset == 0.5 else one) + (0.0 if layer == "fc1" else 0.1)
                for layer, metric in (("fc1", "invariance_score"), ("logits", "invariance_score"), ("logits", "consistency"))
                for offset in (0.5, 1.0)}

    per_seed = {s: {"bilinear": figures(0.9 + d, 0.8), "fourier": figures(0.7, 0.8 + d)}
                for s, d in (("0", 0.00), ("1", 0.01), ("2", 0.02))}
    text = methods_markdown(per_seed, "experiment=lab")
    halfwidth = T_975_DF2 * 0.01 / math.sqrt(3)  # the differences 0.10, 0.11, 0.12 have sd 0.01
    assert f"| bilinear | 0.5 − 1 px | **+0.110 ± {halfwidth:.3f}, higher**" in text
    assert f"| fourier | 0.5 − 1 px | **-0.110 ± {halfwidth:.3f}, lower**" in text
