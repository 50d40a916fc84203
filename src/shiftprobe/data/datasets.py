"""The datasets of ``data=<name>``: where their files are, checking and downloading them (torchvision's
md5-checked downloaders), reading a split with the project's own readers. Lightning-free: ``train.py``
checks the settings with ``check_data_settings`` before Lightning is imported."""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from shiftprobe.data.files import BrokenFile
from shiftprobe.errors import ArgumentError, ShiftProbeError

log = logging.getLogger(__name__)

#: seconds a download may wait for the network before it is given up
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: ``reader`` (``idx`` | ``cifar`` | ``folder``), ``folder`` (under ``data.root``), its
    images (None: set by the config), the torchvision class that downloads it and the download's size."""

    name: str
    title: str
    reader: str
    folder: str
    channels: int | None
    image_size: int | None
    num_classes: int | None
    torchvision: str | None = None
    download_size: str = ""
    root_env: str | None = None  # an environment variable that sets data.root (MNIST_ROOT)


DATASETS = {
    "mnist": DatasetSpec("mnist", "MNIST", "idx", "MNIST/raw", 1, 28, 10, "MNIST", "12 MB", "MNIST_ROOT"),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "Fashion-MNIST", "idx", "FashionMNIST/raw", 1, 28, 10, "FashionMNIST", "31 MB"
    ),
    "kmnist": DatasetSpec("kmnist", "Kuzushiji-MNIST", "idx", "KMNIST/raw", 1, 28, 10, "KMNIST", "21 MB"),
    "cifar10": DatasetSpec("cifar10", "CIFAR-10", "cifar", "cifar-10-batches-py", 3, 32, 10, "CIFAR10", "163 MB"),
    "cifar100": DatasetSpec("cifar100", "CIFAR-100", "cifar", "cifar-100-python", 3, 32, 100, "CIFAR100", "161 MB"),
    "imagefolder": DatasetSpec("imagefolder", "image folder", "folder", "", None, None, None),
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fixed(spec: DatasetSpec, key: str, value) -> None:
    """The argument ``key`` must be the dataset's own value (its files decide it)."""
    own = getattr(spec, key)
    if own is not None and value != own:
        raise ArgumentError(
            f"{key}={value!r} is not allowed with dataset={spec.name!r}: {spec.title} images have {key}={own} "
            f"(only the imagefolder dataset converts and resizes); use {key}={own}"
        )


def check_data_settings(dataset, channels, image_size, num_classes, mean, std) -> DatasetSpec:
    """Every check of the dataset's settings that needs no file (channels 1 or 3, side and classes >= 1, a
    dataset's own values, the normalisation), each a line naming the argument; returns its spec."""
    spec = DATASETS.get(str(dataset))
    if spec is None:
        raise ArgumentError(f"dataset={dataset!r} is not known; use one of {list(DATASETS)}")
    if not _is_int(channels) or channels not in (1, 3):
        raise ArgumentError(f"channels={channels!r} is not allowed: use 1 (grey) or 3 (RGB)")
    if not _is_int(image_size) or image_size < 1:
        raise ArgumentError(f"image_size={image_size!r} is not allowed: use an integer >= 1, e.g. 32")
    if not _is_int(num_classes) or num_classes < 2:
        raise ArgumentError(f"num_classes={num_classes!r} is not allowed: use an integer >= 2 (a classifier needs two classes)")
    for key, value in (("channels", channels), ("image_size", image_size), ("num_classes", num_classes)):
        _fixed(spec, key, value)
    check_normalization(channels, mean, std)
    return spec


def check_normalization(channels: int, mean, std) -> None:
    """``mean`` and ``std``: one finite number per channel, every std > 0; else one line naming the argument."""
    for key, values in (("mean", mean), ("std", std)):
        try:
            numbers = tuple(float(v) for v in values if not isinstance(v, bool))
        except (TypeError, ValueError):
            numbers = ()
        ok = len(numbers) == len(list(values)) == channels and all(math.isfinite(v) for v in numbers)
        if not ok or (key == "std" and min(numbers) <= 0):
            example = ", ".join(["0.5"] * channels)
            raise ArgumentError(
                f"{key}={list(values) if isinstance(values, (list, tuple)) else values!r} is not allowed: use "
                f"{channels} finite number(s), one per channel{' (each > 0)' if key == 'std' else ''}, e.g. "
                f"{key}=[{example}]"
            )


def _root_hint(spec: DatasetSpec) -> str:
    return f"{spec.root_env} (or data.root)" if spec.root_env else "data.root"


def expected_files(spec: DatasetSpec) -> list[str]:
    """The files (or folders, for ``imagefolder``) the dataset needs, relative to its folder under ``data.root``."""
    if spec.reader == "idx":
        from shiftprobe.data.idx import IDX_FILES

        return [name for pair in IDX_FILES.values() for name in pair]
    if spec.reader == "cifar":
        from shiftprobe.data.cifar import cifar_files

        return [f.partition("/")[2] for split in ("train", "test") for f in cifar_files(spec.name, split)]
    from shiftprobe.data.folder import FOLDER_SPLITS

    return [f"{split}/" for split in FOLDER_SPLITS]


