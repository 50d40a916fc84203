"""Keys no code reads are refused before anything runs (issue 13, item 9): one line naming the key and
the allowed ones; every shipped option still composes and passes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF_DIR, ROOT, compose_config

from shiftprobe.app.config_checks import check_known_keys
from shiftprobe.errors import ShiftProbeError


@pytest.mark.parametrize(
    "override, key",
    [
        ("+shift.rotation=15", "shift.rotation"),
        ("+model.depth=3", "model.depth"),
        ("+data.augment=true", "data.augment"),
        ("+optimizer.nesterov=true", "optimizer.nesterov"),
        ("+callbacks.shift_probe.max_imags=10", "callbacks.shift_probe.max_imags"),
    ],
)
def test_unknown_key_is_refused(override, key):
    cfg = compose_config("train", [override])
    with pytest.raises(ShiftProbeError, match=rf"{key} is not a setting") as err:
        check_known_keys(cfg)
    assert "Allowed keys:" in str(err.value)


@pytest.mark.parametrize(
    "override, closest",
    [
        ("+callbacks.shift_probe.max_imags=10", "callbacks.shift_probe.max_images"),
        ("+data.batch_sise=3", "data.batch_size"),
        ("+sead=5", "seed"),
        ("trainer.max_epoch=3", "trainer.max_epochs"),
    ],
)
def test_unknown_key_names_the_closest_one(override, closest):
    with pytest.raises(ShiftProbeError) as err:
        check_known_keys(compose_config("train", [override]))
    assert f"Did you mean {closest}? Allowed keys: " in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("group", ["model", "optimizer", "experiment", "debug", "trainer", "logger", "callbacks", "shift"])
def test_every_shipped_option_passes(group):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        check_known_keys(compose_config("train", [f"{group}={path.stem}"]))
    check_known_keys(compose_config("eval", ["ckpt_path=x.ckpt"]))


def test_train_py_ends_in_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "+shift.rotation=15", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: shift.rotation is not a setting"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_no_progress_bar_drops_the_progress_bar_callback():
    """``+trainer.enable_progress_bar=false`` with the default callbacks must not make Lightning refuse the run."""
    from lightning.pytorch.callbacks import ProgressBar

    from shiftprobe.app.train import instantiate_callbacks

    cfg = compose_config("train", ["+trainer.enable_progress_bar=false"])
    assert not any(isinstance(c, ProgressBar) for c in instantiate_callbacks(cfg))
    cfg = compose_config("train", [])
    assert any(isinstance(c, ProgressBar) for c in instantiate_callbacks(cfg))
