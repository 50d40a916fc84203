"""A run that ends with an error before it starts leaves no folder under outputs/runs/ (a multirun
keeps its job folders: the sweep summary lists broken jobs)."""

import os
import subprocess
import sys

from conftest import ROOT

from shiftprobe.app.run_dir import only_hydra_files as _only_hydra_files


def train_py(tmp_path, *args):
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=env,
    )


def test_bad_value_leaves_no_run_folder(tmp_path):
    runs = tmp_path / "outputs" / "runs"
    (runs / "2024-01-01" / "10-00-00").mkdir(parents=True)  # an earlier run of another day: kept
    (runs / "2024-01-01" / "10-00-00" / "results.json").write_text("{}")
    proc = train_py(tmp_path, "optimizer.lr=-1", f"hydra.run.dir={runs / '2024-01-02' / '11-00-00'}")
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: optimizer.lr=-1 is not allowed: use a positive number, e.g. optimizer.lr=1e-3."
    ]
    assert sorted(p.name for p in runs.iterdir()) == ["2024-01-01"]  # the new run and its day folder are gone
    assert (runs / "2024-01-01" / "10-00-00" / "results.json").is_file()


def test_multirun_keeps_the_broken_jobs_folder(tmp_path):
    sweep = tmp_path / "multirun"
    proc = train_py(tmp_path, "-m", "optimizer.lr=-1", f"hydra.sweep.dir={sweep}")
    assert (sweep / "0" / ".hydra").is_dir(), proc.stderr[-2000:]


def test_only_hydra_files(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "train.log").write_text("")
    (run / "tensorboard" / "version_0").mkdir(parents=True)  # an empty logger folder
    assert _only_hydra_files(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not _only_hydra_files(run)
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "results.json").write_text("{}")
    assert not _only_hydra_files(run)
