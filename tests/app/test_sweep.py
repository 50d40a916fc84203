"""Sweeps end to end: ``python train.py -m ...`` on the synthetic MNIST files, then ``scripts/summarize.py``.

Each sweep runs as a subprocess with 2 tiny jobs (3 training batches, 40 measured images, 5x5 shifts).
Checked: one folder per job under ``hydra.sweep.dir`` with its ``results.json`` and
``.hydra/overrides.yaml``; the summary lists both configurations; TensorBoard's HPARAMS data holds each
job's own settings and metrics; the joblib launcher runs the same; the Optuna sweeper receives the
``optimized_metric`` that ``train.py`` returns. Plugins that are not installed are skipped with the reason.
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, test_overrides

pytestmark = pytest.mark.slow


def has_plugin(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:  # no Hydra plugin installed at all
        return False


def sweep_args(mnist_root: Path, sweep_dir: Path, logger: str = "csv") -> list[str]:
    base = [a for a in test_overrides(mnist_root, sweep_dir)
            if not a.startswith(("paths.output_dir", "callbacks=", "logger="))]
    return [
        *base,
        f"logger={logger}",
        "callbacks=[model_checkpoint,shift_probe]",
        "callbacks.shift_probe.max_images=40",
        "callbacks.shift_probe.untrained=false",
        "callbacks.shift_probe.figures=false",
        "callbacks.shift_probe.progress=false",
        "shift=small",
        "+trainer.limit_train_batches=3",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # one torch thread per job: the jobs are tiny, and on a small, busy machine several threads per
    # process spin against each other (the README's advice for parallel jobs, too)
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done


def check_jobs(sweep_dir: Path, n_jobs: int, launcher_record: bool = True) -> list[list[str]]:
    """Every job folder 0..n-1 has its results.json (all 40 images) and overrides; returns the overrides."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == [str(i) for i in range(n_jobs)]
    overrides = []
    for job in jobs:
        results = json.loads((job / "results.json").read_text())["families"]["translation"]
        assert results["n_images"] == 40 and results["config"]["max_shift"] == 2
        assert (job / ".hydra" / "config.yaml").is_file()
        overrides.append(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
    if launcher_record:  # the basic sweeper writes it; Optuna writes optimization_results.yaml instead
        assert (sweep_dir / "multirun.yaml").is_file()
    return overrides


def summarize(sweep_dir: Path) -> tuple[str, list[dict]]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), str(sweep_dir)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with (sweep_dir / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert (sweep_dir / "summary_radial.png").is_file()
    return (sweep_dir / "summary.md").read_text(), rows


def hparams_of_run(run_dir: Path) -> tuple[dict, dict]:
    """(hparams, last value of each scalar) from a job's TensorBoard events, as the HPARAMS tab reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {}
    for key, value in data.session_start_info.hparams.items():
        hparams[key] = getattr(value, value.WhichOneof("kind"))
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    assert metric_tags <= set(scalars), metric_tags - set(scalars)  # every HPARAMS metric has real values
    return hparams, scalars


def test_basic_sweep_summary_and_tensorboard(mnist_root, tmp_path):
    sweep = tmp_path / "multirun"
    run_train(["-m", *sweep_args(mnist_root, sweep, logger="tensorboard"), "experiment=lab,blurpool"], cwd=tmp_path)
    overrides = check_jobs(sweep, 2)
    assert [o[-1] for o in overrides] == ["experiment=lab", "experiment=blurpool"]

    md, rows = summarize(sweep)
    assert sorted(r["config"] for r in rows) == ["experiment=blurpool", "experiment=lab"]
    assert "| `experiment=lab` | 1 |" in md and "| `experiment=blurpool` | 1 |" in md
    assert "Jobs without usable results" not in md

    # one `tensorboard --logdir <sweep>` shows both jobs; HPARAMS has each job's settings and metrics
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Runs()
    assert sorted(runs) == ["0/lab", "1/blurpool"]  # named by what ran (the task's name: the experiment's)
    lab, lab_scalars = hparams_of_run(sweep / "0" / "lab")
    blur, blur_scalars = hparams_of_run(sweep / "1" / "blurpool")
    assert (lab["choice.experiment"], lab["model.pool"], lab["task_name"]) == ("lab", "max", "lab")
    assert (blur["choice.experiment"], blur["model.pool"], blur["task_name"]) == ("blurpool", "blur", "blurpool")
    for scalars in (lab_scalars, blur_scalars):
        assert {"val/acc", "test/acc", "probe/fc1/invariance_score", "answer/fc1", "answer/conv2"} <= set(scalars)
        assert not any(tag.startswith("answer_untrained") for tag in scalars)  # untrained=false
        assert "hp_metric" not in scalars
    assert lab_scalars["probe/fc1/invariance_score"] != blur_scalars["probe/fc1/invariance_score"]


@pytest.mark.skipif(not has_plugin("hydra_joblib_launcher"),
                    reason="hydra-joblib-launcher is not installed (pip install -e '.[sweep]')")
def test_joblib_launcher_two_parallel_jobs(mnist_root, tmp_path):
    sweep = tmp_path / "multirun"
    run_train(["-m", *sweep_args(mnist_root, sweep), "seed=0,1", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2"], cwd=tmp_path)
    overrides = check_jobs(sweep, 2)
    assert [o[-1] for o in overrides] == ["seed=0", "seed=1"]
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    assert "JoblibLauncher" in multirun["hydra"]["launcher"]["_target_"]
    assert multirun["hydra"]["launcher"]["n_jobs"] == 2
    md, rows = summarize(sweep)
    assert sorted(r["seed"] for r in rows) == ["0", "1"]
    assert len({r["config"] for r in rows}) == 1  # the two seeds of one configuration: mean ± std
    assert "| 2 |" in md


@pytest.mark.skipif(not has_plugin("hydra_optuna_sweeper"),
                    reason="hydra-optuna-sweeper is not installed (pip install -e '.[sweep]')")
def test_optuna_sweeper_gets_the_optimized_metric_and_survives_a_failed_trial(mnist_root, tmp_path):
    sweep = tmp_path / "multirun"
    run_train([*sweep_args(mnist_root, sweep), "hparams_search=optuna", "optimized_metric=test/acc",
               "hydra.sweeper.n_trials=3", "hydra.sweeper.params={optimizer.lr:'choice(1000.0, 0.02)'}"],
              cwd=tmp_path)
    lrs, test_acc = {}, {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        lrs[job.name] = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"]
        if lrs[job.name] == 0.02:
            with (job / "csv" / "metrics.csv").open() as fh:
                test_acc[job.name] = [float(r["test/acc"]) for r in csv.DictReader(fh) if r.get("test/acc")][-1]
            assert (job / "results.json").is_file()
        else:  # lr 1000 diverges: the trial fails, and the search goes on
            assert "training diverged" in (job / "train.log").read_text()
            assert not (job / "results.json").exists()
    assert sorted(lrs) == ["0", "1", "2"] and set(lrs.values()) == {1000.0, 0.02}, lrs
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["optimizer.lr"] == 0.02
    assert best["best_value"] == pytest.approx(max(test_acc.values()))
