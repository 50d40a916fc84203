"""Test-only: send this process SIGTERM at a known point of a run, no timing involved (imported by
``train.py`` / ``eval.py`` subprocesses through PYTHONPATH=tests, and by in-process tests).

``SigtermAt(stage="train", at=k)``: when training batch ``k`` starts; ``stage="test"``: test batch
``k``; ``stage="measure"``: from a measurement worker thread, during the ``k``-th measured batch
(``PairComputer.batch_updates``), every measured batch appending one line to ``count_file``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def counting_batches(original, at: int, count_file: str | None = None, calls: list | None = None):
    """``PairComputer.batch_updates`` that counts its calls (in ``calls`` and/or ``count_file``) and sends
    SIGTERM during call number ``at`` (1-based)."""
    calls = [] if calls is None else calls

    def batch_updates(self, *args, **kwargs):
        calls.append(1)
        if count_file:
            with open(count_file, "a", encoding="ascii") as fh:
                fh.write("batch\n")
        if len(calls) == at:
            sigterm()
        return original(self, *args, **kwargs)

    return batch_updates


class SigtermAt(L.Callback):
    def __init__(self, stage: str, at: int = 1, count_file: str | None = None):
        self.stage, self.at, self.count_file = stage, int(at), count_file

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.stage == "measure":  # the subprocess ends with the run: the patch is never undone
            from shiftprobe.probe.pairs import PairComputer

            PairComputer.batch_updates = counting_batches(PairComputer.batch_updates, self.at, self.count_file)
            if self.count_file:
                Path(self.count_file).write_text("")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.stage == "train" and batch_idx == self.at:
            sigterm()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.stage == "test" and batch_idx == self.at:
            sigterm()
