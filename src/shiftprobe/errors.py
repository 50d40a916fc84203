"""The one exception type for problems a user can fix (bad settings, missing or broken data, divergence).

The entry points (``train.py``, ``eval.py``) catch it and print ``error: <message>`` with exit status 1,
without a traceback: the message itself names the bad value and the fix.
"""


class ShiftProbeError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""

    #: raised by every process of a distributed run at the same point (decided across ranks): the entry
    #: points print it once, from rank 0; a problem found by one rank alone is printed by that rank
    same_on_every_rank = False


def reject_setting(key: str, value, allowed: str) -> None:
    """Raise the one-line error for a bad config value: ``key=value is not allowed: <allowed, with the fix>.``"""
    raise ShiftProbeError(f"{key}={value!r} is not allowed: {allowed}.")


def is_number(value) -> bool:
    """An int or a float, not a bool (YAML's ``true`` must not pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TrainingDiverged(ShiftProbeError):
    """The training loss is not finite or too large; under DDP every rank raises it at the same step."""

    same_on_every_rank = True


class WriteError(ShiftProbeError, OSError):
    """A file could not be written: the disk is full, or the folder is read-only or not writable.

    Raised by ``shiftprobe.atomic`` with one line naming the folder and the fix; still an ``OSError``
    (``errno`` is the original one), so ``except OSError`` in user code keeps working.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])
