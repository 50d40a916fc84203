"""MNIST as in-memory uint8 tensors, batched by indexing, converted to [0, 1] floats on the device.

Each split is ONE ``N x 28 x 28`` uint8 tensor read by torchvision's own MNIST loader. A batch is
``images[idx]`` for a whole index batch (``InMemoryDataset.__getitems__``), so there is no per-image
PIL / ``ToTensor`` pipeline. When the trainer runs on a GPU (any non-CPU device) and
``num_workers`` is 0, ``setup`` moves the splits onto that device once, so batches are cut there and
never copied from the CPU. ``on_after_batch_transfer`` turns the uint8 batch into ``B x 1 x 28 x 28``
floats in [0, 1] (exactly ``ToTensor``: ``x / 255``) on the device and, for training batches only,
applies the optional augmentations, in this order: a random shift (``data.train_shift``), a random
rotation (``data.train_rotate``) and a random horizontal flip (``data.train_flip``), each a whole-batch
tensor operation with one random parameter per image (see ``MNISTDataModule.augment``).

Randomness of the data has its own seeds, derived from the run seed (``data.seed``, i.e. ``${seed}``)
alone and never drawn from the global generator: the training order (one permutation per epoch) and
each augmentation's draws (shifts, angles, flips: one generator each, per epoch and rank, so switching
one augmentation on does not change another's draws). So two model variants trained with the same
seed see the same images in the same order with the same augmentation, whatever their initialisation
draws. All are saved in checkpoints, so a run resumed mid-epoch continues with the same images and draws.

Normalisation is not done here: it is a fixed first step inside the network (``LabCNN(normalize=...)``),
so every shift of the measurement acts on pixels in [0, 1].

Before torchvision reads anything, the four files are checked (present, header magic, 28x28, size
matching the header) so a missing, truncated or corrupted file ends with one clear message.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import socket
import struct
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchvision
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from shiftprobe.data.augment import flip_per_sample, rotate_per_sample
from shiftprobe.errors import ShiftProbeError
from shiftprobe.probe.transforms import IMAGE_SIZE, shift_images_per_sample

log = logging.getLogger(__name__)

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
#: file name -> (header magic, official item count)
MNIST_FILES = {
    "train-images-idx3-ubyte": (IMAGES_MAGIC, 60000),
    "train-labels-idx1-ubyte": (LABELS_MAGIC, 60000),
    "t10k-images-idx3-ubyte": (IMAGES_MAGIC, 10000),
    "t10k-labels-idx1-ubyte": (LABELS_MAGIC, 10000),
}
DOWNLOAD_TIMEOUT_S = 30
#: the data's independent random streams, each derived from the run seed (``stream_seed``):
#: the training order, the augmentation shifts, angles and flips
ORDER_STREAM, AUGMENT_STREAM, ROTATE_STREAM, FLIP_STREAM = 1, 2, 3, 4


def stream_seed(seed: int, *stream: int) -> int:
    """A seed for one random stream of a run, a function of the run ``seed`` and the stream key only.

    ``stream`` names the stream, e.g. ``(AUGMENT_STREAM, epoch, rank)``; different keys give
    independent streams (NumPy's ``SeedSequence`` spawn keys), and nothing is drawn from a global
    generator, so what else a run draws (e.g. a larger model's initial weights) cannot change them.

    Examples
    --------
    >>> stream_seed(0, ORDER_STREAM) == stream_seed(0, ORDER_STREAM) != stream_seed(1, ORDER_STREAM)
    True
    """
    state = np.random.SeedSequence(int(seed) % 2**64, spawn_key=tuple(int(k) for k in stream))
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(2))  # 62 bits: fits torch's int64


def raw_folder(root: str | Path) -> Path:
    """Where torchvision's MNIST looks for the four files: ``<root>/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def missing_files_message(root: str | Path, reason: str = "") -> str:
    folder = raw_folder(root).resolve()
    names = ", ".join(MNIST_FILES)
    why = f" ({reason})" if reason else ""
    return (
        f"MNIST files are missing from {folder} and could not be downloaded{why}. "
        f"Put the four files {names} (uncompressed, or as .gz) into {folder}/, "
        f"or point the data root at a folder that holds MNIST/raw/ with them: "
        f"MNIST_ROOT=/path/to/folder python train.py  (or data.root=/path/to/folder)."
    )


def _bad_file_message(path: Path, problem: str) -> str:
    return (
        f"MNIST file {path} is broken: {problem}. Delete it and run again with data.download=true to "
        f"download it again, replace it with a good copy, or point MNIST_ROOT (data.root) at another folder."
    )


def check_mnist_file(path: Path, magic: int) -> int:
    """Check an uncompressed idx file's header and size; return its item count."""
    size = path.stat().st_size
    header_len = 16 if magic == IMAGES_MAGIC else 8
    if size < header_len:
        raise ShiftProbeError(_bad_file_message(path, f"only {size} bytes, shorter than its header"))
    with path.open("rb") as fh:
        header = fh.read(header_len)
    found_magic, count = struct.unpack(">ii", header[:8])
    if found_magic != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise ShiftProbeError(
            _bad_file_message(
                path, f"header magic number is {found_magic}, expected {magic} for an idx {kind} file"
            )
        )
    item = 1
    if magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">ii", header[8:16])
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ShiftProbeError(_bad_file_message(path, f"images are {rows}x{cols}, expected 28x28"))
        item = rows * cols
    expected = header_len + count * item
    if count < 1 or size != expected:
        raise ShiftProbeError(
            _bad_file_message(
                path, f"{size} bytes, but its header announces {count} items ({expected} bytes); truncated?"
            )
        )
    return count


def _extract_gz(gz: Path, target: Path) -> None:
    try:
        with gzip.open(gz, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError) as err:
        target.unlink(missing_ok=True)
        raise ShiftProbeError(_bad_file_message(gz, f"it cannot be decompressed ({err})")) from None


def check_root(root: str | Path) -> None:
    """Refuse an empty root (it would read and download MNIST in the current folder) in one line."""
    if not str(root).strip():
        raise ShiftProbeError(
            f"the MNIST root is empty (data.root={str(root)!r}): give the folder that holds MNIST/raw/, "
            f"e.g. data.root=data (with internet MNIST is downloaded there)."
        )


def ensure_mnist(root: str | Path, download: bool) -> None:
    """Make sure ``<root>/MNIST/raw`` holds four sound files: extract .gz files, download, then check."""
    check_root(root)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ShiftProbeError(
            f"data.root={str(root)!r} is a file, not a folder. Point MNIST_ROOT (or data.root) at the folder "
            f"that holds MNIST/raw/ (e.g. MNIST_ROOT=/path/to/folder)."
        )
    raw = raw_folder(root)
    for name in MNIST_FILES:
        target, gz = raw / name, raw / f"{name}.gz"
        if not target.exists() and gz.exists():
            _extract_gz(gz, target)
    missing = [name for name in MNIST_FILES if not (raw / name).exists()]
    if missing and not download:
        raise ShiftProbeError(
            missing_files_message(root, "data.download=false; missing: " + ", ".join(missing))
        )
    if missing:
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            for train in (True, False):
                torchvision.datasets.MNIST(str(root), train=train, download=True)
        except Exception as err:  # offline, proxy, read-only folder, ...: one clear message
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            first = lines[-1] if lines else err.__class__.__name__
            raise ShiftProbeError(missing_files_message(root, f"download failed: {first[:160]}")) from None
        finally:
            socket.setdefaulttimeout(old_timeout)
    counts = {name: check_mnist_file(raw / name, magic) for name, (magic, _) in MNIST_FILES.items()}
    for split in ("train", "t10k"):
        n_img, n_lab = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise ShiftProbeError(
                _bad_file_message(raw / f"{split}-labels-idx1-ubyte", f"{n_lab} labels for {n_img} images")
            )
    for name, (_, official) in MNIST_FILES.items():
        if counts[name] != official:
            log.info(
                "%s holds %d items, not the official %d (a subset or synthetic data?)",
                name,
                counts[name],
                official,
            )


#: MNIST's classes are the digits 0 .. 9
NUM_CLASSES = 10


def load_split(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split through torchvision's loader: ``(uint8 N x 28 x 28, long N)``; a label outside 0 .. 9
    is refused in one line naming the file, the label and its position."""
    check_root(root)
    try:
        ds = torchvision.datasets.MNIST(str(root), train=train, download=False)
    except RuntimeError as err:
        raise ShiftProbeError(missing_files_message(root, str(err))) from None
    labels = ds.targets.long().contiguous()
    bad = ((labels < 0) | (labels >= NUM_CLASSES)).nonzero()
    if len(bad):
        index = int(bad[0])
        path = raw_folder(root) / ("train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte")
        raise ShiftProbeError(
            _bad_file_message(
                path, f"label {int(labels[index])} at position {index} is not a digit 0..{NUM_CLASSES - 1} "
                f"(labels outside 0..{NUM_CLASSES - 1}: {len(bad)} of {len(labels)})"
            )
        )
    return ds.data.contiguous(), labels


def _identity_collate(batch):
    return batch


class InMemoryDataset(Dataset):
    """Images and labels held as tensors; ``__getitems__`` returns a whole batch by one indexing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices):
        # index_select, not images[idx]: the same rows, about 20x faster for a batch of 64 on the CPU
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)


