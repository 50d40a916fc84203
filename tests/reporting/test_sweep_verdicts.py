"""Across runs: the 95 % Student-t interval over seeds and the paired verdict against a baseline.

Fast: fake sweep folders (results.json + .hydra/overrides.yaml), no training. The sweeps are built so
that the right answer is known: a configuration equal to the baseline + 0.1 seed by seed is `higher`,
an identical one shows `no detectable difference`, and seeds only one configuration ran are not used.
"""

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from results_factory import block, make_fake_results, translation
from sweep_jobs import write_job

from shiftprobe.reporting.sweep_summary import (
    NEEDS_SEEDS,
    ONE_SEED,
    Interval,
    UnknownBaseline,
    _t_central_mass,
    fmt_interval,
    paired_difference,
    radial_band,
    summarize,
    summarize_sweep,
    t_interval,
    t_quantile,
)

ROOT = Path(__file__).resolve().parents[2]
T975_DF2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # closed form for 2 degrees of freedom: 4.30265...

# the baseline's seeds differ a lot (0.05) from one another; the effects below are far smaller
BASE_ACC = {0: 0.90, 1: 0.95, 2: 0.93}
NOISE = {0: 1e-4, 1: -2e-4, 2: 1e-4}


def _results(seed: int, accuracy: float, fc1_shift: float = 0.0) -> dict:
    res = make_fake_results(max_shift=2, seed=seed)
    t = translation(res)
    t["accuracy"] = accuracy
    for ring in t["groups"]["radius"]:
        ring["fc1"]["invariance_score"] += fc1_shift
    return res


@pytest.fixture
def sweep(tmp_path):
    """lab (baseline, seeds 0-2); higher = lab + 0.1; small = lab + 0.01 (below the spread between seeds,
    found only by pairing); same = lab; lower = lab - 0.05; extra = lab + 0.1 on seeds 0-2 plus an unpaired
    seed 7 far below; other_seeds = seeds 5, 6 only; single = seed 0 only; and a broken and a missing job."""
    s = tmp_path / "multirun" / "2026-11-25" / "12-00-00"
    jobs = []
    for seed, acc in BASE_ACC.items():
        jobs.append((["experiment=lab", f"seed={seed}"], _results(seed, acc)))
    for name, delta in (("higher", 0.1), ("small", 0.01), ("same", 0.0), ("lower", -0.05), ("extra", 0.1)):
        for seed, acc in BASE_ACC.items():
            noise = NOISE[seed] if delta else 0.0
            jobs.append(([f"experiment={name}", f"seed={seed}"], _results(seed, acc + delta + noise, delta + noise)))
    jobs.append((["experiment=extra", "seed=7"], _results(7, 0.10, -0.5)))
    jobs.append((["experiment=other_seeds", "seed=5"], _results(5, 0.99)))
    jobs.append((["experiment=other_seeds", "seed=6"], _results(6, 0.98)))
    single = _results(0, 0.97)
    translation(single)["accuracy_se"] = 0.002
    block(translation(single), "radius", 1)["fc1"]["invariance_score_ci"] = [0.80, 0.84]
    jobs.append((["experiment=single", "seed=0"], single))
    for num, (overrides, res) in enumerate(jobs):
        write_job(s, num, overrides, res)
    write_job(s, len(jobs), ["experiment=broken", "seed=0"], "{not json")
    write_job(s, len(jobs) + 1, ["experiment=broken", "seed=1"], None)
    return s


# --------------------------------------------------------------------------- the t-interval


def test_t_quantile_closed_forms_and_tables():
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), abs=1e-9)  # Cauchy: 12.706
    assert t_quantile(0.975, 2) == pytest.approx(T975_DF2, abs=1e-9)  # 4.303
    table = {3: 3.182446305284263, 4: 2.7764451051977987, 9: 2.2621571627409915, 29: 2.045229642132703,
             100: 1.9839715184496334, 1000: 1.9623390808264078}
    for df, t in table.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-9), df
    assert t_quantile(0.95, 5) == pytest.approx(2.015048372669157, abs=1e-9)
    assert t_quantile(0.975, 100_000) == pytest.approx(1.959963984540054, abs=1e-4)  # tends to the normal's
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError):
        t_quantile(1.2, 3)


