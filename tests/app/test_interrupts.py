"""``shiftprobe.app.interrupts``: inside ``signals_as_interrupts`` SIGTERM raises ``Terminated`` (a
``KeyboardInterrupt``) in the main thread, once; the handlers are restored afterwards. The signal is sent
by the test to its own process at a known point (no timing); the whole runs: ``test_faults``."""

from __future__ import annotations

import os
import signal

import pytest

from shiftprobe.app.interrupts import Stop, Terminated, signals_as_interrupts


@pytest.fixture
def handlers_kept():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield before
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


def test_sigterm_is_an_interrupt_once_then_the_handlers_come_back(handlers_kept):
    with pytest.raises(Terminated), signals_as_interrupts() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM and stop.exit_status == 143 and stop.name == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers_kept
    with signals_as_interrupts() as stop:  # a second signal during the graceful stop is only noted
        stop.signum = signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)


def test_disabled_changes_nothing(handlers_kept):
    with signals_as_interrupts(enabled=False) as stop:
        assert signal.getsignal(signal.SIGTERM) == handlers_kept[0]
    assert stop.signum is None


def test_exit_status_follows_the_shell():
    assert Stop().exit_status == 130 and Stop().name == "SIGINT"  # Ctrl-C
    assert Stop(signal.SIGTERM).exit_status == 143