def missing_message(spec: DatasetSpec, root: str | Path, reason: str = "") -> str:
    """One line: which folder lacks the dataset, and the fixes (download, copy the files, another root)."""
    folder = (Path(root) / spec.folder).resolve()
    why = f" ({reason})" if reason else ""
    if spec.reader == "folder":
        return (
            f"the image folder {folder} lacks train/ or test/{why}: put the images into {folder}/train/<class>/"
            f"*.png|jpg and {folder}/test/<class>/..., or point data.root at such a folder (it cannot be downloaded)."
        )
    files = ", ".join(expected_files(spec))
    env = f"{spec.root_env}=/path/to/folder python train.py  (or data.root=/path/to/folder)" if spec.root_env else (
        "data.root=/path/to/folder"
    )
    return (
        f"{spec.title} files are missing from {folder}{why}. Download them with data.download=true "
        f"({spec.download_size}), put the files {files} (as downloaded{', or as .gz' if spec.reader == 'idx' else ''}) "
        f"into {folder}/, or point the data root at a folder that holds {spec.folder}/ with them: {env}."
    )


def broken_message(spec: DatasetSpec, err: BrokenFile) -> str:
    download = "" if spec.reader == "folder" else " and run again with data.download=true to download it again"
    return (
        f"{spec.title} file {err.path} is broken: {err.problem}. Delete it{download}, replace it with a good copy, "
        f"or point {_root_hint(spec)} at another folder."
    )


def missing_files(spec: DatasetSpec, root: str | Path) -> list[str]:
    """The expected files (or split folders) that ``root`` lacks (a ``.gz`` counts for an IDX file)."""
    folder = Path(root) / spec.folder
    if spec.reader == "folder":
        return [name for name in expected_files(spec) if not (folder / name).is_dir()]
    if spec.reader == "idx":
        from shiftprobe.data.idx import find_idx_file

        return [name for name in expected_files(spec) if find_idx_file(folder, name) is None]
    return [name for name in expected_files(spec) if not (folder / name).is_file()]


def download_dataset(spec: DatasetSpec, root: Path) -> None:
    """Fetch the official files with torchvision into ``root`` (md5-checked; nothing of them is loaded here);
    a failure (offline, proxy, read-only folder) is one line."""
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        if spec.reader == "idx":
            for train in (True, False):
                cls(str(root), train=train, download=True)
        else:
            torchvision.datasets.utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename,
                                                                    md5=cls.tgz_md5)
    except Exception as err:  # offline, proxy, read-only folder, ...: one clear message
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = lines[-1] if lines else err.__class__.__name__
        raise ShiftProbeError(missing_message(spec, root, f"they could not be downloaded: {first[:160]}")) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def check_root(spec: DatasetSpec, root: str | Path) -> None:
    """One line for an empty root: ``Path("")`` is the current folder, which would be read (and filled)."""
    if not str(root).strip():
        raise ShiftProbeError(
            f"the {spec.title} root is empty (data.root={str(root)!r}): "
            f"give the folder that holds {spec.folder or 'train/ and test/'}, e.g. data.root=/path/to/folder"
        )


def ensure_dataset(spec: DatasetSpec, root: str | Path, download: bool) -> None:
    """Make sure ``root`` holds the dataset's files: download the missing ones when ``download`` (not
    possible for ``imagefolder``), else one line naming the folder and ``data.download=true``."""
    check_root(spec, root)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ShiftProbeError(
            f"data.root={str(root)!r} is a file, not a folder. Point {_root_hint(spec)} at the folder that holds "
            f"{spec.folder or 'train/ and test/'}" + (" (e.g. MNIST_ROOT=$(realpath ../shared/data))." if spec.root_env else ".")
        )
    missing = missing_files(spec, root)
    if missing and (not download or spec.reader == "folder"):
        which = [] if len(missing) == len(expected_files(spec)) else ["missing: " + ", ".join(missing)]
        off = [] if spec.reader == "folder" else ["data.download=false"]
        raise ShiftProbeError(missing_message(spec, root, "; ".join(off + which)))
    if missing:
        download_dataset(spec, root)
        still = missing_files(spec, root)
        if still:
            raise ShiftProbeError(missing_message(spec, root, "the download did not bring " + ", ".join(still)))


def load_split(spec: DatasetSpec, root: str | Path, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an in-memory dataset (``idx`` or ``cifar``): ``(uint8 images, long labels)``, grey
    images ``N x H x W``, colour ``N x 3 x H x W``; a broken file ends with one line naming it."""
    check_root(spec, root)
    root = Path(root)
    try:
        if spec.reader == "idx":
            from shiftprobe.data.idx import read_idx_split

            return read_idx_split(root / spec.folder, split, spec.image_size, num_classes, spec.title)
        from shiftprobe.data.cifar import read_cifar_split

        return read_cifar_split(root, spec.name, split, num_classes, spec.title)
    except BrokenFile as err:
        raise ShiftProbeError(broken_message(spec, err)) from None
    except FileNotFoundError:
        raise ShiftProbeError(missing_message(spec, root, "missing: " + ", ".join(missing_files(spec, root)))) from None


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images (``N x H x W`` or
    ``N x C x H x W``) as pixels in [0, 1]: a dataset's ``data.mean`` / ``data.std``; summed in float64,
    ``chunk`` images at a time."""
    x = images.unsqueeze(1) if images.dim() == 3 else images
    channels = x.shape[1]
    sums = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for part in x.split(chunk):
        values = part.to(torch.float64).div_(255).transpose(0, 1).reshape(channels, -1)
        sums += values.sum(dim=1)
        squares += values.square().sum(dim=1)
    n = x.numel() // channels
    mean = sums / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
