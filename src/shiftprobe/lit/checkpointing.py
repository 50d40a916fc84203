"""``InterruptCheckpoint``: write ``last.ckpt`` when a fit stops on an exception (Ctrl-C, a crash).

Ctrl-C (SIGINT) or a crash during ``trainer.fit`` saves the full training state (weights, optimizer,
loop progress mid-epoch, the data order) as ``<run>/checkpoints/last.ckpt``; ``ckpt_path=`` that file
resumes the run where it stopped. Nothing is saved when there is nothing worth resuming: outside
fitting, before the first optimizer step, or when the run diverged or was stopped for bad settings
(``ShiftProbeError``). The file is kept after a successful run (it is also ModelCheckpoint's
``last.ckpt``).

It does what Lightning's ``OnExceptionCheckpoint`` does, but is a plain ``Callback``, not a
``Checkpoint``. Lightning treats an ``OnExceptionCheckpoint`` as a fault-tolerance checkpoint:
``fit(ckpt_path=None)`` then means ``"last"``, so a run started in a directory that already holds a
``last.ckpt`` would silently resume from it (and every run warned twice about ``ckpt_path``), and
``test(ckpt_path="best")`` warned about several checkpoint callbacks. Here only ``ckpt_path=`` resumes.
"""

from __future__ import annotations

import logging
import os

from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerFn

from shiftprobe.errors import ShiftProbeError

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Save the full training state as ``<dirpath>/<filename>.ckpt`` when fitting stops on an exception.

    Parameters
    ----------
    dirpath
        The folder of the checkpoint (``<run>/checkpoints``).
    filename
        Its name without ``.ckpt`` (``last``: the file ModelCheckpoint also writes at each epoch end).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "last"):
        if not filename:
            raise ValueError(
                "callbacks.on_exception.filename is empty: use a file name without .ckpt, e.g. filename=last"
            )
        self.dirpath, self.filename = str(dirpath), str(filename)

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, ShiftProbeError):
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.ckpt_path)
        log.info(
            "run stopped (%s): saved %s; resume with ckpt_path=%s",
            type(exception).__name__,
            self.ckpt_path,
            self.ckpt_path,
        )
