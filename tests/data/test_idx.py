"""The IDX reader on synthetic files written from the format's specification (tests/data/synthetic.py)."""

import gzip

import numpy as np
import pytest
import torch
from synthetic import IDX_NAMES, idx_bytes, write_idx, write_idx_dataset

from shiftprobe.data.datasets import DATASETS, load_split
from shiftprobe.data.files import BrokenFile
from shiftprobe.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_idx_split
from shiftprobe.errors import ShiftProbeError


@pytest.mark.parametrize("gz", [False, True])
def test_split_reads_what_was_written(tmp_path, gz):
    written = write_idx_dataset(tmp_path, gz=gz)
    for split in ("train", "test"):
        images, labels = read_idx_split(tmp_path / "MNIST" / "raw", split, 28, 10, "MNIST")
        assert images.dtype == torch.uint8 and images.shape == (len(written[split][0]), 28, 28)
        assert images.is_contiguous() and labels.dtype == torch.long
        assert np.array_equal(images.numpy(), written[split][0])
        assert np.array_equal(labels.numpy(), written[split][1])


def test_plain_file_wins_over_gz_and_nothing_is_written(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dataset(tmp_path, gz=True)
    before = sorted(p.name for p in raw.iterdir())
    labels = np.full(60, 3, dtype=np.uint8)
    write_idx(raw / IDX_NAMES["train"][1], labels)  # a plain labels file beside the .gz one
    _, read = read_idx_split(raw, "train", 28, 10, "MNIST")
    assert torch.equal(read, torch.full((60,), 3))
    assert sorted(p.name for p in raw.iterdir()) == sorted([*before, IDX_NAMES["train"][1]])


def test_header_is_the_specification(tmp_path):
    """The reader's view of a file equals a header parsed here by hand (magic 0x00000803, big-endian sizes)."""
    items = np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)
    data = idx_bytes(items)
    assert data[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(data[4:8], "big") == 2
    path = tmp_path / "f"
    path.write_bytes(data)
    assert np.array_equal(read_idx(path, IMAGES_MAGIC), items)
    assert IMAGES_MAGIC == int.from_bytes(bytes([0, 0, 8, 3]), "big")
    assert LABELS_MAGIC == int.from_bytes(bytes([0, 0, 8, 1]), "big")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:10], "shorter than its header"),
        (lambda b: b[:-5], "truncated?"),
        (lambda b: b + b"xx", "truncated?"),
        (lambda b: (1234).to_bytes(4, "big") + b[4:], "magic number is 1234, expected 2051"),
    ],
)
def test_broken_image_files_are_named(tmp_path, damage, message):
    path = tmp_path / "images"
    path.write_bytes(damage(idx_bytes(np.zeros((4, 28, 28), np.uint8))))
    with pytest.raises(BrokenFile, match=message.replace("?", r"\?")) as err:
        read_idx(path, IMAGES_MAGIC, 28)
    assert err.value.path == path and len(str(err.value).splitlines()) == 1


def test_other_image_size_and_corrupt_gz(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(BrokenFile, match="images are 32x32, expected 28x28"):
        read_idx(path, IMAGES_MAGIC, 28)
    gz = tmp_path / "labels.gz"
    gz.write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8)))[:-8])
    with pytest.raises(BrokenFile, match="cannot be decompressed"):
        read_idx(gz, LABELS_MAGIC)


def test_labels_out_of_range_name_the_file_and_value(tmp_path):
    write_idx_dataset(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    labels = np.zeros(20, np.uint8)
    labels[7] = 12
    write_idx(raw / IDX_NAMES["test"][1], labels)
    with pytest.raises(ShiftProbeError) as err:
        load_split(DATASETS["mnist"], tmp_path, "test", 10)
    msg = str(err.value)
    assert "label 12 at item 7 is outside 0..9" in msg and str(raw / IDX_NAMES["test"][1]) in msg
    assert "data.download=true" in msg and "MNIST_ROOT" in msg and len(msg.splitlines()) == 1


def test_label_count_must_match(tmp_path):
    write_idx_dataset(tmp_path, folder="KMNIST")
    write_idx(tmp_path / "KMNIST" / "raw" / IDX_NAMES["train"][1], np.zeros(5, np.uint8))
    with pytest.raises(ShiftProbeError, match="Kuzushiji-MNIST file .* is broken: 5 labels for 60 images") as err:
        load_split(DATASETS["kmnist"], tmp_path, "train", 10)
    assert "MNIST_ROOT" not in str(err.value) and "data.root" in str(err.value)
