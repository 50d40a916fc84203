"""scripts/summarize.py on a fake sweep folder, including a broken and a missing job."""

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from results_factory import make_fake_results, translation
from sweep_jobs import write_job

from shiftprobe.reporting.sweep_summary import summarize_sweep

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "multirun" / "2026-11-24" / "12-00-00"
    num = 0
    for exp, slope in (("lab", 0.12), ("augmented", 0.05)):
        for seed in (0, 1):
            res = make_fake_results(max_shift=2, slope=slope, seed=seed)
            translation(res)["accuracy"] = 0.98 + 0.001 * seed
            write_job(s, num, [f"experiment={exp}", f"seed={seed}"], res)
            num += 1
    write_job(s, num, ["experiment=blurpool", "seed=0"], "{not json")
    write_job(s, num + 1, ["experiment=blurpool", "seed=1"], None)
    return s


def test_summary_groups_by_config_and_lists_broken_jobs(sweep):
    summary = summarize_sweep(sweep)
    assert set(summary.configs) == {"experiment=lab", "experiment=augmented"}
    assert all(len(jobs) == 2 for jobs in summary.configs.values())
    assert len(summary.broken) == 2
    md = (sweep / "summary.md").read_text()
    assert "experiment=lab" in md and "experiment=augmented" in md
    # accuracy over seeds 0.980 and 0.981: mean ± 95 % t half-width (12.706 * 0.000707 / sqrt(2))
    assert "0.9805 ± 0.0064 (95 % CI [0.9741, 0.9869], n=2)" in md
    assert "broken results.json" in md and "no results.json" in md
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 6
    lab = [r for r in rows if r["config"] == "experiment=lab"]
    aug = [r for r in rows if r["config"] == "experiment=augmented"]
    # the shallower slope means more invariance at radius 2: the table must follow the numbers
    assert float(aug[0]["fc1_invariance_r2"]) > float(lab[0]["fc1_invariance_r2"])
    assert (sweep / "summary_radial.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_runs_and_reports(sweep):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(sweep)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 job(s) summarised" in proc.stdout and "skipped" in proc.stdout


def test_script_missing_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def _old_file(name: str) -> dict:
    """A results.json of shiftprobe 0.2 (tests/reporting/data)."""
    return json.loads(gzip.decompress((ROOT / "tests" / "reporting" / "data" / f"{name}.json.gz").read_bytes()))


def test_old_files_are_read_and_columns_are_named_by_each_networks_layers(tmp_path):
    """0.2 results.json files summarise (migrated on reading); the figures are named by the layers each
    job's results declare: the foreign CNN's head input is `5`, its deepest stride-2 map `3`."""
    sweep = tmp_path / "multirun"
    old = _old_file("foreign")
    for seed in (0, 1):
        write_job(sweep, seed, ["experiment=foreign", f"seed={seed}"], old)
    summary = summarize_sweep(sweep)
    row = summary.rows[0]
    assert row["accuracy"] == old["accuracy"]
    assert row["3_aligned_even"] == old["parity"]["even"]["3"]["aligned_rel"]
    assert row["5_invariance_r1"] == next(r for r in old["radial"] if r["radius"] == 1)["5"]["invariance_score"]
    assert row["consistency"] == old["summary"]["output"]["consistency"]
    md = (sweep / "summary.md").read_text()
    assert "| 5 inv. r=1 |" in md and "| 3 aligned_rel even |" in md
    assert not any(name in md for name in ("conv1", "conv2", "fc1", "logits"))
    # with the lab net beside it, the heads differ: what enters each head, and each classifier
    write_job(sweep, 2, ["experiment=lab", "seed=0"], _old_file("lab_grid"))
    summarize_sweep(sweep)
    md = (sweep / "summary.md").read_text()
    assert "head input inv. r=1" in md and "(5, fc1 here)" in md and "classifier inv." in md


def test_a_torchvision_resnets_head_input_is_its_pooled_features():
    """The head-invariance columns read the first vector probe point that is not the classifier: for a
    ResNet, its pooled features ``avgpool`` (512 values, a vector although the module returns 512x1x1)."""
    import torch

    import shiftprobe
    from shiftprobe.models.zoo import torchvision_model
    from shiftprobe.reporting.sweep_summary import head_input_layer

    torch.manual_seed(0)
    net = torchvision_model("resnet18", in_channels=1, num_classes=10, small_input=True).eval()
    assert net.default_probe_layers[-2:] == ("avgpool", "fc")  # the spatial stages before them: test_zoo.py
    results = shiftprobe.measure(net, torch.rand(2, 1, 28, 28), layers=["conv1", "avgpool", "fc"],
                                 transform=shiftprobe.Translation(max_shift=1), examples=False, progress=False)
    section = results.families["translation"].data
    assert head_input_layer(section) == "avgpool"
    assert section["geometry"]["avgpool"]["shape"] == [512, 1, 1] and section["classifier"] == "logits"


def test_a_figure_only_one_of_several_seeds_has_says_n_1(tmp_path):
    """Two seeds, accuracy known for one: its cell is that seed's value and says n=1, not a bare value the
    table's n=2 would make read as the mean over both."""
    sweep = tmp_path / "multirun"
    for seed, acc in ((0, 0.9), (1, None)):
        res = make_fake_results(max_shift=2, seed=seed)
        translation(res)["accuracy"] = acc
        write_job(sweep, seed, ["experiment=lab", f"seed={seed}"], res)
    summarize_sweep(sweep)
    row = next(line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| `default`"))
    assert row.split("|")[2].strip() == "2" and row.split("|")[4].strip() == "0.9000 (n=1)"
