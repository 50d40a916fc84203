"""Faults (issue 18): a full disk and SIGTERM, through a whole run.

- A full disk (simulated: ``disk_faults.FullDisk``) ends in one ``error:`` line naming the folder; the
  checkpoints written before stay loadable, no temporary file and no partial results are left.
- SIGTERM stops a run as Ctrl-C does, in training, testing and measuring: exit status 143, the interrupt
  checkpoint resumes, no results are written, the measurement stops within the batches already queued.
  The signal is sent by the run itself at a known point (``term_signals``): no timing.

The run-folder lock and a folder that cannot be written: ``test_run_lock``; the signal handlers alone:
``test_interrupts``.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import disk_faults
import pytest
import torch
from conftest import ROOT, compose_config, test_overrides
from term_signals import counting_batches

from shiftprobe.app.train import run, train
from shiftprobe.probe import engine
from shiftprobe.probe.pairs import PairComputer

full_disk = disk_faults.full_disk  # the fixture
#: a quick measurement: 40 images in 20 batches, one network, no figures
QUICK_PROBE = (
    "shift=small", "callbacks.shift_probe.max_images=40", "callbacks.shift_probe.batch_size=2",
    "callbacks.shift_probe.untrained=false", "callbacks.shift_probe.progress=false",
)


def faults_cfg(mnist_root, out: Path, callbacks: str, *extra: str):
    overrides = [o for o in test_overrides(mnist_root, out) if not o.startswith("callbacks=")]
    return compose_config("train", [*overrides, f"callbacks={callbacks}", *extra], out)


def sigterm_at(stage: str, at: int) -> list[str]:
    return ["+callbacks.term._target_=term_signals.SigtermAt", f"+callbacks.term.stage={stage}", f"+callbacks.term.at={at}"]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


@pytest.fixture
def signals_restored():
    """A SIGTERM that reaches the test process unhandled fails the test instead of ending pytest; the
    handlers are restored afterwards (Lightning leaves SIGINT ignored after a KeyboardInterrupt)."""

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM was not handled by the run")

    old_term, old_int = signal.signal(signal.SIGTERM, unhandled), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, old_term)
    signal.signal(signal.SIGINT, old_int)


# -- a full disk ------------------------------------------------------------------------------------
def test_full_disk_in_training_is_one_line_and_keeps_the_good_checkpoints(mnist_root, tmp_path, capsys, full_disk):
    cfg = faults_cfg(mnist_root, tmp_path, "[model_checkpoint,on_exception]", "trainer.max_epochs=2",
                     "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "test=false")
    full_disk(capacity=500, only=".ckpt.tmp-", files_left=2)  # epoch 0's best.ckpt and last.ckpt fit
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    folder = tmp_path / "checkpoints"
    assert error_lines(err) == [line for line in err.splitlines() if line.strip()], err
    assert len(error_lines(err)) == 1 and f"in {folder} (No space left on device)" in err
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(folder / name, weights_only=True)
        assert state["epoch"] == 0 and state["global_step"] == 3
    assert temporaries(tmp_path) == []


def test_full_disk_after_results_json_leaves_no_partial_results(mnist_root, tmp_path, capsys, full_disk):
    cfg = faults_cfg(mnist_root, tmp_path, "[shift_probe]", "train=false", *QUICK_PROBE,
                     "callbacks.shift_probe.figures=false")
    full_disk(capacity=0, only="results.md.tmp-")  # results.json is written, then results.md fails
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 1
    assert len(error_lines(capsys.readouterr().err)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".md", ".png")) == []
    assert temporaries(tmp_path) == []


def test_a_loggers_full_disk_is_one_line_naming_the_run_folder(mnist_root, tmp_path, capsys, monkeypatch):
    """An OSError the project did not raise itself (Lightning's CSV logger) becomes the one line too."""
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # no file name: the run folder is named

    monkeypatch.setattr(_ExperimentWriter, "save", full)
    cfg = faults_cfg(mnist_root, tmp_path, "[model_checkpoint]", "+trainer.limit_train_batches=2",
                     "+trainer.limit_val_batches=1", "test=false")
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: no space left in {tmp_path} (No space left on device): free space on that disk or write "
        f"elsewhere (train.py / eval.py: hydra.run.dir=<another folder>)"
    ]


