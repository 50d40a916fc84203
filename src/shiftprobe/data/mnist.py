"""MNIST's files for scripts and notebooks, without Lightning (``data=mnist`` is ``MNISTDataModule``)."""

from __future__ import annotations

from pathlib import Path

import torch

from shiftprobe.data import datasets

MNIST = datasets.DATASETS["mnist"]


def raw_folder(root: str | Path) -> Path:
    """Where MNIST's four files are (and torchvision downloads them): ``<root>/MNIST/raw``."""
    return Path(root) / MNIST.folder


def load_split(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split: ``(uint8 N x 28 x 28, long N)``; a missing or broken file ends with one line."""
    return datasets.load_split(MNIST, root, "train" if train else "test", MNIST.num_classes)


def ensure_mnist(root: str | Path, download: bool) -> None:
    """Make sure ``<root>/MNIST/raw`` holds four sound files (plain or .gz): download the missing ones
    when ``download``, then read both splits once to check them (header, size, counts, labels)."""
    datasets.ensure_dataset(MNIST, root, download)
    for train in (True, False):
        load_split(root, train)
