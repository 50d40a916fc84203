"""A run prints no warning the user can do nothing about (Lightning's LeafSpec deprecation, the litlogger
tip, ``ckpt_path`` warnings caused by the interrupt checkpoint, the new run directory of a resume), and a
run started in a directory that holds a ``last.ckpt`` does not silently resume from it."""

import logging
import re
import warnings

import pytest
import torch
from conftest import compose_config, test_overrides

from shiftprobe.app.train import train
from shiftprobe.lit.module import INITIAL_STATE_KEY
from shiftprobe.lit.quiet import DropMessages, quiet_lightning

#: what must not be printed (each one was, before)
UNWANTED = (
    r"LeafSpec",
    r"ckpt_path",
    r"multiple `ModelCheckpoint`",
    r"The dirpath has changed",
    r"litlogger",
    r"`srun` command is available",
)
CALLBACKS = "callbacks=[model_checkpoint,on_exception,lr_monitor]"  # the default's checkpoints and monitor


class Lines(logging.Handler):
    """Keeps every message of one logger."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_and_record(mnist_root, out, *extra) -> tuple[list[str], list[str]]:
    """``train()`` with the default checkpoint callbacks; the warnings and Lightning's info lines it gave."""
    overrides = [o if not o.startswith("callbacks=") else CALLBACKS for o in test_overrides(mnist_root, out)]
    cfg = compose_config("train", [*overrides, "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
                                   "+trainer.limit_test_batches=1", *extra], out)
    lines = Lines()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.addHandler(lines)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            train(cfg)
    finally:
        rank_zero.removeHandler(lines)
    return [str(w.message) for w in seen], lines.messages


def test_a_run_and_its_resume_print_no_unactionable_warning(mnist_root, tmp_path):
    first, first_info = run_and_record(mnist_root, tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed, resumed_info = run_and_record(mnist_root, tmp_path / "resumed", f"ckpt_path={last}", "trainer.max_epochs=2")
    for text in first + resumed + first_info + resumed_info:
        for pattern in UNWANTED:
            assert not re.search(pattern, text), text
    assert any("Restoring states from the checkpoint" in m for m in resumed_info)  # Lightning's useful lines stay


def test_a_run_in_a_used_directory_starts_afresh(mnist_root, tmp_path):
    """Lightning resumed a fit with ``ckpt_path=None`` from an ``OnExceptionCheckpoint``'s file; only
    ``ckpt_path=`` resumes now."""
    run_and_record(mnist_root, tmp_path, "seed=0")
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    _, info = run_and_record(mnist_root, tmp_path, "seed=1")
    assert not any("Restoring states" in m and "last" in m for m in info), info
    newest = max(tmp_path.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    again = torch.load(newest, map_location="cpu", weights_only=True)
    assert again["global_step"] == first["global_step"] == 3
    weight = "conv1.weight"
    assert not torch.equal(again[INITIAL_STATE_KEY][weight], first[INITIAL_STATE_KEY][weight])  # seed 1's init


def test_quiet_lightning_is_targeted_and_idempotent():
    quiet_lightning()
    quiet_lightning()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, DropMessages) for f in logger.filters) == 1
    drop = DropMessages()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("💡 Tip: try installing [litlogger](...)",), None)
    keep = logging.LogRecord("x", logging.INFO, __file__, 1, "GPU available: %s", (False,), None)
    assert not drop.filter(record) and drop.filter(keep)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("The `srun` command is available on your system but is not used. HINT: ...", UserWarning,
                      stacklevel=1)
        warnings.warn("The number of training batches (3) is smaller than the logging interval", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["The number of training batches (3) is smaller than the logging interval"]


@pytest.fixture(autouse=True)
def _restore_warning_filters():
    """``quiet_lightning`` changes the process-wide filters; other tests see them as they were."""
    saved = warnings.filters[:]
    yield
    warnings.filters[:] = saved