class AugmentStream:
    """One augmentation's random draws: a CPU generator seeded at the start of every epoch from
    ``(seed, stream, epoch, rank)`` alone, drawn from once per training batch, with what a checkpoint
    needs to resume it mid-epoch (its epoch, its state, and its state before the last draw)."""

    def __init__(self, stream: int):
        self.stream = int(stream)
        self.generator = torch.Generator()
        self.epoch: int | None = None
        self.drawn = 0  # batches drawn in ``epoch``
        self.before: torch.Tensor | None = None  # the generator's state before the last draw

    def next_batch(self, seed: int, epoch: int, rank: int) -> torch.Generator:
        """The generator to draw the next batch's parameters from (reseeded when a new epoch starts)."""
        if self.epoch != epoch:
            self.generator.manual_seed(stream_seed(seed, self.stream, epoch, rank))
            self.epoch, self.drawn = epoch, 0
        self.before = self.generator.get_state()
        self.drawn += 1
        return self.generator

    def state(self, batches_done: int | None) -> tuple[int, torch.Tensor] | None:
        """``(epoch, generator state)`` to save; None before the first draw. Stopped inside a batch
        (``drawn == batches_done + 1``, e.g. Ctrl-C), the state before that batch: it is drawn again."""
        if self.epoch is None:
            return None
        if batches_done is not None and self.drawn == batches_done + 1:
            return self.epoch, self.before
        return self.epoch, self.generator.get_state()

    def restore(self, epoch: int, state: torch.Tensor, batches_done: int) -> None:
        self.generator.set_state(state.cpu())
        self.epoch, self.drawn = int(epoch), int(batches_done)
        self.before = self.generator.get_state()