@pytest.mark.parametrize("df", [1, 2, 3, 6, 7, 30])
def test_t_distribution_matches_integrated_density(df):
    """The finite series against an independent numerical integral of the t density."""
    x = np.linspace(0.0, 6.0, 600_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
    mass = 2 * np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
    for t in (0.3, 1.0, 2.5, 6.0):
        assert _t_central_mass(t, df) == pytest.approx(mass[np.searchsorted(x, t)], abs=1e-9)


def test_t_interval_is_the_hand_computation():
    iv = t_interval([1.0, 2.0, 3.0])
    half = T975_DF2 * 1.0 / math.sqrt(3)  # sample std of 1, 2, 3 is 1
    assert (iv.mean, iv.n) == (2.0, 3)
    assert iv.low == pytest.approx(2 - half, abs=1e-12) and iv.high == pytest.approx(2 + half, abs=1e-12)
    assert iv.half == pytest.approx(2.48413771175, abs=1e-9)
    vals = np.array([0.761, 0.755, 0.770, 0.762])
    iv = t_interval(list(vals) + [None, float("nan")])  # missing and non-finite values are dropped
    assert iv.n == 4 and iv.mean == pytest.approx(vals.mean(), abs=1e-15)
    assert iv.half == pytest.approx(3.182446305284263 * vals.std(ddof=1) / 2, abs=1e-12)
    assert t_interval([0.5]) == Interval(0.5, None, None, 1)
    assert t_interval([]) == Interval(None, None, None, 0)


def test_interval_cell_format():
    assert fmt_interval(t_interval([1.0, 2.0, 3.0])) == "2.000 ± 2.484 (95 % CI [-0.484, 4.484], n=3)"
    assert fmt_interval(t_interval([0.1, 0.2]), sign=True).startswith("+0.150 ± ")
    assert fmt_interval(t_interval([0.7])) == "0.700 (n=1)"
    assert fmt_interval(t_interval([])) == "n/a"


# --------------------------------------------------------------------------- paired verdicts


def test_paired_difference_uses_shared_seeds_only():
    base = {"0": 1.0, "1": 2.0, "2": 3.0, "3": 50.0}
    other = {"0": 1.1, "1": 2.1, "2": 3.1, "9": -50.0}
    p = paired_difference(base, other)
    assert p.seeds == ("0", "1", "2") and p.diff.n == 3
    assert p.diff.mean == pytest.approx(0.1) and p.verdict == "higher"
    assert paired_difference(base, base).verdict == "no detectable difference"
    assert paired_difference(other, base).verdict == "lower"
    assert paired_difference({"0": 1.0}, {"0": 2.0}).verdict == NEEDS_SEEDS
    assert paired_difference({"0": 1.0, "1": 1.0}, {"2": 2.0, "3": 2.0}).verdict == NEEDS_SEEDS


def test_sweep_verdicts_are_the_known_answers(sweep):
    summary = summarize(sweep)
    assert summary.baseline == "experiment=lab"  # the first configuration
    verdicts = {c: summary.paired(c, "accuracy").verdict for c in summary.configs if c != summary.baseline}
    assert verdicts == {
        "experiment=higher": "higher",
        "experiment=small": "higher",
        "experiment=same": "no detectable difference",
        "experiment=lower": "lower",
        "experiment=extra": "higher",
        "experiment=other_seeds": NEEDS_SEEDS,
        "experiment=single": NEEDS_SEEDS,
    }
    # +0.01 is far inside the spread between seeds: unpaired, the two intervals overlap; paired, it is clear
    lab, small = summary.stats("experiment=lab", "accuracy"), summary.stats("experiment=small", "accuracy")
    assert small.low < lab.high
    d = summary.paired("experiment=small", "accuracy").diff
    assert d.mean == pytest.approx(0.01, abs=1e-12) and d.low > 0
    same = summary.paired("experiment=same", "accuracy").diff
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    # the unpaired seed 7 (far below) is not used: same difference as `higher`, over seeds 0, 1, 2
    extra = summary.paired("experiment=extra", "accuracy")
    assert extra.seeds == ("0", "1", "2")
    assert extra.diff == summary.paired("experiment=higher", "accuracy").diff
    assert summary.stats("experiment=extra", "accuracy").n == 4  # its own mean still has all four seeds
    # the radial scores follow the same construction
    assert summary.paired("experiment=higher", "fc1_invariance_r2").verdict == "higher"
    assert summary.paired("experiment=lower", "fc1_invariance_r2").verdict == "lower"


def test_summary_md_and_csv_show_intervals_and_verdicts(sweep):
    summary = summarize_sweep(sweep)
    md = (sweep / "summary.md").read_text()
    lab = t_interval(BASE_ACC.values())
    cell = f"{lab.mean:.4f} ± {lab.half:.4f} (95 % CI [{lab.low:.4f}, {lab.high:.4f}], n=3)"
    assert f"| `experiment=lab` | 3 | 0, 1, 2 | {cell} |" in md
    assert "## Paired differences to the baseline `experiment=lab`" in md
    assert "difference to `experiment=lab` (95 % CI) | verdict vs `experiment=lab` |" in md
    assert "| `experiment=higher` | accuracy | 0, 1, 2 | +0.1000 ± " in md
    assert "| `experiment=same` | accuracy | 0, 1, 2 | +0.0000 ± 0.0000 (95 % CI [+0.0000, +0.0000], n=3) | " \
           "no detectable difference |" in md
    assert "| `experiment=extra` | accuracy | 0, 1, 2 | +0.1000 ± " in md  # seed 7 is not a shared seed
    assert f"| `experiment=other_seeds` | all | none | n/a | {NEEDS_SEEDS} |" in md
    assert f"| `experiment=single` | all | 0 | n/a | {NEEDS_SEEDS} |" in md
    # broken and missing jobs are listed as before
    assert "## Jobs without usable results" in md
    assert "broken results.json" in md and "no results.json" in md and len(summary.broken) == 2

    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == len(summary.rows) + 2  # one per job, the two unusable ones included
    lab_rows = [r for r in rows if r["config"] == "experiment=lab"]
    assert len(lab_rows) == 3 and all(r["baseline"] == "experiment=lab" for r in rows if not r["problem"])
    for r in lab_rows:
        assert float(r["accuracy_mean"]) == pytest.approx(lab.mean, abs=1e-12)
        assert float(r["accuracy_ci_low"]) == pytest.approx(lab.low, abs=1e-12)
        assert float(r["accuracy_ci_high"]) == pytest.approx(lab.high, abs=1e-12)
        assert r["accuracy_n"] == "3" and r["accuracy_verdict"] == ""  # the baseline has no difference to itself
    higher = next(r for r in rows if r["config"] == "experiment=higher")
    assert float(higher["accuracy_diff_mean"]) == pytest.approx(0.1, abs=1e-12)
    assert float(higher["accuracy_diff_ci_low"]) > 0 and higher["accuracy_diff_n"] == "3"
    assert higher["accuracy_verdict"] == "higher"
    assert higher["fc1_invariance_r1_verdict"] == "higher"
    single = next(r for r in rows if r["config"] == "experiment=single")
    assert single["accuracy_n"] == "1" and single["accuracy_ci_low"] == ""
    assert single["accuracy_verdict"] == NEEDS_SEEDS
    assert float(single["accuracy_within_ci_low"]) == pytest.approx(0.97 - 1.959963984540054 * 0.002)


def test_single_seed_shows_within_run_figures_and_says_seeds_are_missing(sweep):
    summarize_sweep(sweep)
    md = (sweep / "summary.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| `experiment=single`"))
    assert f"| 1 | 0 ({ONE_SEED}) |" in line
    assert ONE_SEED == "1 seed: no interval over seeds; run seed=0,1,2"
    lo, hi = 0.97 - 1.959963984540054 * 0.002, 0.97 + 1.959963984540054 * 0.002  # accuracy ± 1.96 se
    assert f"| 0.9700 (within-run 95 % CI [{lo:.4f}, {hi:.4f}]) |" in line
    assert "(within-run 95 % CI [0.800, 0.840])" in line  # fc1 r=1 from its invariance_score_ci
    assert "Configurations with one seed (`experiment=single`)" in md


