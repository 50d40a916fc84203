"""DDP on the CPU (``trainer=ddp_cpu``: 2 processes, gloo): training, testing and the measurement make
one run directory and one results.json, whose figures equal a single process's to 1e-5; test/acc
counts each test image once (an odd number of them: no rank pads its share); a run that diverges on
one rank stops every rank at the same step with one error line.

Training under DDP differs from one process (2 ranks, averaged gradients, other batches), so the
single-process reference measures the same weights: ``eval.py`` on the DDP run's best checkpoint
(trained weights and the stored initial weights).
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, test_overrides, write_synthetic_mnist

TIMING_KEYS = {"seconds", "seconds_total"}


def assert_same_numbers(a, b, path="results"):
    """Every value of ``a`` equals ``b`` (numbers to 1e-6 relative, standard errors and intervals
    included), timing keys left out."""
    if isinstance(a, dict):
        assert set(a) - TIMING_KEYS == set(b) - TIMING_KEYS, path
        for key in set(a) - TIMING_KEYS:
            assert_same_numbers(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(u, v, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6 * max(1.0, abs(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def run_cli(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def logged(run: Path, key: str) -> float:
    """The one value of ``key`` in the run's CSV log (``<run>/csv/metrics.csv``)."""
    with (run / "csv" / "metrics.csv").open() as fh:
        values = [float(row[key]) for row in csv.DictReader(fh) if row.get(key)]
    assert len(values) == 1, (key, values)
    return values[0]


def single_run_dir(log_dir: Path) -> Path:
    runs = [p for p in (log_dir / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    assert len(list(log_dir.rglob("results.json"))) == 1
    return runs[0]


@pytest.mark.slow
def test_ddp_cpu_one_run_dir_and_single_process_figures(tmp_path_factory, tmp_path):
    # 201 test images: 101 on rank 0, 100 on rank 1; a padding sampler would count one image twice
    mnist_root = write_synthetic_mnist(tmp_path_factory.mktemp("mnist_odd"), n_test=201)
    base = [
        a
        for a in test_overrides(mnist_root, tmp_path)
        if not a.startswith(("paths.output_dir", "callbacks=", "+trainer.enable_progress_bar"))
    ]
    probe = ["callbacks=[model_checkpoint,shift_probe]", "callbacks.shift_probe.figures=false"]
    probe += ["callbacks.shift_probe.progress=false"]
    ddp_logs = tmp_path / "ddp_logs"
    # the run directory comes from Hydra's ${now:...} pattern, as in a real run: both ranks must use it
    run_cli(
        "train.py",
        [*base, *probe, "trainer=ddp_cpu", "+trainer.limit_train_batches=3", f"paths.log_dir={ddp_logs}"],
        cwd=tmp_path,
    )
    ddp_run = single_run_dir(ddp_logs)
    assert (ddp_run / "checkpoints" / "best.ckpt").is_file()
    ddp = json.loads((ddp_run / "results.json").read_text())

    one_logs = tmp_path / "single_logs"
    run_cli(
        "eval.py",
        [*base, *probe, "trainer=cpu", f"ckpt_path={ddp_run}/checkpoints/best.ckpt", f"paths.log_dir={one_logs}"],
        cwd=tmp_path,
    )
    one_run = single_run_dir(one_logs)
    single = json.loads((one_run / "results.json").read_text())
    sec = ddp["families"]["translation"]
    assert single["families"]["translation"]["n_images"] == sec["n_images"] == 201 and "untrained" in sec
    # test/acc under DDP counts each test image once: it equals one process's and results.json's
    assert logged(ddp_run, "test/acc") == pytest.approx(logged(one_run, "test/acc"), abs=1e-6)
    assert logged(ddp_run, "test/acc") == pytest.approx(sec["accuracy"], abs=1e-6)
    assert logged(ddp_run, "test/loss") == pytest.approx(logged(one_run, "test/loss"), rel=1e-5)
    assert_same_numbers(ddp, single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp_logs", "single_logs"]  # nothing else written


#: rank 1 alone gets a NaN loss at batch 1 (its weights set to NaN); rank 0's loss is fine
NAN_ON_RANK_1 = ["+callbacks.nan._target_=rank_faults.NanWeightsOnRank", "+callbacks.nan.rank=1"]


def run_ddp(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``train.py trainer=ddp_cpu *args`` -> (exit status, stdout, stderr); a hang fails the test."""
    python_path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONPATH": python_path}
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "trainer=ddp_cpu"]
    # a session of its own: on a hang, the timeout ends both ranks, not just the launching one
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, **pipes)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("a DDP run that diverged on one rank hung")
    return proc.returncode, out, err


def error_lines(text: str) -> list[str]:
    return [line[line.index("error: ") :] for line in text.splitlines() if "error: " in line]


@pytest.mark.slow
def test_ddp_cpu_divergence_on_one_rank_stops_every_rank_with_one_error_line(mnist_root, tmp_path):
    """Both ranks stop at the step where rank 1 diverged: one ``error:`` line, exit status 1, no
    traceback (before, rank 1 raised alone and rank 0 died in the gradient all-reduce with gloo's
    "Connection closed by peer")."""
    args = [a for a in test_overrides(mnist_root, tmp_path) if not a.startswith("paths.output_dir")]
    run = tmp_path / "run"
    rc, _, err = run_ddp([*args, *NAN_ON_RANK_1, "+callbacks.nan.at=1", f"hydra.run.dir={run}"], tmp_path)
    assert rc == 1 and "Traceback" not in err and "Error executing job" not in err, err[-3000:]
    errors = error_lines(err)
    assert len(errors) == 1 and errors[0].startswith("error: training diverged"), err[-3000:]
    assert "nan (the worst of the 2 processes) at step 1 (epoch 0, batch 1)" in errors[0]
    assert not (run / "checkpoints" / "last.ckpt").exists() and not list(tmp_path.rglob("results.json"))


@pytest.mark.slow
def test_ddp_cpu_sweep_goes_on_after_a_job_diverges_on_one_rank(mnist_root, tmp_path):
    """In a sweep, rank 1 runs the same jobs in step (Lightning starts it with the sweep's command
    line): after job 0 diverges on rank 1, both ranks must go on to job 1, which trains and tests."""
    args = [a for a in test_overrides(mnist_root, tmp_path) if not a.startswith("paths.output_dir")]
    sweep = tmp_path / "sweep"
    at = "+callbacks.nan.at=1,1000"  # job 1: after the last batch, so it never fires
    args += ["+trainer.limit_train_batches=3", *NAN_ON_RANK_1, at, f"hydra.sweep.dir={sweep}"]
    rc, out, err = run_ddp(["-m", *args], tmp_path)
    assert rc == 0 and "Traceback" not in err, err[-3000:]
    errors = error_lines(out + err)
    assert len(errors) == 1 and errors[0].startswith("error: training diverged"), (out + err)[-3000:]
    assert logged(sweep / "1", "test/acc") > 0
