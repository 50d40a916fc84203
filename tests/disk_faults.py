"""A full disk without a tmpfs: ``FullDisk`` stands in for the ``io.FileIO`` that ``shiftprobe.atomic``
writes through. It accepts ``capacity`` bytes in all (shared by every file opened through it), writes
what still fits, then fails every write with ``ENOSPC``, as a real disk does. Files whose name does not
contain ``only`` (when given) are written normally."""

from __future__ import annotations

import errno
import io

import pytest

from shiftprobe import atomic


class FullDisk(io.FileIO):
    capacity = 0
    #: part of the (temporary) file name that the full disk applies to; "" = every file
    only = ""
    #: the files still written normally before the disk is full (``only`` files counted)
    files_left = 0

    def __init__(self, name, mode="r", *args, **kwargs):
        super().__init__(name, mode, *args, **kwargs)
        self.full = FullDisk.only in str(name)
        if self.full and FullDisk.files_left > 0:
            FullDisk.files_left -= 1
            self.full = False

    def write(self, data) -> int:
        if not self.full:
            return super().write(data)
        room = FullDisk.capacity
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = super().write(memoryview(data)[:room])
        FullDisk.capacity -= written
        return written


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(capacity, only="", files_left=0)``: from now on, after ``files_left`` more files whose
    name contains ``only``, those files see a disk with ``capacity`` bytes left."""

    def fill(capacity: int, only: str = "", files_left: int = 0) -> None:
        FullDisk.capacity, FullDisk.only, FullDisk.files_left = capacity, only, files_left
        monkeypatch.setattr(atomic.io, "FileIO", FullDisk)

    return fill
