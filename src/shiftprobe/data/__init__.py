"""Data: MNIST held in memory as uint8 tensors (the DataModule, with its training augmentations) and the
paired-translation test set."""

from shiftprobe.data.augment import flip_per_sample, rotate_per_sample
from shiftprobe.data.mnist import (
    AUGMENT_STREAM,
    FLIP_STREAM,
    MNIST_FILES,
    ROTATE_STREAM,
    EpochSampler,
    InMemoryDataset,
    MNISTDataModule,
    ShardSampler,
    check_mnist_file,
    ensure_mnist,
    load_split,
    raw_folder,
    stream_seed,
)
from shiftprobe.data.paired import PairedShiftDataset

__all__ = [
    "AUGMENT_STREAM",
    "FLIP_STREAM",
    "MNIST_FILES",
    "EpochSampler",
    "InMemoryDataset",
    "MNISTDataModule",
    "PairedShiftDataset",
    "ROTATE_STREAM",
    "ShardSampler",
    "check_mnist_file",
    "ensure_mnist",
    "flip_per_sample",
    "load_split",
    "raw_folder",
    "rotate_per_sample",
    "stream_seed",
]
