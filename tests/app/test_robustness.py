"""Robustness: reproducible results.json, Ctrl-C mid-epoch then resume, divergence with every callback.

Broken / truncated MNIST files and the divergence message itself are tested in test_data.py and
test_train.py.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import N_TRAIN, ROOT, VAL_SIZE, compose_config, test_overrides

from shiftprobe.app.train import train
from shiftprobe.errors import ShiftProbeError

TIMING_KEYS = ("seconds", "seconds_total")


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def cfg_with_callbacks(mnist_root, out: Path, callbacks: str, *extra: str):
    overrides = [o if not o.startswith("callbacks=") else f"callbacks={callbacks}" for o in test_overrides(mnist_root, out)]
    return compose_config("train", overrides + list(extra), out)


PROBE_FAST = ("callbacks.shift_probe.figures=false", "callbacks.shift_probe.progress=false", "shift=small")


def test_same_seed_twice_same_results_json(mnist_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(cfg_with_callbacks(mnist_root, out, "[model_checkpoint,shift_probe]", "+trainer.limit_train_batches=5", *PROBE_FAST))
        runs.append(json.loads((out / "results.json").read_text()))
    assert "untrained" in runs[0]["families"]["translation"] and runs[0]["families"]["translation"]["groups"]["param"]
    assert without_timing(runs[0]) == without_timing(runs[1])


def test_divergence_saves_no_checkpoint_with_every_callback(mnist_root, tmp_path):
    out = tmp_path / "run"
    # the default callbacks but the progress bar (the test settings turn it off)
    cfg = cfg_with_callbacks(mnist_root, out, "[model_checkpoint,on_exception,lr_monitor,shift_probe]", "optimizer.lr=1e3", *PROBE_FAST)
    assert "on_exception" in cfg.callbacks
    with pytest.raises(ShiftProbeError, match="diverged"):
        train(cfg)
    assert not list(out.glob("checkpoints/*.ckpt"))  # no NaN weights to resume from
    assert not (out / "results.json").exists()


def read_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def interruptible_by_ctrl_c() -> None:
    """``preexec_fn`` of a child that must stop on SIGINT: from a background job (``cmd &``, CI runners)
    SIGINT arrives ignored (SIG_IGN) and a child inherits that, so Python would not install its
    KeyboardInterrupt handler. Restoring the default here makes the child's Python install it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_leaves_last_ckpt_that_resumes(mnist_root, tmp_path):
    batch = 4
    steps_per_epoch = (N_TRAIN - VAL_SIZE) // batch  # 125
    common = [a for a in test_overrides(mnist_root, tmp_path) if not a.startswith(("paths.output_dir", "callbacks="))]
    common += [f"data.batch_size={batch}", "callbacks=[model_checkpoint,on_exception,shift_probe]", *PROBE_FAST]
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONPATH": str(ROOT / "tests")}
    first, marker = tmp_path / "first", tmp_path / "mid_epoch"
    slow = [
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        f"+callbacks.slow.marker={marker}",
        "+callbacks.slow.at=10",
    ]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *common, *slow, f"hydra.run.dir={first}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=interruptible_by_ctrl_c,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), (tmp_path / "first.log").read_text()[-2000:]
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=60)
    log.close()
    assert proc.returncode != 0  # interrupted, not finished
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_file(), (tmp_path / "first.log").read_text()[-2000:]
    assert not (first / "results.json").exists()
    ckpt = read_ckpt(last)
    done = ckpt["MNISTDataModule"]["batches_done"]
    assert ckpt["epoch"] == 0 and 10 <= ckpt["global_step"] < steps_per_epoch  # mid-epoch
    assert done == ckpt["global_step"] and "loops" in ckpt and "optimizer_states" in ckpt

    second = tmp_path / "second"
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *common, f"ckpt_path={last}", f"hydra.run.dir={second}"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (second / "results.json").is_file()
    # the epoch was finished, not restarted: exactly one epoch of optimizer steps in all
    assert read_ckpt(second / "checkpoints" / "last.ckpt")["global_step"] == steps_per_epoch
    assert "ended before the epoch ended" not in resumed.stderr  # the data order resumes exactly
