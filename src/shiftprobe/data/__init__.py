"""Data: MNIST held in memory as uint8 tensors (the DataModule) and the paired-translation test set."""

from shiftprobe.data.mnist import (
    AUGMENT_STREAM,
    MNIST_FILES,
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
    "MNIST_FILES",
    "EpochSampler",
    "InMemoryDataset",
    "MNISTDataModule",
    "PairedShiftDataset",
    "ShardSampler",
    "check_mnist_file",
    "ensure_mnist",
    "load_split",
    "raw_folder",
    "stream_seed",
]