# -- SIGTERM ----------------------------------------------------------------------------------------
def test_sigterm_in_training_saves_a_resumable_last_ckpt(mnist_root, tmp_path, capsys, signals_restored):
    first, short = tmp_path / "first", ("test=false", "+trainer.limit_train_batches=8", "+trainer.limit_val_batches=1")
    cfg = faults_cfg(mnist_root, first, "[model_checkpoint,on_exception]", *short, *sigterm_at("train", 5))
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 143 and "stopped by SIGTERM" in capsys.readouterr().err
    last = first / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] == 5  # the state when the signal came

    second = tmp_path / "second"
    train(faults_cfg(mnist_root, second, "[model_checkpoint]", *short, f"ckpt_path={last}"))
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8  # the epoch ended


def test_sigterm_in_testing_stops_without_results(mnist_root, tmp_path, capsys, signals_restored):
    cfg = faults_cfg(mnist_root, tmp_path, "[shift_probe]", "train=false", *QUICK_PROBE, *sigterm_at("test", 1))
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 143 and "stopped by SIGTERM" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "results.md").exists()


def test_sigterm_in_the_measurement_stops_it_at_once(mnist_root, tmp_path, capsys, monkeypatch, signals_restored):
    """Before, Lightning only noted the SIGTERM and the measurement went on to the end (exit 0)."""
    calls: list = []
    monkeypatch.setattr(PairComputer, "batch_updates", counting_batches(PairComputer.batch_updates, 2, calls=calls))
    threads = 2
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = faults_cfg(mnist_root, tmp_path, "[shift_probe]", "train=false", *QUICK_PROBE)
        with pytest.raises(SystemExit) as stop:
            run(cfg, train)
    finally:
        torch.set_num_threads(old_threads)
    assert stop.value.code == 143 and "stopped by SIGTERM" in capsys.readouterr().err
    # batch 2 sent it; at most the batches queued then ran (2 consumed + 1 + QUEUED_PER_THREAD per thread) of 20
    assert 2 <= len(calls) <= 3 + engine.QUEUED_PER_THREAD * threads
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "results.md").exists()


@pytest.mark.slow
def test_eval_py_stops_on_sigterm_during_the_measurement(tmp_path):
    """The issue's case, through the entry point: ``eval.py ... max_images=...`` and SIGTERM while it
    measures. Before: it measured on and exited 0."""
    from conftest import write_synthetic_mnist

    import shiftprobe

    mnist = write_synthetic_mnist(tmp_path / "mnist")
    weights = tmp_path / "lab.pt"
    torch.save(shiftprobe.LabCNN().state_dict(), weights)
    count, run_dir = tmp_path / "measured_batches", tmp_path / "run"
    args = [a for a in test_overrides(mnist, run_dir) if not a.startswith(("callbacks=", "trainer.max_epochs"))]
    args += [f"ckpt_path={weights}", "callbacks=[shift_probe]", *QUICK_PROBE, "callbacks.shift_probe.figures=false",
             *sigterm_at("measure", 2), f"+callbacks.term.count_file={count}", f"hydra.run.dir={run_dir}"]
    python_path = os.pathsep.join(str(p) for p in (ROOT / "tests", ROOT / "src"))
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONPATH": python_path}
    done = subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 143, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "stopped by SIGTERM" in done.stderr
    assert not (run_dir / "results.json").exists() and not (run_dir / "results.md").exists()
    assert len(count.read_text().splitlines()) < 20  # it did not measure on to the end
