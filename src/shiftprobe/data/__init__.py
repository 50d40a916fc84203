"""Data: every dataset of ``data=<name>`` through one DataModule (``ImageDataModule``; ``MNISTDataModule``
is its MNIST configuration), the readers of the on-disk formats (``idx``, ``cifar``, ``folder``), the
training augmentations and the paired-translation test set.

The names are imported on first use (PEP 562), so that ``shiftprobe.data.datasets`` (the settings
check of ``train.py``) can be imported without Lightning.
"""

from shiftprobe._lazy import lazy_exports

#: name -> module; each module with the names it gives the package
_EXPORTS = lazy_exports(globals(), {
    "shiftprobe.data.sampling": (
        "AUGMENT_STREAM", "FLIP_STREAM", "ROTATE_STREAM", "EpochSampler", "InMemoryDataset", "ShardSampler", "stream_seed",
    ),
    "shiftprobe.data.datasets": ("DATASETS",),
    "shiftprobe.data.datamodule": ("ImageDataModule", "MNISTDataModule"),
    "shiftprobe.data.folder": ("FolderDataset",),
    "shiftprobe.data.paired": ("PairedShiftDataset",),
    "shiftprobe.data.mnist": ("ensure_mnist", "load_split", "raw_folder"),
    "shiftprobe.data.augment": ("flip_per_sample", "rotate_per_sample"),
})

__all__ = sorted(_EXPORTS)
