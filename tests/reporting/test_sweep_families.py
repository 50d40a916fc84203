"""scripts/summarize.py with transform=[...] runs: each other family's summary scores are columns of
summary.md and summary.csv, with their interval over seeds."""

import csv

import family_sections as fs
from results_factory import make_fake_results
from sweep_jobs import write_job

from shiftprobe.reporting.sweep_summary import summarize_sweep


def test_family_scores_are_columns_with_intervals_over_seeds(tmp_path):
    sweep = tmp_path / "multirun"
    fc1 = {0: 0.5, 1: 0.6, 2: 0.7}
    for seed, value in fc1.items():
        res = make_fake_results(max_shift=1, seed=seed)
        rot = fs.rot90(untrained=False)
        rot["summary"]["fc1"]["invariance_score"] = value
        res["families"]["rot90"] = rot
        write_job(sweep, seed, ["transform=[translation,rot90]", f"seed={seed}"], res)
    summarize_sweep(sweep)
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [float(r["family_rot90_head_input_invariance"]) for r in rows] == [0.5, 0.6, 0.7]
    assert float(rows[0]["family_rot90_head_input_invariance_mean"]) == 0.6
    md = (sweep / "summary.md").read_text()
    assert "rot90: head input inv." in md and "rot90: logits inv." in md
    # mean 0.6, 95 % t half-width 4.303 * 0.1 / sqrt(3)
    assert "0.600 ± 0.248 (95 % CI [0.352, 0.848], n=3)" in md


def test_runs_without_families_have_no_family_columns(tmp_path):
    sweep = tmp_path / "multirun"
    for seed in (0, 1):
        write_job(sweep, seed, [f"seed={seed}"], make_fake_results(max_shift=1, seed=seed))
    summarize_sweep(sweep)
    assert "family_" not in (sweep / "summary.csv").read_text().splitlines()[0]
    assert "inv.: that family's" not in (sweep / "summary.md").read_text()
