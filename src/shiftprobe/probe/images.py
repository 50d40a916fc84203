"""``Images``: the measured images, from a tensor, a map-style ``Dataset`` or a ``DataLoader`` over one, fetched a
batch at a time (streamed: only a batch and its control images exist at once). A tensor is checked whole once;
a dataset's batches are checked as they arrive, with the same checks (``shiftprobe.probe.inputs``), a refusal
naming the dataset's indices."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from shiftprobe.probe.capture import Feed
from shiftprobe.probe.inputs import (
    as_image_batch,
    check_classes,
    check_finite,
    check_inputs,
    check_labels,
    check_model,
    check_normalization,
    check_output_key,
    to_pixel_range,
)


def is_dataset(images) -> bool:
    """A ``Dataset`` or a ``DataLoader`` (anything else is checked as a tensor)."""
    return isinstance(images, (Dataset, DataLoader))


class Images:
    """``len`` images of shape ``shape`` (C, H, W) with labels or not; ``batches(...)`` yields them by index."""

    def __init__(self, pixels: torch.Tensor | None = None, labels: torch.Tensor | None = None, *, loader=None,
                 norm=None, index: torch.Tensor | None = None):
        self.pixels, self.labels, self.loader, self.norm, self.index = pixels, labels, loader, norm, index
        self.classes: tuple[int, str] | None = None  # the classifier's class count and name (``check_classes``)
        if loader is None:
            self.shape, self.labeled = tuple(pixels.shape[1:]), labels is not None
            self.n = len(pixels) if index is None else len(index)
            return
        first = loader.dataset[0 if index is None else int(index[0])]
        self.labeled = isinstance(first, (tuple, list)) and len(first) >= 2
        self.shape = tuple(as_image_batch(_image(first, self.labeled).unsqueeze(0)).shape[1:])
        self.n = len(loader.dataset) if index is None else len(index)

    def __len__(self) -> int:
        return self.n

    def subset(self, idx: torch.Tensor | None) -> Images:
        """The images at positions ``idx`` (None: these)."""
        if idx is None:
            return self
        return Images(self.pixels, self.labels, loader=self.loader, norm=self.norm, index=self._where(idx))

    def check_classes(self, n_classes: int, classifier: str) -> None:
        """Labels outside the classifier's classes refused: a tensor's now, a dataset's batch by batch."""
        self.classes = (n_classes, classifier)
        if self.labels is not None:
            where = self.labels if self.index is None else self.labels[self.index.to(self.labels.device)]
            check_classes(where, n_classes, classifier)

    def _where(self, idx: torch.Tensor) -> torch.Tensor:
        return idx if self.index is None else self.index[idx]

    def first(self, k: int) -> torch.Tensor:
        """The first ``k`` images' pixels (checked)."""
        return next(self.batches([torch.arange(min(k, self.n))], 0))[1]

    def batches(self, batches, k: int):
        """``(idx, pixels, labels, control pixels)`` of every batch of positions ``idx``, the control images at
        ``(idx + k) mod len``; pixels as checked (uint8, or floats in [0, 1]); labels None without labels."""
        if self.loader is None:
            for idx in batches:
                where, ctrl = self._where(idx), self._where((idx + k) % self.n)
                dev = self.pixels.device
                y = self.labels[where] if self.labels is not None else None
                yield idx, self.pixels[where.to(dev)], y, self.pixels[ctrl.to(dev)]
            return
        both = [torch.cat([self._where(idx), self._where((idx + k) % self.n)]).tolist() for idx in batches]
        if not both:
            return
        loader = self.loader
        workers = loader.num_workers
        fetched = DataLoader(loader.dataset, batch_sampler=both, num_workers=workers, collate_fn=loader.collate_fn,
                             pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                             multiprocessing_context=loader.multiprocessing_context,
                             prefetch_factor=loader.prefetch_factor if workers else None)
        for idx, rows, batch in zip(batches, both, fetched, strict=True):
            x, y = self._checked(batch, rows)
            b = len(idx)
            yield idx, x[:b], (y[:b] if y is not None else None), x[b:]

    def _checked(self, batch, rows: list[int]):
        """A collated batch as checked ``(pixels, labels)``."""
        x = as_image_batch(_image(batch, self.labeled))
        check_finite(x, rows)
        y = check_labels(batch[1], len(x)) if self.labeled else None
        if y is not None and self.classes is not None:
            check_classes(y, *self.classes)
        return to_pixel_range(x, self.norm), y


def _image(item, labeled: bool):
    """The image of a dataset item or a collated batch: the item itself, or its first entry with a label."""
    image = item[0] if labeled or isinstance(item, (tuple, list)) else item
    return image if isinstance(image, torch.Tensor) else torch.as_tensor(image)


def checked_images(model, images, labels=None, *, normalization=None, output_key=None) -> tuple[Images, Feed]:
    """``check_inputs`` for a tensor (checked whole) or a ``Dataset`` / ``DataLoader`` (its batches checked as
    they arrive): the ``Images`` and the ``Feed``."""
    if not is_dataset(images):
        pixels, labels, feed = check_inputs(model, images, labels, normalization=normalization, output_key=output_key)
        return Images(pixels, labels), feed
    check_model(model)
    check_output_key(output_key)
    found = as_images(images, labels)
    found.norm = check_normalization(normalization, found.shape[0])
    return found, Feed(*(found.norm or (None, None)), output_key)


def as_images(images, labels=None) -> Images:
    """A ``Dataset`` or ``DataLoader`` as ``Images`` (``labels`` come from its ``(image, label)`` items); checked
    pixels (a tensor) wrapped as they are; ``Images`` returned as is."""
    if isinstance(images, Images):
        return images
    if not is_dataset(images):
        return Images(images, labels)
    if labels is not None:
        raise ValueError("labels= with a Dataset or DataLoader: its (image, label) items give the labels; "
                         "pass labels=None")
    loader = images if isinstance(images, DataLoader) else DataLoader(images)
    if isinstance(loader.dataset, IterableDataset) or not hasattr(loader.dataset, "__len__"):
        raise TypeError(f"{type(loader.dataset).__name__} is an iterable dataset: the control pairs images by index, "
                        "give a map-style Dataset (with __len__ and __getitem__) or a tensor")
    if len(loader.dataset) == 0:
        raise ValueError("the dataset is empty: give at least 2 images")
    return Images(loader=loader)
