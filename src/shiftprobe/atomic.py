"""Atomic writes (docs/faults.md): every file the project writes is complete, or not there. Written to a
temporary name in its own folder, flushed (``fsync``) and renamed into place; a disk problem becomes a
one-line :class:`~shiftprobe.errors.WriteError`; :func:`all_or_none` removes a failed block's files again.
Standard library only, so every layer of the package can use it."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shiftprobe.errors import WriteError

#: errno values that mean "this folder cannot take the file", with the fix in words
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
#: how the entry points say where to write instead
ELSEWHERE = "or write elsewhere (train.py / eval.py: hydra.run.dir=<another folder>)"

_group: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("shiftprobe_atomic_group", default=None)


def write_error(err: OSError, path: str | os.PathLike | None = None, *, folder: bool = False,
                writing: bool = True) -> WriteError | None:
    """The one-line :class:`WriteError` for a disk problem (``DISK_FULL``, ``NOT_WRITABLE``) at ``path``
    (default: the error's own file name), or None for any other error. ``folder=True``: ``path`` is a folder
    being created; ``writing=False``: the error may come from another operation than a write (a permission
    error then names the path without saying it was written)."""
    if isinstance(err, WriteError):
        return err
    if err.errno not in DISK_FULL + NOT_WRITABLE:
        return None
    target = Path(path if path is not None else (err.filename or "."))
    where = target if folder else target.parent
    subject = f"in {target}" if folder else f"to write {target.name} in {where}"
    reason = err.strerror or os.strerror(err.errno)
    if err.errno in DISK_FULL:
        text = f"no space left {subject} ({reason}): free space on that disk {ELSEWHERE}"
    elif writing or err.errno == errno.EROFS:
        text = f"cannot write {subject.removeprefix('to write ')} ({reason}): make {where} writable {ELSEWHERE}"
    else:
        text = f"{target} ({reason}): give this user access to it {ELSEWHERE}"
    return WriteError(text, err.errno)


def make_folder(folder: str | os.PathLike) -> Path:
    """``mkdir -p folder``; a disk problem becomes a :class:`WriteError` naming the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        converted = write_error(err, folder, folder=True)
        if converted is None:
            raise
        raise converted from None
    return folder


def temporary_name(path: Path) -> Path:
    """The temporary file next to ``path``: hidden, unique per process and thread."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


class _RecordingWriter(io.BufferedWriter):
    """A buffered file that remembers the ``OSError`` of a failed write or flush (``error``), for writers
    that report it as an error of their own (``torch.save`` raises a RuntimeError on a full disk)."""

    error: OSError | None = None

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as err:
            self.error = err
            raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path`` (its folder created) for writing, ``"wb"`` or ``"w"`` (text:
    ``encoding=``, ``newline=`` as for :func:`open`); on success it replaces ``path`` atomically. A full,
    read-only or forbidden folder raises :class:`WriteError` (one line naming the folder)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode={mode!r}; use 'wb' or 'w'")
    path = Path(path)
    make_folder(path.parent)
    tmp = temporary_name(path)
    binary = fh = None
    try:
        binary = _RecordingWriter(io.FileIO(tmp, "w"))
        fh = binary if mode == "wb" else io.TextIOWrapper(binary, **open_kwargs)
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError, ValueError):
            if binary is not None:
                (fh or binary).close()  # closes the file below too, even when its last flush fails
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # a writer may turn the disk's OSError into an error of its own (torch.save: a RuntimeError)
        cause = err if isinstance(err, OSError) else getattr(binary, "error", None)
        converted = write_error(cause, path) if cause is not None else None
        if converted is not None and converted is not err:
            raise converted from None
        raise
    group = _group.get()
    if group is not None:
        group.append(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` into ``path`` atomically (the format from the file's suffix, e.g. ``.png``)."""
    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or (path.suffix.lstrip(".") or "png")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **savefig_kwargs)
    return path


@contextlib.contextmanager
def all_or_none() -> Iterator[list[Path]]:
    """Group the atomic writes of a block: if the block raises (any exception, KeyboardInterrupt
    included), the files it has written are removed again; yields the list of files written so far."""
    written: list[Path] = []
    outer = _group.get()
    token = _group.set(written)
    try:
        yield written
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    finally:
        _group.reset(token)
    if outer is not None:  # a group inside a group: the outer one removes these files too
        outer.extend(written)


def _silent_on_disk_errors(handler: logging.Handler):
    """``handler.handleError`` that drops a record its file could not take (full or read-only disk)."""
    report = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError) and err.errno in DISK_FULL + NOT_WRITABLE:
            return
        report(record)

    return handle_error


def quiet_full_log_files(logger: logging.Logger | None = None) -> None:
    """Log files (the ``FileHandler`` s of ``logger``, default the root: Hydra's ``train.log``) drop the lines
    a full or read-only disk refuses instead of a ``--- Logging error ---`` traceback for each (the run's own
    error line names the problem); other logging errors are reported as before."""
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler, logging.FileHandler) and not getattr(handler, "_shiftprobe_quiet", False):
            handler.handleError = _silent_on_disk_errors(handler)
            handler._shiftprobe_quiet = True
