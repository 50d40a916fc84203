"""``InterruptCheckpoint``: Lightning's ``OnExceptionCheckpoint``, writing ``last.ckpt`` when a fit stops.

Ctrl-C (SIGINT) or a crash during ``trainer.fit`` saves the full training state (weights, optimizer,
loop progress mid-epoch, the data order) as ``<run>/checkpoints/last.ckpt``; ``ckpt_path=`` that file
resumes the run where it stopped. Two differences from Lightning's callback: the file is kept after a
successful run (it is also ModelCheckpoint's ``last.ckpt``; Lightning's callback deletes its file at
teardown), and nothing is saved when there is nothing worth resuming: outside fitting, before the first
optimizer step, or when the run diverged or was stopped for bad settings (``ShiftProbeError``).
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from shiftprobe.errors import ShiftProbeError

log = logging.getLogger(__name__)


class InterruptCheckpoint(OnExceptionCheckpoint):
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, ShiftProbeError):
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return
        super().on_exception(trainer, pl_module, exception)
        log.info(
            "run stopped (%s): saved %s; resume with ckpt_path=%s",
            type(exception).__name__,
            self.ckpt_path,
            self.ckpt_path,
        )

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Keep the file (Lightning's callback removes it after a successful run)."""
