"""``shiftprobe.app.run_lock``: one run per run folder. A second run into a locked folder ends with one
line before Hydra writes into it; only the process that starts the run locks; a run folder that cannot
be written ends with one line (root ignores permissions: simulated, and the real chmod case runs for
other users)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from hydra.types import RunMode
from omegaconf import OmegaConf

from shiftprobe.app import run_lock
from shiftprobe.app.preflight import RANK_VARIABLES


@pytest.fixture
def first_process(monkeypatch):
    """This process starts the run (no launcher's rank in the environment)."""
    for name in (*RANK_VARIABLES, "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)


# -- the run-folder lock ------------------------------------------------------------------------------
def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``<folder>/.lock`` (with its pid inside) until its stdin closes."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def let_go(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def run_config(folder: Path):
    return OmegaConf.create({"hydra": {"run": {"dir": str(folder)}, "runtime": {"output_dir": str(folder)}}})


def test_a_second_run_into_a_locked_folder_is_refused_with_one_line(tmp_path, capsys, first_process):
    folder = tmp_path / "run"
    other = hold_lock(folder)
    try:
        with pytest.raises(SystemExit) as stop:
            run_lock.RunFolderLock().on_run_start(run_config(folder))
        assert stop.value.code == 1
        assert capsys.readouterr().err.splitlines() == [
            f"error: the run folder {folder} is in use by another run (pid {other.pid}); choose another hydra.run.dir"
        ]
    finally:
        let_go(other)
    lock = run_lock.RunFolderLock()
    lock.on_run_start(run_config(folder))  # the other run ended: its lock went with it
    try:
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
        probe = os.open(folder / ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):  # held now by this process
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        lock.on_run_end(run_config(folder))
    assert str(folder) not in run_lock._held


def test_only_the_first_process_locks(tmp_path, monkeypatch, first_process):
    """The other processes of a DDP run share the folder; a multirun job locks its own while it runs."""
    folder = tmp_path / "run"
    other = hold_lock(folder)
    try:
        monkeypatch.setenv("LOCAL_RANK", "1")
        run_lock.RunFolderLock().on_run_start(run_config(folder))  # no exit: rank 1 does not lock
        monkeypatch.delenv("LOCAL_RANK")
        monkeypatch.setenv("NODE_RANK", "1")
        run_lock.RunFolderLock().on_run_start(run_config(folder))
    finally:
        let_go(other)
    monkeypatch.delenv("NODE_RANK")
    job = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(tmp_path / "sweep" / "0")}}})
    run_lock.RunFolderLock().on_job_start(job)
    assert str(tmp_path / "sweep" / "0") in run_lock._held
    run_lock.RunFolderLock().on_job_end(job, None)
    assert str(tmp_path / "sweep" / "0") not in run_lock._held


@pytest.mark.slow
def test_train_py_into_a_locked_folder_writes_nothing_there(tmp_path):
    folder = tmp_path / "run"
    other = hold_lock(folder)
    try:
        env = {k: v for k, v in os.environ.items() if k not in (*RANK_VARIABLES, "NODE_RANK")}
        env.update(PROJECT_ROOT=str(ROOT))
        # optimizer.lr=-1: were the folder not refused, the settings check would end the run at once
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={folder}", "optimizer.lr=-1"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        let_go(other)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"error: the run folder {folder} is in use by another run (pid {other.pid}); choose another hydra.run.dir"
    ]
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # no .hydra/, no train.log of its own


# -- a run folder that cannot be written ------------------------------------------------------------
@pytest.mark.parametrize("where", ["the folder", "its parent"])
def test_an_unwritable_run_folder_is_one_line(tmp_path, capsys, monkeypatch, first_process, where):
    folder = tmp_path / "ro" / "run"
    if where == "the folder":  # the folder exists, its files cannot be created
        folder.mkdir(parents=True)

        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(run_lock.os, "open", refuse)
        reason = "Permission denied"
    else:  # a read-only file system: the folder cannot be created

        def read_only(self, *args, **kwargs):
            raise OSError(30, "Read-only file system", str(self))

        monkeypatch.setattr(Path, "mkdir", read_only)
        reason = "Read-only file system"
    with pytest.raises(SystemExit) as stop:
        run_lock.RunFolderLock().on_run_start(run_config(folder))
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: the run folder {folder} cannot be written ({reason}): make it writable or choose another hydra.run.dir"
    ]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: simulated above")
def test_train_py_into_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={folder}", "optimizer.lr=-1"],
                              env={**os.environ, "PROJECT_ROOT": str(ROOT)}, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"error: the run folder {folder} cannot be written (Permission denied): make it writable or choose "
        f"another hydra.run.dir"
    ]


def test_a_fresh_training_run_into_a_folder_with_an_earlier_runs_checkpoints_is_one_line(tmp_path, capsys, first_process):
    """Lightning wrote best-v1.ckpt beside the earlier run's best.ckpt (eval.py of best.ckpt: the earlier
    model) and the results over the earlier run's; a resume (ckpt_path) and eval.py (no train key) go on."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"earlier")

    def config(**top):
        cfg = run_config(folder)
        cfg.merge_with(top)
        return cfg

    lock = run_lock.RunFolderLock()
    with pytest.raises(SystemExit) as stop:
        lock.on_run_start(config(train=True, ckpt_path=None))
    assert stop.value.code == 1 and str(folder) not in run_lock._held
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: the run folder {folder} holds the checkpoints of an earlier run")
    assert "best.ckpt" in err[0] and "choose another hydra.run.dir" in err[0]
    for fine in (config(train=True, ckpt_path=str(folder / "checkpoints" / "best.ckpt")), config(ckpt_path="x")):
        lock.on_run_start(fine)
        lock.on_run_end(fine)