def test_plot_has_interval_bands(sweep):
    from matplotlib.collections import PolyCollection

    summary = summarize(sweep)
    xs, means, lows, highs = radial_band(summary, "experiment=lab", "fc1", "invariance_score")
    assert xs == [0, 1, 2]
    values = [block(translation(job.results), "radius", 2)["fc1"]["invariance_score"]
              for job in summary.configs["experiment=lab"]]
    iv = t_interval(values)
    assert (means[2], lows[2], highs[2]) == pytest.approx((iv.mean, iv.low, iv.high), abs=1e-12)
    # one seed: the band is the run's own interval where results.json has one, none elsewhere
    _, _, s_lows, s_highs = radial_band(summary, "experiment=single", "fc1", "invariance_score")
    assert (s_lows[1], s_highs[1]) == (0.80, 0.84) and s_lows[2] is None

    out = sweep / "plots"
    summarize_sweep(sweep, out)
    assert (out / "summary_radial.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from shiftprobe.reporting.sweep_summary import plot_comparison

    fig = plot_comparison(summary, out / "again.png")
    bands = [c for c in fig.axes[2].collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(summary.configs)  # every configuration has a band on the fc1 panel


# --------------------------------------------------------------------------- --baseline and the script


def test_baseline_selection(sweep):
    summary = summarize_sweep(sweep, baseline="experiment=higher")
    assert summary.baseline == "experiment=higher"
    assert summary.paired("experiment=lab", "accuracy").verdict == "lower"
    assert summary.paired("experiment=extra", "accuracy").verdict == "no detectable difference"
    md = (sweep / "summary.md").read_text()
    assert "## Paired differences to the baseline `experiment=higher`" in md
    assert "| `experiment=lab` | accuracy | 0, 1, 2 | -0.1000 ± " in md
    assert "| `experiment=higher` | accuracy |" not in md
    assert summarize(sweep, baseline="`experiment=same`").baseline == "experiment=same"  # as printed in the table
    with pytest.raises(UnknownBaseline, match='"experiment=lab", "experiment=higher"'):
        summarize(sweep, baseline="experiment=nope")


def test_script_with_baseline_runs(sweep):
    script = str(ROOT / "scripts" / "summarize.py")
    proc = subprocess.run([sys.executable, script, str(sweep), "--baseline", "experiment=same"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "paired differences against the baseline 'experiment=same'" in proc.stdout
    assert "## Paired differences to the baseline `experiment=same`" in proc.stdout
    assert "| `experiment=higher` | accuracy | 0, 1, 2 | +0.1000 ± " in proc.stdout and "| higher |" in proc.stdout
    assert "skipped" in proc.stdout  # the broken and the missing job


def test_script_unknown_baseline_is_a_clear_error(sweep, capsys):
    spec = importlib.util.spec_from_file_location("summarize_script", ROOT / "scripts" / "summarize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # in-process: the subprocess above already checks the command line
    assert script.main([str(sweep), "--baseline", "experiment=nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is no configuration of this sweep" in err and "experiment=lab" in err
    assert not (sweep / "summary.md").exists()  # nothing written on a wrong baseline
