"""Checkpoints: ``BestAndLastCheckpoint``, ``InterruptCheckpoint`` and ``AtomicCheckpointIO``."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from shiftprobe.atomic import atomic_write
from shiftprobe.errors import ShiftProbeError, WriteError

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """The trainer's checkpoint I/O (``train.py``, ``eval.py``). Every load (resume, test) uses
    ``weights_only=not trusted`` whatever the caller asks (``trusted``: ``trust_checkpoint=true``):
    Lightning passes ``weights_only=None`` to ``torch.load``, which may then unpickle
    (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, an older torch) and so run code stored in the file. Local saves
    are atomic (``shiftprobe.atomic.atomic_write``: a full or read-only disk raises a one-line ``WriteError``
    and leaves the previous checkpoint whole); remote (``scheme://``) paths are saved by Lightning's code."""

    def __init__(self, trusted: bool = False):
        super().__init__()
        self.trusted = bool(trusted)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=not self.trusted, **kwargs)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path) as fh:
            torch.save(checkpoint, fh)


class InterruptCheckpoint(Callback):
    """Save the full training state as ``<dirpath>/<filename>.ckpt`` (default ``last``) when fitting stops
    on Ctrl-C or a crash after an optimizer step, not on a ``ShiftProbeError`` (divergence, bad settings);
    a plain ``Callback``, so ``fit(ckpt_path=None)`` never resumes silently."""

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
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except WriteError as err:  # the disk: the run's own error goes on, the last good last.ckpt stays
            log.warning("run stopped (%s), but its state could not be saved: %s", type(exception).__name__, err)
            return
        log.info("run stopped (%s): saved %s; resume with ckpt_path=%s", type(exception).__name__,
                 self.ckpt_path, self.ckpt_path)


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is written at every save point, whether or not the monitored
    value improved (Lightning 2.5 refreshes it only with a top-k save, so resuming repeated epochs)."""

    def _refresh_last(self, trainer) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
