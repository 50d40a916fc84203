"""The CIFAR-10 / CIFAR-100 "python version" batches (pickles of ``data``, ``N x 3072`` uint8, and
``labels`` / ``fine_labels``), read by ``RestrictedUnpickler``, which lets a file name only what a batch
of NumPy arrays needs, so nothing in a file runs; the contents are then checked (docs/data.md)."""

from __future__ import annotations

import _codecs
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shiftprobe.data.files import BrokenFile, check_labels


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR dataset's batches are (``folder`` under ``data.root``) and how its labels are keyed."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    meta: str


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", "batches.meta"
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", "meta"),
}
#: side and channels of every CIFAR image
CIFAR_SIZE, CIFAR_CHANNELS = 32, 3


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # NumPy's own array reconstruction function
#: ``(module, name)`` -> the object: the only globals a CIFAR batch may name
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the official files (NumPy 1)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # byte strings in a protocol-2 pickle from Python 3
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that a CIFAR batch never needs."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns only ``ALLOWED_GLOBALS``; nothing is imported."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path: Path) -> object:
    """The object in the pickle ``path``, loaded by ``RestrictedUnpickler`` (``encoding="bytes"``)."""
    try:
        with path.open("rb") as fh:
            return RestrictedUnpickler(fh, encoding="bytes").load()
    except RefusedGlobal as err:
        raise BrokenFile(
            path,
            f"it asks to load {err}, which a CIFAR batch never needs: refused, nothing in the file was run",
        ) from None
    except Exception as err:  # truncated, not a pickle, ...: the file's fault, whatever the exception
        raise BrokenFile(path, f"it cannot be read as a CIFAR batch ({type(err).__name__}: {err})") from None


def _text_keys(batch: object, path: Path) -> dict:
    if not isinstance(batch, dict):
        raise BrokenFile(path, f"it holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_cifar_batch(path: Path, label_key: str, num_classes: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: ``(uint8 N x 3 x 32 x 32, long N)``; its contents checked (``BrokenFile``)."""
    batch = _text_keys(load_pickle(path), path)
    data, labels = batch.get("data"), batch.get(label_key)
    item = CIFAR_CHANNELS * CIFAR_SIZE * CIFAR_SIZE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != item:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BrokenFile(path, f"its 'data' is {found}, expected a uint8 array of N x {item}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        count = len(labels) if isinstance(labels, (list, np.ndarray)) else "no"
        raise BrokenFile(path, f"{count} '{label_key}' for {len(data)} images")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise BrokenFile(path, f"its '{label_key}' are {labels.dtype}, not integers")
    check_labels(labels, num_classes, path, what)
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, CIFAR_CHANNELS, CIFAR_SIZE, CIFAR_SIZE))
    return images, torch.from_numpy(labels.astype(np.int64))


def cifar_files(name: str, split: str) -> list[str]:
    """The batch files of one split of ``cifar10`` or ``cifar100``, relative to ``data.root``."""
    layout = CIFAR_LAYOUTS[name]
    return [f"{layout.folder}/{f}" for f in (layout.train if split == "train" else layout.test)]


def read_cifar_split(
    root: Path, name: str, split: str, num_classes: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of ``cifar10`` / ``cifar100`` under ``root``: its batches read and concatenated in order."""
    parts = [read_cifar_batch(root / f, CIFAR_LAYOUTS[name].label_key, num_classes, what) for f in cifar_files(name, split)]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
