"""Any folder of images: ``<root>/train/<class>/*.png|jpg`` and ``<root>/test/<class>/...`` (the classes are
the sorted sub-folders of ``train``; ``test`` may hold fewer, never others), read from disk when a batch
needs them (docs/data.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shiftprobe.errors import ShiftProbeError

#: the file endings read as images (any case)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: the two split folders under ``data.root``
FOLDER_SPLITS = ("train", "test")


class ImageFileError(ShiftProbeError):
    """An image file that cannot be read; re-raised by torch from a data-loader worker with the worker's
    traceback as its text, of which only the original one-line message is kept."""

    def __init__(self, text: str):
        text = str(text)
        if "\n" in text:  # "Caught ImageFileError in DataLoader worker ...\nOriginal Traceback ...: <message>"
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = last.partition(f"{type(self).__name__}: ")[2] or last
        super().__init__(text)


def class_names(split_dir: Path) -> list[str]:
    """The class folders of one split, sorted (hidden folders left out)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_split(root: Path, split: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """The image files of ``root/split`` (sorted by class, then name) and their labels (indices into
    ``classes``). A class folder of ``split`` that ``classes`` does not name is an error."""
    split_dir = root / split
    found = class_names(split_dir)
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise ShiftProbeError(
            f"{split_dir} holds the class folder(s) {unknown[:3]} that {root / 'train'} does not have; the "
            f"classes are the folders of train/ ({len(classes)}: {classes[:5]}...). Rename or remove them."
        )
    paths, labels = [], []
    for name in found:
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(p) for p in files]
        labels += [classes.index(name)] * len(files)
    if not paths:
        raise ShiftProbeError(
            f"{split_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders; expected "
            f"{split_dir}/<class>/<image>.png"
        )
    return paths, labels


def load_image(path: str, image_size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 ``channels x image_size x image_size``: RGB (3) or grey (1), the pixels of
    torchvision's ``Resize(S)`` (PIL's bilinear) then ``CenterCrop(S)``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode.startswith("I"):  # 16-bit grey: convert() would clip every level above 255 to white
                img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
            if img.mode == "P" and "transparency" in img.info:  # the same pixels, without PIL's warning
                img = img.convert("RGBA")
            img = img.convert("RGB" if channels == 3 else "L")
            width, height = img.size  # the shorter side to image_size, the longer scaled alike, rounded down
            if width <= height:
                size = (image_size, int(image_size * height / width))
            else:
                size = (int(image_size * width / height), image_size)
            if size != img.size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            left, top = (int(round((side - image_size) / 2.0)) for side in size)
            pixels = np.array(img.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)
    except Exception as err:  # not an image, truncated, unreadable: the file's fault
        detail = (str(err).splitlines() or [""])[0][:160]
        raise ImageFileError(
            f"image file {path} cannot be read ({type(err).__name__}: {detail}); replace or remove it"
        ) from None
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


class FolderDataset(Dataset):
    """Image files read when a batch asks for them; batches as ``InMemoryDataset``'s (uint8 B x C x S x S)."""

    def __init__(self, paths: list[str], labels, image_size: int, channels: int):
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.image_size, self.channels = int(image_size), int(channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        return load_image(self.paths[int(index)], self.image_size, self.channels), self.labels[int(index)]

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = [load_image(self.paths[i], self.image_size, self.channels) for i in idx.tolist()]
        return torch.stack(images), self.labels.index_select(0, idx)

    def subset(self, indices: torch.Tensor) -> FolderDataset:
        """The items ``indices`` (long), still on disk."""
        keep = indices.tolist()
        return FolderDataset([self.paths[i] for i in keep], self.labels[indices], self.image_size, self.channels)

    def to(self, device) -> FolderDataset:
        """Itself: the images stay on disk (batches reach the device through the trainer)."""
        return self

    def read_all(self, batch_size: int, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image read once into memory, in order, by ``num_workers`` worker processes:
        ``(uint8 N x C x S x S, long N)``."""
        from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

        from shiftprobe.data.sampling import identity_collate

        batches = BatchSampler(SequentialSampler(range(len(self))), batch_size, drop_last=False)
        loader = DataLoader(self, batch_sampler=batches, collate_fn=identity_collate, num_workers=num_workers)
        images = torch.empty(len(self), self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        start = 0
        for batch, _ in loader:
            images[start : start + len(batch)] = batch
            start += len(batch)
        return images, self.labels.clone()
