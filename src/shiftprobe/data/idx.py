"""The IDX format of MNIST, Fashion-MNIST and Kuzushiji-MNIST (a big-endian header ``0 0 <type> <ndim>``,
``ndim`` int32 sizes, then unsigned bytes), plain or gzipped; every problem is a ``BrokenFile`` naming the
file and what is wrong."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from shiftprobe.data.files import BrokenFile, check_labels, read_file

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
#: split -> (images file, labels file), the names all three datasets use
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def parse_header(data: bytes | bytearray, path: Path, magic: int) -> tuple[int, ...]:
    """The sizes in the header of an IDX file of unsigned bytes with ``magic`` (2051: 3 sizes, 2049: 1)."""
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise BrokenFile(path, f"only {len(data)} bytes, shorter than its header")
    found = struct.unpack(">i", bytes(data[:4]))[0]
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise BrokenFile(path, f"header magic number is {found}, expected {magic} for an idx {kind} file")
    sizes = struct.unpack(f">{ndim}i", bytes(data[4:header_len]))
    expected = header_len + int(np.prod(sizes, dtype=np.int64))
    if sizes[0] < 1 or len(data) != expected:
        raise BrokenFile(
            path, f"{len(data)} bytes, but its header announces {sizes[0]} items ({expected} bytes); truncated?"
        )
    return sizes


def read_idx(path: Path, magic: int, image_size: int | None = None) -> np.ndarray:
    """The items of one IDX file (uint8): ``N x H x W`` images (``H = W = image_size`` when given) or
    ``N`` labels; shares the file's buffer (no copy)."""
    data = read_file(path)
    sizes = parse_header(data, path, magic)
    if magic == IMAGES_MAGIC and image_size is not None and sizes[1:] != (image_size, image_size):
        raise BrokenFile(path, f"images are {sizes[1]}x{sizes[2]}, expected {image_size}x{image_size}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(sizes)).reshape(sizes)


def read_idx_split(
    folder: Path, split: str, image_size: int, num_classes: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an IDX dataset in ``folder``: ``(uint8 N x H x W, long N)``; ``what``: its name."""
    images_name, labels_name = IDX_FILES[split]
    images_path, labels_path = (find_idx_file(folder, name) for name in (images_name, labels_name))
    if images_path is None or labels_path is None:
        missing = images_name if images_path is None else labels_name
        raise FileNotFoundError(folder / missing)
    images = read_idx(images_path, IMAGES_MAGIC, image_size)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise BrokenFile(labels_path, f"{len(labels)} labels for {len(images)} images")
    check_labels(labels, num_classes, labels_path, what)
    return torch.from_numpy(images), torch.from_numpy(labels).long()