class EpochSampler(Sampler):
    """A seeded random order of ``n`` indices per epoch (``set_epoch``, called by Lightning), which can
    start part-way through an epoch: ``resume_at(epoch, skip)`` drops that epoch's first ``skip`` indices."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        self._resume = (int(epoch), int(skip))

    def __len__(self) -> int:
        return self.n

    def order(self) -> torch.Tensor:
        """This epoch's indices (long), from the resume position when one is set for this epoch."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=g)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
            self._resume = None
        return order

    def __iter__(self):
        return iter(self.order().tolist())


class EpochBatchSampler(BatchSampler):
    """``BatchSampler`` over an ``EpochSampler`` that yields each batch as one slice of the epoch's index
    tensor (the same indices in the same batches), so the data loader builds no list of 64 ints per batch.
    Over any other sampler (e.g. the ``DistributedSampler`` Lightning puts in under DDP, built by
    Lightning with the same arguments) it is a plain ``BatchSampler``."""

    def __iter__(self):
        if not isinstance(self.sampler, EpochSampler):
            yield from super().__iter__()
            return
        order = self.sampler.order()
        n = len(order) // self.batch_size * self.batch_size if self.drop_last else len(order)
        for i0 in range(0, n, self.batch_size):
            yield order[i0 : i0 + self.batch_size]


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets the indices ``r, r + W, r + 2W, ...`` in order, without padding, so every
    image is evaluated exactly once over all ranks (the per-rank counts may differ by one; the metrics
    sum their states across ranks). Lightning's own ``DistributedSampler`` pads the last ranks with
    repeated images; being a ``DistributedSampler``, this one is used as it is instead."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.n = int(n)

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


