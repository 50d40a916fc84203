"""Data: every dataset of ``data=<name>`` through one DataModule (``ImageDataModule``; ``MNISTDataModule``
is its MNIST configuration), the readers of the on-disk formats (``idx``, ``cifar``, ``folder``), the
training augmentations and the paired-translation test set.

The names are imported on first use (PEP 562), so that ``shiftprobe.data.datasets`` (the settings
check of ``train.py``) can be imported without Lightning.
"""

from shiftprobe._lazy import lazy_exports

_SAMPLING = "shiftprobe.data.sampling"
_EXPORTS = {
    "AUGMENT_STREAM": _SAMPLING,
    "FLIP_STREAM": _SAMPLING,
    "ROTATE_STREAM": _SAMPLING,
    "EpochSampler": _SAMPLING,
    "InMemoryDataset": _SAMPLING,
    "ShardSampler": _SAMPLING,
    "stream_seed": _SAMPLING,
    "DATASETS": "shiftprobe.data.datasets",
    "ImageDataModule": "shiftprobe.data.datamodule",
    "MNISTDataModule": "shiftprobe.data.datamodule",
    "FolderDataset": "shiftprobe.data.folder",
    "PairedShiftDataset": "shiftprobe.data.paired",
    "ensure_mnist": "shiftprobe.data.mnist",
    "load_split": "shiftprobe.data.mnist",
    "raw_folder": "shiftprobe.data.mnist",
    "flip_per_sample": "shiftprobe.data.augment",
    "rotate_per_sample": "shiftprobe.data.augment",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
