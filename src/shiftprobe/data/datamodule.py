"""``ImageDataModule``: every dataset of ``data=<name>``, each split held in memory as ONE uint8 tensor (on
the trainer's GPU when ``num_workers`` is 0) and batched by one indexing (``imagefolder``: training images
read from disk), converted to [0, 1] floats and augmented on the device, with its own seeded, resumable
random streams (docs/data.md). Normalisation is declared (``normalization``), not applied here."""

from __future__ import annotations

import math
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from shiftprobe.data.augment import flip_per_sample, rotate_per_sample
from shiftprobe.data.datasets import check_data_settings, ensure_dataset, load_split
from shiftprobe.data.sampling import (
    AUGMENT_STREAM,
    FLIP_STREAM,
    ORDER_STREAM,
    ROTATE_STREAM,
    AugmentStream,
    EpochBatchSampler,
    EpochSampler,
    InMemoryDataset,
    ShardSampler,
    identity_collate,
    stream_seed,
)
from shiftprobe.errors import ShiftProbeError
from shiftprobe.models.lab import MNIST_MEAN, MNIST_STD
from shiftprobe.probe.inputs import as_image_batch, to_pixels
from shiftprobe.probe.resample import shift_images_per_sample


class ImageDataModule(L.LightningDataModule):
    """One dataset (``shiftprobe.data.datasets.DATASETS``; the keys of ``data=``, docs/data.md): train /
    val (``val_size`` images of the official training set, split by ``split_seed``) / test (the official
    test set). ``seed`` alone decides the training order and the augmentation draws."""

    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        download: bool = True,
        channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        mean=(MNIST_MEAN,),
        std=(MNIST_STD,),
        normalize: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        train_shift: int = 0,
        train_rotate: float = 0.0,
        train_flip: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.spec = check_data_settings(dataset, channels, image_size, num_classes, mean, std)
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)  # plain values in checkpoints
        self.save_hyperparameters(logger=False)
        self.root = str(root)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: InMemoryDataset | None = None
        #: the class folders of ``imagefolder`` (label i is ``classes[i]``); None for the other datasets
        self.classes: list[str] | None = None
        # the training order (one permutation per epoch) and the augmentation draws, saved in checkpoints
        self._shuffle_seed: int = stream_seed(seed, ORDER_STREAM)
        self._resume: tuple[int, int] | None = None
        streams = {"shift": AUGMENT_STREAM, "rotate": ROTATE_STREAM, "flip": FLIP_STREAM}
        self._streams = {name: AugmentStream(stream) for name, stream in streams.items()}

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)``, one value per channel, when ``normalize`` is on; None when it is off."""
        if not self.hparams.normalize:
            return None
        return tuple(self.hparams.mean), tuple(self.hparams.std)

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    def _split_tensor(self, name: str, part: str) -> torch.Tensor | None:
        dataset = getattr(self, f"{name}_set")
        return None if dataset is None else getattr(dataset, part, None)

    train_images = property(lambda self: self._split_tensor("train", "images"), doc="uint8, in memory (else None)")
    train_labels = property(lambda self: self._split_tensor("train", "labels"))
    val_images = property(lambda self: self._split_tensor("val", "images"), doc="uint8, in memory (else None)")
    val_labels = property(lambda self: self._split_tensor("val", "labels"))
    test_images = property(lambda self: self._split_tensor("test", "images"), doc="uint8, always in memory")
    test_labels = property(lambda self: self._split_tensor("test", "labels"))

    def prepare_data(self) -> None:
        ensure_dataset(self.spec, self.root, self.hparams.download)
        self._checked = True

    def _ensure(self) -> None:
        if not getattr(self, "_checked", False):
            ensure_dataset(self.spec, self.root, download=False)
            self._checked = True

    def _read(self, split: str) -> Dataset:
        """One official split: in memory (``InMemoryDataset``) or, for ``imagefolder``, on disk."""
        if self.spec.reader != "folder":
            return InMemoryDataset(*load_split(self.spec, self.root, split, self.num_classes))
        from pathlib import Path

        from shiftprobe.data.folder import FolderDataset, class_names, scan_split

        root = Path(self.root)
        self.classes = class_names(root / "train")
        if len(self.classes) != self.num_classes:
            fix = (f"use data.num_classes={len(self.classes)}" if len(self.classes) >= 2 else "a classifier needs at "
                   "least 2: put each class's images into its own folder train/<class>/")
            raise ShiftProbeError(
                f"data.num_classes={self.num_classes} does not fit {root / 'train'}: it has {len(self.classes)} class "
                f"folder(s) ({', '.join(self.classes[:5])}{'...' if len(self.classes) > 5 else ''}); {fix}"
            )
        paths, labels = scan_split(root, split, self.classes)
        return FolderDataset(paths, labels, self.hparams.image_size, self.hparams.channels)

    def _split_train(self, full: Dataset) -> tuple[Dataset, Dataset]:
        """``(train, val)``: ``val_size`` images of the official training set, seeded by ``split_seed``."""
        n, n_val = len(full), int(self.hparams.val_size)
        if not 1 <= n_val < n:
            raise ShiftProbeError(
                f"data.val_size={n_val} does not fit the {n} training images; "
                f"use a value from 1 to {n - 1} (default 5000)."
            )
        g = torch.Generator().manual_seed(int(self.hparams.split_seed))
        perm = torch.randperm(n, generator=g)
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        return full.subset(train_idx), full.subset(val_idx)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            self._ensure()
            self.train_set, self.val_set = self._split_train(self._read("train"))
        if stage in (None, "test", "predict") and self.test_set is None:
            self._ensure()
            test = self._read("test")
            if not isinstance(test, InMemoryDataset):  # the measurement reads the test images as one tensor
                test = InMemoryDataset(*test.read_all(self.hparams.eval_batch_size, self.hparams.num_workers))
            self.test_set = test
        strategy = getattr(getattr(self, "trainer", None), "strategy", None)
        if strategy is not None and self.hparams.num_workers <= 0:  # the splits live on the trainer's GPU
            device = torch.device(strategy.root_device)
            for dataset in (self.train_set, self.val_set, self.test_set):
                if dataset is not None and device.type != "cpu":
                    dataset.to(device)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        batching: dict = {"batch_size": batch_size, "sampler": None}
        if shuffle:  # training: each batch one slice of the epoch's order
            sampler = EpochSampler(len(dataset), self._shuffle_seed)
            if self._resume is not None:
                sampler.resume_at(self._resume[0], self._resume[1] * batch_size)
                self._resume = None
            batching = {"batch_sampler": EpochBatchSampler(sampler, batch_size, drop_last=False)}
        elif getattr(getattr(self, "trainer", None), "world_size", 1) > 1:  # val / test under DDP
            batching["sampler"] = ShardSampler(len(dataset), self.trainer.world_size, self.trainer.global_rank)
        workers = self.hparams.num_workers
        return DataLoader(dataset, **batching, collate_fn=identity_collate, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def paired_test_set(self, max_shift: int, mode: str = "crop", pattern: str = "grid", seed: int = 0):
        """The paired-translation test set: items ``(x, T(s) x, y, s)`` over the official test images."""
        from shiftprobe.data.paired import PairedShiftDataset, Translation

        if self.test_set is None:
            self.setup("test")
        return PairedShiftDataset(self.test_images, self.test_labels, Translation(max_shift, mode, pattern, seed))

    #: checkpoint keys of each augmentation stream: ``<prefix>_epoch``, ``<prefix>_state`` (the shifts'
    #: keep the names of checkpoints written before rotations and flips existed)
    STATE_PREFIXES = {"shift": "augment", "rotate": "rotate", "flip": "flip"}

    def state_dict(self) -> dict:
        """The training order's seed, the batches completed this epoch and each augmentation generator that
        has drawn (so a run resumes mid-epoch with the same images and draws)."""
        state: dict = {"shuffle_seed": self._shuffle_seed}
        if self.classes is not None:  # what each label means (imagefolder)
            state["classes"] = list(self.classes)
        trainer = getattr(self, "trainer", None)
        done = None
        if trainer is not None and hasattr(trainer, "fit_loop"):
            done = int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
            state |= {"epoch": int(trainer.current_epoch), "batches_done": done, "batch_size": int(self.hparams.batch_size)}
        for name, prefix in self.STATE_PREFIXES.items():
            saved = self._streams[name].state(done)
            if saved is not None:
                state |= {f"{prefix}_epoch": saved[0], f"{prefix}_state": saved[1]}
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("classes")
        if saved is not None and self.classes is not None and list(saved) != self.classes:
            raise ShiftProbeError(
                f"the checkpoint was trained on the classes {list(saved)[:5]}, but {self.root}/train holds "
                f"{self.classes[:5]}: label i would name another class; use the image folder of the run (data.root)"
            )
        self._check_resume_batches(state)
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
            # the rest of the epoch is the same images in the same order: Lightning's warning does not apply
            self._resume = (int(state["epoch"]), int(state["batches_done"]))
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def _check_resume_batches(self, state: dict) -> None:
        """The rest of a stopped epoch is counted in batches (``batches_done``): mid-epoch, another batch size
        would skip other images, so one line."""
        saved, done = state.get("batch_size"), int(state.get("batches_done", 0))
        if saved is None or saved == self.hparams.batch_size or self.train_set is None:
            return
        if 0 < done < math.ceil(len(self.train_set) / saved):
            raise ShiftProbeError(
                f"the checkpoint stopped after {done} batches of data.batch_size={saved} in epoch {state.get('epoch')}: "
                f"resume it with data.batch_size={saved} (the rest of the epoch follows its batches), or resume a "
                f"checkpoint written at the end of an epoch"
            )

    def _generator(self, name: str) -> torch.Generator:
        """The generator of augmentation ``name`` for the next batch (never the global one)."""
        trainer = getattr(self, "trainer", None)
        epoch = int(getattr(trainer, "current_epoch", 0))
        rank = int(getattr(trainer, "global_rank", 0))
        return self._streams[name].next_batch(self.hparams.seed, epoch, rank)

    def augment_shifts(self, n: int, k: int) -> torch.Tensor:
        """``n`` training shifts ``(dy, dx)`` in ``[-k, k]^2`` (long, on the CPU) for the next batch."""
        return torch.randint(-k, k + 1, (n, 2), generator=self._generator("shift"))

    def augment_angles(self, n: int, degrees: float) -> torch.Tensor:
        """``n`` training angles uniform in ``[-degrees, degrees]`` (float64, CPU) for the next batch."""
        u = torch.rand(n, generator=self._generator("rotate"), dtype=torch.float64)
        return (2.0 * u - 1.0) * float(degrees)

    def augment_flips(self, n: int) -> torch.Tensor:
        """``n`` training flip flags (bool, on the CPU), each true with probability 0.5, for the next batch."""
        return torch.rand(n, generator=self._generator("flip")) < 0.5

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch (``B x C x H x W`` floats) shifted, rotated, then flipped, each only when switched
        on (an unused augmentation neither draws nor changes a pixel)."""
        k = int(self.hparams.train_shift)
        if k > 0:
            x = shift_images_per_sample(x, self.augment_shifts(x.shape[0], k).to(x.device), "crop")
        degrees = float(self.hparams.train_rotate)
        if degrees > 0:
            x = rotate_per_sample(x, self.augment_angles(x.shape[0], degrees).to(x.device))
        if self.hparams.train_flip:
            x = flip_per_sample(x, self.augment_flips(x.shape[0]).to(x.device))
        return x

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        x = to_pixels(as_image_batch(images), torch.float32)  # B x C x H x W in [0, 1], as ToTensor
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        return x, labels


class MNISTDataModule(ImageDataModule):
    """``ImageDataModule`` (``data=mnist``) under the name MNIST checkpoints store their data state under."""
