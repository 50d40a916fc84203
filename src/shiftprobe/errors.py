"""The one exception type for problems a user can fix (bad settings, missing or broken data, divergence).

The entry points (``train.py``, ``eval.py``) catch it and print ``error: <message>`` with exit status 1,
without a traceback: the message itself names the bad value and the fix.
"""


class ShiftProbeError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
