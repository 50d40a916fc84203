"""SIGTERM stops a run as Ctrl-C does, wherever it is (docs/faults.md): inside :func:`signals_as_interrupts`
it raises :class:`Terminated`, a ``KeyboardInterrupt``; the entry points then exit with 128 + the signal's
number (143; Ctrl-C: 130). Only the first signal interrupts (not the saving of ``last.ckpt``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt`` (and handled as it is)."""


@dataclass
class Stop:
    """The signal that stopped the run (``signum`` None while none arrived)."""

    signum: int | None = None

    @property
    def exit_status(self) -> int:
        """128 + the signal's number (the shell's convention): 143 for SIGTERM, 130 for SIGINT."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "SIGINT"


def _handler(stop: Stop):
    def handle(signum, frame) -> None:
        if stop.signum is not None:  # a second signal during the graceful stop: let it finish
            return
        stop.signum = signum
        raise Terminated(signal.Signals(signum).name) if signum == signal.SIGTERM else KeyboardInterrupt()

    return handle


@contextlib.contextmanager
def signals_as_interrupts(enabled: bool = True) -> Iterator[Stop]:
    """For the block, SIGTERM raises :class:`Terminated` and Ctrl-C ``KeyboardInterrupt`` in the main
    thread (the first one only); yields the :class:`Stop` that records which arrived. The previous
    handlers are restored afterwards. Nothing changes outside the main thread, when ``enabled`` is
    false (the other processes of a DDP run: their launcher stops them) or for a SIGINT that is ignored
    (a background job's)."""
    stop = Stop()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handle = _handler(stop)
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, handle)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
