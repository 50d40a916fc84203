"""The one exception type for problems a user can fix (bad settings, missing or broken data, divergence):
the entry points print ``error: <message>`` (it names the bad value and the fix) with exit status 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ShiftProbeError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""

    #: raised by every process of a distributed run at the same point (decided across ranks): the entry
    #: points print it once, from rank 0; a problem found by one rank alone is printed by that rank
    same_on_every_rank = False


class ArgumentError(ShiftProbeError, ValueError):
    """A bad argument of a constructor or builder (the networks, the data module), in one line that starts
    ``argument=value``: the Python names, never a config key. ``setting(section)`` is the same line for the
    config key ``section.argument`` (the app's): e.g. ``pool='x' ...`` becomes ``model.pool='x' ...``."""

    def setting(self, section: str) -> ShiftProbeError:
        return ShiftProbeError(f"{section}.{self}")


def setting_error(key: str, value, allowed: str) -> ShiftProbeError:
    """The one-line error for a bad config value: ``key=value is not allowed: <allowed, with the fix>.``"""
    return ShiftProbeError(f"{key}={value!r} is not allowed: {allowed}.")


def reject_setting(key: str, value, allowed: str) -> None:
    """Raise :func:`setting_error`."""
    raise setting_error(key, value, allowed)


def unknown_key(path: str, allowed: Iterable[str], given: str | None = None) -> ShiftProbeError:
    """The one-line error for a key that no code reads: ``path`` (``section.key``, or a top-level key), the
    closest allowed key when one is close (``difflib``), and every allowed key. ``given``: the key the
    command line set, when ``path`` is a missing section above it (``optimizer`` for ``optimizer.lr``)."""
    section, _, key = path.rpartition(".")
    names = sorted(str(a) for a in allowed)
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        fix = f"Did you mean {prefix}{close[0]}?"
    else:
        fix = f"Remove {given or path}=... from the command line."
    where = f"a setting of {section}" if section else "a top-level setting"
    lead = f"{given}: " if given and given != path else ""
    keys = f"Allowed keys: {', '.join(names)}." if names else f"{section or 'The config'} has no keys here."
    return ShiftProbeError(f"{lead}{path} is not {where}: nothing would read it. {fix} {keys}")


def is_number(value) -> bool:
    """An int or a float, not a bool (YAML's ``true`` must not pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TrainingDiverged(ShiftProbeError):
    """The training loss is not finite or too large; under DDP every rank raises it at the same step."""

    same_on_every_rank = True


class WriteError(ShiftProbeError, OSError):
    """A file could not be written (a full disk, a read-only or forbidden folder): one line naming the folder
    and the fix (``shiftprobe.atomic``); still an ``OSError`` with the original ``errno``."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])
