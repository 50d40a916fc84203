"""A test-only callback (imported by ``train.py`` subprocesses through PYTHONPATH=tests): slows every
training batch down and writes a marker file when batch ``at`` starts, so a test can interrupt a run
reliably in the middle of an epoch."""

import time
from pathlib import Path

import lightning as L


class SlowSteps(L.Callback):
    def __init__(self, marker: str, at: int = 10, seconds: float = 0.02):
        self.marker, self.at, self.seconds = Path(marker), int(at), float(seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.at:
            self.marker.write_text(str(trainer.global_step))
        time.sleep(self.seconds)
