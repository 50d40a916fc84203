"""DDP on the CPU (``trainer=ddp_cpu``: 2 processes, gloo): training, testing and the measurement make
one run directory and one results.json, whose figures equal a single process's to 1e-5.

Training under DDP differs from one process (2 ranks, averaged gradients, other batches), so the
single-process reference measures the same weights: ``eval.py`` on the DDP run's best checkpoint
(trained weights and the stored initial weights).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, test_overrides

TIMING_KEYS = {"seconds", "seconds_total"}


def assert_same_numbers(a, b, path="results"):
    """Every value of ``a`` equals ``b`` (numbers to 1e-5), timing keys left out."""
    if isinstance(a, dict):
        assert set(a) - TIMING_KEYS == set(b) - TIMING_KEYS, path
        for key in set(a) - TIMING_KEYS:
            assert_same_numbers(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(u, v, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-5, (path, a, b)
    else:
        assert a == b, (path, a, b)


def run_cli(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def single_run_dir(log_dir: Path) -> Path:
    runs = [p for p in (log_dir / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    assert len(list(log_dir.rglob("results.json"))) == 1
    return runs[0]


@pytest.mark.slow
def test_ddp_cpu_one_run_dir_and_single_process_figures(mnist_root, tmp_path):
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
    single = json.loads((single_run_dir(one_logs) / "results.json").read_text())
    assert single["n_images"] == ddp["n_images"] > 0 and "untrained" in ddp
    assert_same_numbers(ddp, single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp_logs", "single_logs"]  # nothing else written
