"""What every dataset reader shares: the error for a broken file, reading a file that may be gzipped,
and the check of the labels against the number of classes."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from shiftprobe.errors import ShiftProbeError

#: the first two bytes of every gzip file
GZIP_MAGIC = b"\x1f\x8b"


class BrokenFile(ShiftProbeError):
    """A data file that cannot be read as its format says: ``path`` and the ``problem`` in words (one
    line). The dataset layer (``shiftprobe.data.datasets``) adds the fix for its dataset."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), str(problem)
        super().__init__(f"{self.path} is broken: {self.problem}")


def read_file(path: Path) -> bytearray:
    """The bytes of ``path``, decompressed when it is a gzip file (whatever its name); a writable
    buffer, so NumPy and torch can share it without a copy."""
    with path.open("rb") as fh:
        data = bytearray(fh.read())
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return bytearray(gzip.decompress(bytes(data)))
    except (OSError, EOFError, zlib.error) as err:
        raise BrokenFile(path, f"it cannot be decompressed ({err})") from None


def check_labels(labels: np.ndarray, num_classes: int, path: Path, what: str) -> None:
    """Every label an integer in ``0 .. num_classes - 1``; else ``BrokenFile`` naming the first bad value,
    its position and the number of classes of ``what`` (e.g. ``"CIFAR-10"``)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise BrokenFile(
            path,
            f"label {int(labels[i])} at item {i} is outside 0..{num_classes - 1} ({what} has {num_classes} "
            f"classes; {bad.size} such labels)",
        )