class MNISTDataModule(L.LightningDataModule):
    """MNIST train (55,000) / val (5,000, seeded split) / test (official 10,000), in memory.

    ``seed`` (the run seed, ``data.seed: ${seed}``) alone decides the training order and the
    augmentation draws (``train_shift``, ``train_rotate``, ``train_flip``); ``split_seed`` decides the
    train / validation split.

    Training augmentation, on the device, per batch, training batches only (validation and test
    batches are never changed), in this order:

    - ``train_shift=K`` (int, 0 = off): each image shifted by a random ``(dy, dx)`` in ``[-K, K]^2``
      (crop: zero fill), uniform over the integers;
    - ``train_rotate=D`` (degrees, 0 = off): each image rotated about its centre by an angle uniform in
      ``[-D, D]``, bilinear, zero fill (as torchvision's ``RandomAffine(degrees=D)``);
    - ``train_flip=True``: each image mirrored left-right with probability 0.5 (as torchvision's
      ``RandomHorizontalFlip``; a mirrored digit is not always the same digit: this is the control for
      the ``Flip`` family, not a label-preserving augmentation for MNIST).
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        train_shift: int = 0,
        train_rotate: float = 0.0,
        train_flip: bool = False,
        normalize: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        # ``normalize`` is applied inside the network; it is kept here so the checkpoint records it
        self.save_hyperparameters(logger=False)
        self.root = str(root)
        self.train_images = self.train_labels = None
        self.val_images = self.val_labels = None
        self.test_images: torch.Tensor | None = None
        self.test_labels: torch.Tensor | None = None
        # the training order: a seed derived from the run seed, then one permutation per epoch
        # (EpochSampler); saved in checkpoints with the position, so a run interrupted mid-epoch resumes
        # exactly (a checkpoint's seed wins over this one)
        self._shuffle_seed: int = stream_seed(seed, ORDER_STREAM)
        self._resume: tuple[int, int] | None = None
        # the augmentation draws: one CPU generator each, seeded per epoch (and rank); see ``augment``
        self._streams = {
            "shift": AugmentStream(AUGMENT_STREAM),
            "rotate": AugmentStream(ROTATE_STREAM),
            "flip": AugmentStream(FLIP_STREAM),
        }

    def prepare_data(self) -> None:
        ensure_mnist(self.root, self.hparams.download)
        self._checked = True

    def _ensure(self) -> None:
        if not getattr(self, "_checked", False):
            ensure_mnist(self.root, download=False)
            self._checked = True

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_images is None:
            self._ensure()
            images, labels = load_split(self.root, train=True)
            n_val = int(self.hparams.val_size)
            if not 1 <= n_val < len(labels):
                raise ShiftProbeError(
                    f"data.val_size={n_val} does not fit the {len(labels)} training images; "
                    f"use a value from 1 to {len(labels) - 1} (default 5000)."
                )
            g = torch.Generator().manual_seed(int(self.hparams.split_seed))
            perm = torch.randperm(len(labels), generator=g)
            val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
            self.train_images, self.train_labels = images[train_idx], labels[train_idx]
            self.val_images, self.val_labels = images[val_idx], labels[val_idx]
        if stage in (None, "test", "predict") and self.test_images is None:
            self._ensure()
            self.test_images, self.test_labels = load_split(self.root, train=False)
        device = self.resident_device()
        if device is not None:
            self.to_device(device)

    def resident_device(self) -> torch.device | None:
        """The trainer's device when the splits should live there (not the CPU, no worker processes)."""
        strategy = getattr(getattr(self, "trainer", None), "strategy", None)
        if strategy is None or self.hparams.num_workers > 0:
            return None
        device = torch.device(strategy.root_device)
        return None if device.type == "cpu" else device

    def to_device(self, device: torch.device | str) -> None:
        """Move every loaded split onto ``device`` (once; a no-op for splits already there)."""
        for name in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    def _loader(self, images, labels, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = None
        if shuffle:
            sampler = EpochSampler(len(labels), self._shuffle_seed)
            if self._resume is not None:
                sampler.resume_at(self._resume[0], self._resume[1] * batch_size)
                self._resume = None
        elif getattr(getattr(self, "trainer", None), "world_size", 1) > 1:  # val / test under DDP
            sampler = ShardSampler(len(labels), self.trainer.world_size, self.trainer.global_rank)
        batching: dict = {"batch_size": batch_size, "sampler": sampler}
        if shuffle:  # training: each batch one slice of the epoch's order
            batching = {"batch_sampler": EpochBatchSampler(sampler, batch_size, drop_last=False)}
        return DataLoader(
            InMemoryDataset(images, labels),
            **batching,
            collate_fn=_identity_collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_images, self.train_labels, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_images, self.val_labels, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_images, self.test_labels, self.hparams.eval_batch_size, shuffle=False)

    def paired_test_set(self, max_shift: int, mode: str = "crop", pattern: str = "grid", seed: int = 0):
        """The paired-translation test set: items ``(x, T(s) x, y, s)`` over the official test images."""
        from shiftprobe.data.paired import PairedShiftDataset, ShiftPlan

        if self.test_images is None:
            self.setup("test")
        plan = ShiftPlan.build(max_shift, mode, pattern, seed, len(self.test_images))
        return PairedShiftDataset(self.test_images, self.test_labels, plan)

    # -- checkpoints: resume mid-epoch with the same order of images and the same shifts -------------
    #: checkpoint keys of each augmentation stream: ``<prefix>_epoch``, ``<prefix>_state`` (the shifts'
    #: keep the names of checkpoints written before rotations and flips existed)
    STATE_PREFIXES = {"shift": "augment", "rotate": "rotate", "flip": "flip"}

    def state_dict(self) -> dict:
        """The training order's seed, how far the current epoch got (batches completed) and each
        augmentation generator that has drawn (its epoch and state before the first batch not yet
        completed)."""
        state: dict = {"shuffle_seed": self._shuffle_seed}
        trainer = getattr(self, "trainer", None)
        done = None
        if trainer is not None and hasattr(trainer, "fit_loop"):
            done = int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
            state |= {"epoch": int(trainer.current_epoch), "batches_done": done}
        for name, prefix in self.STATE_PREFIXES.items():
            saved = self._streams[name].state(done)
            if saved is not None:
                state |= {f"{prefix}_epoch": saved[0], f"{prefix}_state": saved[1]}
        return state

    def load_state_dict(self, state: dict) -> None:
        if "shuffle_seed" not in state:
            return
        self._shuffle_seed = int(state["shuffle_seed"])
        trainer = getattr(self, "trainer", None)
        if getattr(trainer, "world_size", 1) != 1:
            # under DDP each rank has its own augmentation stream and only rank 0's was saved: every
            # rank starts its next epoch from its own seed (a stopped epoch's remaining shifts differ)
            return
        for name, prefix in self.STATE_PREFIXES.items():
            if f"{prefix}_state" in state:
                self._streams[name].restore(
                    state[f"{prefix}_epoch"], state[f"{prefix}_state"], state.get("batches_done", 0)
                )
        if trainer is not None and "epoch" in state:
            # the rest of the epoch is the same images in the same order, so Lightning's generic warning
            # about non-resumable loaders does not apply; under DDP Lightning's distributed sampler
            # reorders the images, so there the epoch's remaining batches are drawn afresh (and it warns)
            self._resume = (int(state["epoch"]), int(state["batches_done"]))
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def _generator(self, name: str) -> torch.Generator:
        """The generator of augmentation ``name`` for the next batch: seeded at the start of every epoch
        from ``(seed, stream, epoch, rank)`` alone, or continuing the state restored from a checkpoint of
        that epoch; never the global generator, so the model's own random draws cannot change it."""
        trainer = getattr(self, "trainer", None)
        epoch = int(getattr(trainer, "current_epoch", 0))
        rank = int(getattr(trainer, "global_rank", 0))
        return self._streams[name].next_batch(self.hparams.seed, epoch, rank)

    def augment_shifts(self, n: int, k: int) -> torch.Tensor:
        """``n`` training shifts ``(dy, dx)`` in ``[-k, k]^2`` (long, on the CPU) for the next batch."""
        return torch.randint(-k, k + 1, (n, 2), generator=self._generator("shift"))

    def augment_angles(self, n: int, degrees: float) -> torch.Tensor:
        """``n`` training angles uniform in ``[-degrees, degrees]`` (float64 degrees, on the CPU) for the
        next batch."""
        u = torch.rand(n, generator=self._generator("rotate"), dtype=torch.float64)
        return (2.0 * u - 1.0) * float(degrees)

    def augment_flips(self, n: int) -> torch.Tensor:
        """``n`` training flip flags (bool, on the CPU), each true with probability 0.5, for the next batch."""
        return torch.rand(n, generator=self._generator("flip")) < 0.5

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch (``B x 1 x H x W`` floats, on the device) augmented: shift, then rotate, then
        flip, each only when switched on (so an unused augmentation neither draws nor changes a pixel)."""
        k = int(self.hparams.train_shift)
        if k > 0:
            x = shift_images_per_sample(x, self.augment_shifts(x.shape[0], k).to(x.device), "crop")
        degrees = float(self.hparams.train_rotate)
        if degrees > 0:
            x = rotate_per_sample(x, self.augment_angles(x.shape[0], degrees).to(x.device))
        if self.hparams.train_flip:
            x = flip_per_sample(x, self.augment_flips(x.shape[0]).to(x.device))
        return x

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        x = images.unsqueeze(1).float().div_(255)  # B x 1 x 28 x 28 in [0, 1], as ToTensor
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        return x, labels
