"""``scripts/lie_findings.py`` on a hand-made sweep: the tables hold the seed means, the paired
differences trained minus untrained and the ranking, computed here by hand."""

import json
import math
import sys

import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from lie_findings import lie_markdown, lie_sections, main  # noqa: E402

T_975_DF2 = 4.302652729911275  # Student t quantile 0.975, 2 degrees of freedom
GENERATORS = ("translate_x", "rotate")


def _section(fc1: dict[str, float], conv_part: float, gap_part: float) -> dict:
    groups = [{"param": g, "count": 10, "fc1": {"rel": v, "rel_se": 0.0}} for g, v in fc1.items()]
    part = {g: {"contribution": {"rel": conv_part * (k + 1)}} for k, g in enumerate(GENERATORS)}
    gap = {g: {"contribution": {"rel": gap_part}} for g in GENERATORS}
    empty = {g: {"contribution": {"rel": 0.0}} for g in GENERATORS}
    total = {g: {p: {"rel": 1.0} for p in ("end_to_end", "modules", "between")} for g in GENERATORS}
    return {"family": "lie_derivative", "kind": "lie_derivative", "layers": ["fc1"], "groups": {"param": groups},
            "summary": {}, "layerwise": {"layerwise": {"conv": part, "fc": empty},
                                         "layerwise_between": {"conv → fc": gap, "input → conv": empty},
                                         "layerwise_total": total}}


def _sweep(tmp_path):
    for seed, (trained, untrained) in enumerate(((0.10, 0.30), (0.12, 0.33), (0.11, 0.29))):
        path = tmp_path / str(seed)
        section = _section({"translate_x": trained, "rotate": 2 * trained}, 0.2 + seed / 100, 0.5)
        section["untrained"] = _section({"translate_x": untrained, "rotate": 2 * untrained}, 0.0, 0.0)
        results = {"schema_version": 3, "primary": "lie_derivative", "families": {"lie_derivative": section}}
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=lab", f"seed={seed}"]))
        (path / "results.json").write_text(json.dumps(results))


def _half(values) -> float:
    mean = sum(values) / len(values)
    return T_975_DF2 * math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)


def test_tables_hold_seed_means_paired_differences_and_the_ranking(tmp_path):
    _sweep(tmp_path)
    text = lie_markdown(lie_sections(tmp_path))
    diffs = [0.10 - 0.30, 0.12 - 0.33, 0.11 - 0.29]
    row = next(line for line in text.splitlines() if line.startswith("| fc1 | translate_x |"))
    assert f"{0.11:.3g} ± {_half([0.10, 0.12, 0.11]):.2g}" in row
    assert f"{sum(diffs) / 3:+.3g} ± {_half(diffs):.2g}, lower" in row
    conv = next(line for line in text.splitlines() if line.startswith("| conv |"))
    assert f"{0.21:.3g} ± {_half([0.20, 0.21, 0.22]):.2g}" in conv  # translate_x
    assert f"{0.42:.3g} ± {_half([0.40, 0.42, 0.44]):.2g}" in conv  # rotate: twice
    assert "| conv → fc |" in text and "| input → conv |" not in text  # only gaps with something in them
    assert "- translate_x: conv → fc (0.500), conv (0.210)\n" in text  # 0 (fc) left out
    assert "- rotate: conv → fc (0.500), conv (0.420)" in text


def test_a_sweep_without_the_lie_derivative_is_one_error_line(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lie_derivative=[...]" in err
    _sweep(tmp_path)
    assert main([str(tmp_path)]) == 0 and (tmp_path / "lie.md").is_file()
