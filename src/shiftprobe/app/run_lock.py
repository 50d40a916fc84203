"""One run per run folder (docs/faults.md, "Two runs in one folder"): ``RunFolderLock``, a Hydra callback,
takes an exclusive ``fcntl.flock`` on ``<run folder>/.lock`` (the holder's pid inside) before Hydra writes
into the folder. Only the process that starts the run locks; each multirun job locks its own folder."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from shiftprobe.app.run_dir import LOCK_NAME
from shiftprobe.atomic import DISK_FULL, NOT_WRITABLE, make_folder
from shiftprobe.errors import ShiftProbeError

log = logging.getLogger(__name__)

#: errno values of file systems that do not support ``flock`` (the run goes on unlocked)
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
#: the folders this process holds, with the lock file's descriptor
_held: dict[str, int] = {}


def _folder_error(folder: Path, err: OSError) -> ShiftProbeError | None:
    """One line for a run folder that cannot take files (full, read-only, no permission), else None."""
    if err.errno not in DISK_FULL + NOT_WRITABLE:
        return None
    reason = os.strerror(err.errno)
    if err.errno in DISK_FULL:
        return ShiftProbeError(f"no space left in the run folder {folder} ({reason}): free space on that disk "
                               f"or choose another hydra.run.dir")
    return ShiftProbeError(f"the run folder {folder} cannot be written ({reason}): make it writable or "
                           f"choose another hydra.run.dir")


def _open_lock_file(folder: Path) -> int:
    """The folder's lock file, opened for reading and writing (the folder created)."""
    try:
        make_folder(folder)
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise _folder_error(folder, err) or err from None


def lock_run_folder(folder: str | os.PathLike) -> bool:
    """Take ``<folder>/.lock`` for this process (nothing if it already holds it); returns whether the
    folder is locked (False on a file system without locks).

    Raises
    ------
    ShiftProbeError
        Another process holds the lock (the message names its pid), or the folder cannot be written.
    """
    folder = Path(os.path.abspath(folder))
    if str(folder) in _held:
        return True
    fd = _open_lock_file(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ShiftProbeError(
            f"the run folder {folder} is in use by another run (pid {holder}); choose another hydra.run.dir"
        ) from None
    except OSError as err:
        os.close(fd)
        if err.errno not in NO_LOCKS:
            raise
        log.warning("the file system of %s cannot lock files (%s): the run folder is not locked", folder, err)
        return False
    _held[str(folder)] = fd
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as err:
        release_run_folder(folder)
        raise _folder_error(folder, err) or err from None
    return True


def release_run_folder(folder: str | os.PathLike) -> None:
    """Let go of the lock this process holds on ``folder`` (nothing if it holds none)."""
    fd = _held.pop(os.path.abspath(folder), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def starts_the_run() -> bool:
    """Whether this process starts the run (False for the other processes of a DDP run: their launcher
    sets their rank, and another node's first process has ``NODE_RANK`` > 0)."""
    from shiftprobe.app.preflight import launch_rank

    return launch_rank() == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def _claim_or_exit(folder: str) -> None:
    """``lock_run_folder(folder)``, or ``error: ...`` and exit status 1 (a Hydra callback cannot fail a
    run by raising: Hydra turns its exceptions into warnings)."""
    try:
        lock_run_folder(folder)
    except ShiftProbeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _refuse_earlier_checkpoints(folder: str, config: DictConfig) -> None:
    """A fresh training run (``train`` true, no ``ckpt_path``) into a folder holding an earlier run's
    checkpoints would write ``best-v1.ckpt`` beside that run's ``best.ckpt`` and its results over the earlier
    run's: ``error: ...`` and exit status 1, before Hydra writes into the folder."""
    found = sorted(p.name for p in (Path(folder) / "checkpoints").glob("*.ckpt"))
    if found and OmegaConf.select(config, "train") is True and not OmegaConf.select(config, "ckpt_path"):
        release_run_folder(folder)
        print(f"error: the run folder {folder} holds the checkpoints of an earlier run ({', '.join(found[:3])}): a "
              f"new run there would write best-v1.ckpt beside them; choose another hydra.run.dir, or resume with "
              f"ckpt_path={folder}/checkpoints/last.ckpt", file=sys.stderr, flush=True)
        sys.exit(1)


class RunFolderLock(Callback):
    """Hydra callback: lock the run folder before Hydra writes into it (``python train.py``, ``eval.py``),
    or each multirun job's folder while the job runs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if starts_the_run():
            folder = os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir")))
            _claim_or_exit(folder)
            _refuse_earlier_checkpoints(folder, config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_folder(str(OmegaConf.select(config, "hydra.runtime.output_dir", default="") or "."))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun(config) and starts_the_run():
            _claim_or_exit(str(config.hydra.runtime.output_dir))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if _is_multirun(config):
            release_run_folder(str(config.hydra.runtime.output_dir))


def _is_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN
