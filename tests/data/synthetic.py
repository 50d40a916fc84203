"""Tiny datasets written in each real on-disk format, for the readers and the data module.

- IDX (MNIST, Fashion-MNIST, KMNIST): big-endian headers with the real magic numbers (2051 images,
  2049 labels) in ``<root>/<Folder>/raw/``, plain or gzipped;
- CIFAR-10 / CIFAR-100 "python version": ``cifar-10-batches-py/data_batch_1..5, test_batch,
  batches.meta`` and ``cifar-100-python/train, test, meta``, each a pickle written as the official
  files were (Python 2's cPickle, protocol 2, byte-string keys, NumPy 1's module names) by a small
  opcode writer, or by Python 3's own pickle (protocol 2);
- an image folder ``<root>/{train,test}/<class>/*.png`` with images of two sizes (and a grey one).

Nothing here imports shiftprobe: the files are made from the formats' specifications.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def random_images(n: int, shape: tuple[int, ...], num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images of ``shape`` and their labels; each class has its own mean brightness."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    noise = rng.integers(0, 60, size=(n, *shape))
    images = noise + (labels * (190 // max(num_classes - 1, 1))).reshape(-1, *([1] * len(shape)))
    return images.astype(np.uint8), labels.astype(np.uint8 if num_classes <= 256 else np.int64)


# -- IDX -----------------------------------------------------------------------------------------------
def idx_bytes(items: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic ``0 0 8 ndim`` (2051 for images, 2049 for labels), sizes."""
    header = struct.pack(">i", 0x0800 + items.ndim) + struct.pack(f">{items.ndim}i", *items.shape)
    return header + items.astype(np.uint8).tobytes()


def write_idx(path: Path, items: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(items)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_idx_dataset(
    root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, size: int = 28, gz: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/<folder>/raw/`` with the four IDX files; returns ``{split: (images, labels)}``."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = random_images(n, (size, size), 10, seed)
        write_idx(raw / IDX_NAMES[split][0], images, gz)
        write_idx(raw / IDX_NAMES[split][1], labels, gz)
        out[split] = (images, labels)
    return out


# -- Python 2 pickles, as CIFAR's were written -----------------------------------------------------------
def _py2_array(array: np.ndarray) -> bytes:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` then ``__setstate__((1, shape, dtype,
    False, raw bytes))``, the dtype ``dtype('u1', 0, 1)`` with its state: what NumPy 1 under Python 2 wrote."""
    dtype = b"cnumpy\ndtype\n" + _py2((b"u1", 0, 1)) + b"R" + _py2((3, b"|", None, None, None, -1, -1, 0)) + b"b"
    state = b"(" + _py2(1) + _py2(array.shape) + dtype + b"\x89" + _py2(array.astype(np.uint8).tobytes()) + b"t"
    return b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2((0,)) + _py2(b"b") + b"\x87R" + state + b"b"


def _py2(obj) -> bytes:
    """Protocol-2 opcodes for the few types a CIFAR batch holds (Python 2 ``str`` = ``bytes`` here)."""
    if obj is None:
        return b"N"
    if isinstance(obj, (bool, np.bool_)):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, (int, np.integer)):
        obj = int(obj)
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        return b"M" + struct.pack("<H", obj) if 0 <= obj < 65536 else b"J" + struct.pack("<i", obj)
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    if isinstance(obj, tuple):
        return b"(" + b"".join(_py2(o) for o in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(o) for o in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):
        return _py2_array(obj)
    raise TypeError(f"no Python 2 opcodes for {type(obj).__name__}")


def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2's cPickle wrote it with protocol 2."""
    return b"\x80\x02" + _py2(obj) + b"."


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: str, py2: bool = True) -> bytes:
    """One CIFAR batch: ``{b"batch_label", b"data": N x 3072 uint8 (R, G, B planes), b"<label_key>": list}``."""
    batch = {
        b"batch_label": b"synthetic batch",
        b"data": images.reshape(len(images), -1),
        label_key.encode(): [int(v) for v in labels],
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    return py2_pickle(batch) if py2 else pickle.dumps(batch, protocol=2)


def write_cifar(
    root: Path, name: str = "cifar10", n_per_batch: int = 12, n_test: int = 10, py2: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real layout of ``cifar10`` / ``cifar100`` under ``root``; ``{split: (N x 3 x 32 x 32, labels)}``."""
    folder, train_files, test_files, label_key, meta, names_key = CIFAR[name]
    num_classes = 10 if name == "cifar10" else 100
    (root / folder).mkdir(parents=True, exist_ok=True)
    out = {}
    for split, files, n in (("train", train_files, n_per_batch), ("test", test_files, n_test)):
        parts = []
        for k, file in enumerate(files):
            images, labels = random_images(n, (3, 32, 32), num_classes, seed=100 * (split == "test") + k)
            (root / folder / file).write_bytes(cifar_batch(images, labels, label_key, py2))
            parts.append((images, labels.astype(np.int64)))
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    names = [f"class_{c}".encode() for c in range(num_classes)]
    (root / folder / meta).write_bytes(py2_pickle({names_key.encode(): names, b"num_vis": 3072}))
    return out


# -- an image folder --------------------------------------------------------------------------------
def write_image_folder(
    root: Path, classes=("cat", "dog", "emu"), n_train: int = 4, n_test: int = 2, sizes=((40, 30), (30, 44))
) -> dict[str, list[tuple[Path, int]]]:
    """``root/{train,test}/<class>/<i>.png``: RGB PNGs alternating between two sizes ``(width, height)``,
    the first test image of every class grey (mode L); returns ``{split: [(path, label), ...]}`` sorted."""
    from PIL import Image

    rng = np.random.default_rng(7)
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                grey = split == "test" and i == 0
                pixels = rng.integers(0, 256, size=(h, w) if grey else (h, w, 3), dtype=np.uint8)
                path = root / split / name / f"{i:03d}.png"
                Image.fromarray(pixels, mode="L" if grey else "RGB").save(path)
                out[split].append((path, label))
    return out
