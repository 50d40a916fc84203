"""The CIFAR reader: batches written as the official files were (Python 2 pickles), the real folder
layout, and a hostile pickle that must be refused without running anything."""

import os
import pickle

import numpy as np
import pytest
import torch
from synthetic import cifar_batch, py2_pickle, random_images, write_cifar

from shiftprobe.data.cifar import ALLOWED_GLOBALS, read_cifar_batch, read_cifar_split
from shiftprobe.data.datasets import DATASETS, load_split
from shiftprobe.data.files import BrokenFile
from shiftprobe.errors import ShiftProbeError


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("py2", [True, False])
def test_splits_read_what_was_written(tmp_path, name, py2):
    written = write_cifar(tmp_path, name, n_per_batch=6, n_test=5, py2=py2)
    classes = 10 if name == "cifar10" else 100
    for split in ("train", "test"):
        images, labels = read_cifar_split(tmp_path, name, split, classes, name)
        expected_images, expected_labels = written[split]
        assert images.dtype == torch.uint8 and images.shape == (len(expected_images), 3, 32, 32)
        assert images.is_contiguous() and labels.dtype == torch.long
        assert np.array_equal(images.numpy(), expected_images) and np.array_equal(labels.numpy(), expected_labels)
    assert len(written["train"][0]) == (30 if name == "cifar10" else 6)  # five batches for CIFAR-10


def test_channel_planes_are_red_green_blue(tmp_path):
    """A batch row is 1024 red, then 1024 green, then 1024 blue values, rows of 32 (the CIFAR page)."""
    row = np.concatenate([np.full(1024, 10), np.arange(1024) % 256, np.full(1024, 30)]).astype(np.uint8)
    path = tmp_path / "batch"
    path.write_bytes(py2_pickle({b"data": row[None], b"labels": [4]}))
    images, labels = read_cifar_batch(path, "labels", 10, "CIFAR-10")
    assert (images[0, 0] == 10).all() and (images[0, 2] == 30).all() and int(labels[0]) == 4
    assert int(images[0, 1, 1, 0]) == 32 and int(images[0, 1, 0, 5]) == 5  # row-major 32 x 32


def test_only_numpy_array_globals_are_allowed():
    assert set(ALLOWED_GLOBALS) == {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }


class Hostile:
    """Unpickling this creates ``marker``: what a hostile data file could do with a plain ``pickle.load``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    images, labels = random_images(2, (3, 32, 32), 10, 0)
    hostile = pickle.dumps({b"data": images.reshape(2, -1), b"labels": [0, 1], b"x": Hostile(marker)}, protocol=2)
    # the control: a plain pickle.load of these bytes does run the code
    pickle.loads(hostile)
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.parent.mkdir()
    path.write_bytes(hostile)
    with pytest.raises(BrokenFile) as err:
        read_cifar_batch(path, "labels", 10, "CIFAR-10")
    msg = str(err.value)
    assert "refused, nothing in the file was run" in msg and "exec" in msg and len(msg.splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch, message",
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "expected a uint8 array of N x 3072"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 'labels' for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 at item 1 is outside 0..9"),
        ([1, 2], "not the dict of a CIFAR batch"),
    ],
)
def test_wrong_contents_are_named(tmp_path, batch, message):
    path = tmp_path / "test_batch"
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(BrokenFile, match=message):
        read_cifar_batch(path, "labels", 10, "CIFAR-10")


def test_truncated_batch_gives_one_line_with_the_fix(tmp_path):
    write_cifar(tmp_path, "cifar100", n_per_batch=4, n_test=3)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ShiftProbeError) as err:
        load_split(DATASETS["cifar100"], tmp_path, "test", 100)
    msg = str(err.value)
    assert msg.startswith(f"CIFAR-100 file {path} is broken: it cannot be read as a CIFAR batch")
    assert "data.download=true" in msg and len(msg.splitlines()) == 1


def test_fine_labels_of_cifar100(tmp_path):
    images, _ = random_images(3, (3, 32, 32), 100, 0)
    path = tmp_path / "train"
    path.write_bytes(cifar_batch(images, np.array([99, 0, 57]), "fine_labels"))
    _, labels = read_cifar_batch(path, "fine_labels", 100, "CIFAR-100")
    assert labels.tolist() == [99, 0, 57]
    assert os.path.getsize(path) > 3 * 3072
