"""MNISTDataModule on synthetic idx files (compared with what torchvision's own MNIST loader reads)."""

import gzip
import shutil
from types import SimpleNamespace
from urllib.error import URLError

import lightning as L
import pytest
import torch
import torchvision
from conftest import FILES, N_TEST, N_TRAIN, VAL_SIZE

import shiftprobe.app.train as train_module
from shiftprobe.data import AUGMENT_STREAM, MNISTDataModule, ensure_mnist, stream_seed
from shiftprobe.data.mnist import load_split
from shiftprobe.errors import ShiftProbeError
from shiftprobe.probe.resample import shift_images_per_sample


def make_dm(root, **kw):
    kw = {"download": False, "batch_size": 32, "eval_batch_size": 50, "val_size": VAL_SIZE} | kw
    dm = MNISTDataModule(root=str(root), **kw)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_splits_in_memory_uint8(mnist_root):
    dm = make_dm(mnist_root)
    assert dm.train_images.shape == (N_TRAIN - VAL_SIZE, 28, 28) and dm.train_images.dtype == torch.uint8
    assert dm.val_images.shape == (VAL_SIZE, 28, 28)
    assert dm.test_images.shape == (N_TEST, 28, 28) and dm.test_images.dtype == torch.uint8
    assert dm.test_labels.shape == (N_TEST,) and dm.test_labels.dtype == torch.long
    # test split is torchvision's, untouched and in order
    ref = torchvision.datasets.MNIST(str(mnist_root), train=False)
    assert torch.equal(dm.test_images, ref.data) and torch.equal(dm.test_labels, ref.targets)


def test_split_is_seeded_disjoint_and_complete(mnist_root):
    a, b, c = make_dm(mnist_root), make_dm(mnist_root), make_dm(mnist_root, split_seed=1)
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_labels, b.train_labels)
    assert not torch.equal(a.val_images, c.val_images)
    every = torch.cat([a.train_images, a.val_images]).flatten(1)
    ref = torchvision.datasets.MNIST(str(mnist_root), train=True).data.flatten(1)
    assert sorted(map(bytes, every.numpy())) == sorted(map(bytes, ref.numpy()))


def test_batches_are_whole_tensors_then_floats_on_transfer(mnist_root):
    dm = make_dm(mnist_root)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (50, 28, 28) and images.dtype == torch.uint8 and labels.shape == (50,)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x[:, 0], images.float() / 255)  # exactly ToTensor
    assert torch.equal(y, labels)
    train_batch = next(iter(dm.train_dataloader()))
    assert train_batch[0].shape == (32, 28, 28)


@pytest.mark.parametrize("training", [True, False])
def test_train_shift_only_for_training_batches(mnist_root, training):
    dm = make_dm(mnist_root, train_shift=2)
    dm.trainer = SimpleNamespace(training=training)
    images, labels = next(iter(dm.val_dataloader()))
    x, _ = dm.on_after_batch_transfer((images, labels), 0)
    plain = images.unsqueeze(1).float() / 255
    if not training:
        assert torch.equal(x, plain)
        return
    # the data's own generator, seeded from (seed, epoch 0, rank 0), not the global one
    g = torch.Generator().manual_seed(stream_seed(0, AUGMENT_STREAM, 0, 0))
    shifts = torch.randint(-2, 3, (len(images), 2), generator=g)
    assert torch.equal(x, shift_images_per_sample(plain, shifts, "crop"))
    assert not torch.equal(x, plain)


def test_missing_files_offline_message(tmp_path):
    with pytest.raises(ShiftProbeError) as err:
        ensure_mnist(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    for name in FILES:
        assert name in msg
    assert "MNIST/raw" in msg and "MNIST_ROOT" in msg and "data.root" in msg
    assert "data.download=true" in msg and len(msg.splitlines()) == 1


def test_download_failure_gives_one_clear_message(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ..., got:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(ShiftProbeError) as err:
        ensure_mnist(tmp_path, download=True)
    msg = str(err.value)
    assert "could not be downloaded" in msg and "MNIST_ROOT" in msg and "t10k-labels-idx1-ubyte" in msg
    assert len(msg.splitlines()) == 1


def test_download_urlerror_is_caught(tmp_path, monkeypatch):
    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(ShiftProbeError, match="could not be downloaded"):
        ensure_mnist(tmp_path, download=True)


def test_truncated_file_is_named_with_the_fix(mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShiftProbeError) as err:
        ensure_mnist(mnist_copy, download=False)
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg and "Delete it" in msg and "MNIST_ROOT" in msg


def test_bad_magic_is_named(mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[0:4] = (1234).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(ShiftProbeError, match="magic number is 1234, expected 2049"):
        ensure_mnist(mnist_copy, download=False)


def test_label_count_mismatch(mnist_copy):
    raw = mnist_copy / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        (2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(5)
    )
    with pytest.raises(ShiftProbeError, match="5 labels for 200 images"):
        ensure_mnist(mnist_copy, download=False)


def test_gz_files_are_read_without_extracting(mnist_copy):
    raw = mnist_copy / "MNIST" / "raw"
    plain = make_dm(mnist_copy)
    for name in FILES:
        with (raw / name).open("rb") as src, gzip.open(raw / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        (raw / name).unlink()
    dm = make_dm(mnist_copy)
    assert dm.test_images.shape == (N_TEST, 28, 28)
    assert torch.equal(dm.test_images, plain.test_images) and torch.equal(dm.train_images, plain.train_images)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in FILES)


def test_root_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ShiftProbeError, match="is a file"):
        ensure_mnist(f, download=False)


def test_label_out_of_range_is_one_line_naming_the_file(mnist_copy):
    """A label outside 0..9 made the loss fail mid-training with a traceback; now the data load stops."""
    path = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[8 + 7] = 12  # the 8th label (after the 8-byte header)
    path.write_bytes(bytes(data))
    with pytest.raises(ShiftProbeError) as err:
        make_dm(mnist_copy)
    msg = str(err.value)
    assert msg.startswith(f"MNIST file {path} is broken: label 12 at item 7 is outside 0..9")
    assert "\n" not in msg
    with pytest.raises(ShiftProbeError, match="label 12 at item 7"):
        load_split(mnist_copy, train=False)


@pytest.mark.parametrize("root", ["", "  "])
def test_empty_root_is_one_line(root, monkeypatch):
    """An empty root would read (and download) MNIST in the current folder."""

    def no_download(self):
        raise AssertionError("nothing may be downloaded for an empty root")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_download)
    dm = MNISTDataModule(root=root, download=True)
    with pytest.raises(ShiftProbeError, match=r"the MNIST root is empty \(data.root=.*\): give the folder"):
        dm.prepare_data()
    with pytest.raises(ShiftProbeError, match="the MNIST root is empty"):
        load_split(root, train=False)


def test_val_size_too_large(mnist_root):
    with pytest.raises(ShiftProbeError, match="data.val_size=5000"):
        make_dm(mnist_root, val_size=5000)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_splits_move_once_to_the_trainers_device(mnist_root, num_workers):
    """On a non-CPU trainer device the splits are moved there in ``setup`` (``meta`` stands in for a GPU);
    batches are then cut on that device. On the CPU, or with worker processes, they stay put."""
    dm = MNISTDataModule(root=str(mnist_root), download=False, batch_size=8, val_size=VAL_SIZE, num_workers=num_workers)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), training=True)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    expected = "meta" if num_workers == 0 else "cpu"
    for t in (dm.train_images, dm.train_labels, dm.val_images, dm.test_images, dm.test_labels):
        assert t.device.type == expected
    if num_workers == 0:
        images, labels = dm.train_dataloader().dataset.__getitems__([0, 5, 7])
        assert images.device.type == "meta" and images.shape == (3, 28, 28) and labels.shape == (3,)
    cpu = MNISTDataModule(root=str(mnist_root), download=False, val_size=VAL_SIZE)
    cpu.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    cpu.setup("fit")
    assert cpu.train_images.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_splits_resident_on_the_gpu(make_cfg):
    import hydra

    from shiftprobe.app.train import build_module, build_trainer

    cfg = make_cfg("trainer=gpu", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1")
    dm = hydra.utils.instantiate(cfg.data)
    trainer = build_trainer(cfg, [], [])
    trainer.fit(build_module(cfg, {}), datamodule=dm)
    assert dm.train_images.device.type == "cuda" and dm.val_labels.device.type == "cuda"


# -- the data's own seeds: training order and augmentation, from the run seed alone -------------------
class FirstBatches(L.Callback):
    """Keeps every training batch a fit sees (images after ``on_after_batch_transfer``, and labels)."""

    def __init__(self):
        self.images, self.labels = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.images.append(batch[0].detach().clone())
        self.labels.append(batch[1].detach().clone())


def first_training_batches(make_cfg, monkeypatch, out, *overrides) -> tuple[torch.Tensor, torch.Tensor]:
    """``train(cfg)`` for 3 training batches (no test), returning the batches the model was fed."""
    recorder = FirstBatches()
    real = train_module.instantiate_callbacks
    monkeypatch.setattr(train_module, "instantiate_callbacks", lambda cfg: real(cfg) + [recorder])
    train_module.train(
        make_cfg("+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "test=false", *overrides, out=out)
    )
    return torch.cat(recorder.images), torch.cat(recorder.labels)


def test_same_seed_same_batches_for_every_model_variant(make_cfg, monkeypatch, tmp_path):
    """The circular model draws more initial weights than the lab one (fc1: 980 vs 320 inputs); its data
    order and augmentation shifts must not change with that."""
    lab = first_training_batches(make_cfg, monkeypatch, tmp_path / "lab", "model=lab", "data.train_shift=2")
    circ = first_training_batches(make_cfg, monkeypatch, tmp_path / "circ", "model=circular", "data.train_shift=2")
    plain = first_training_batches(make_cfg, monkeypatch, tmp_path / "plain", "model=lab", "data.train_shift=0")
    other = first_training_batches(make_cfg, monkeypatch, tmp_path / "seed1", "model=lab", "data.train_shift=2", "seed=1")
    assert lab[0].shape == (96, 1, 28, 28)
    assert torch.equal(lab[1], circ[1]) and torch.equal(lab[1], plain[1])  # same images, same order
    assert torch.equal(lab[0], circ[0])  # and the same shifts
    assert not torch.equal(lab[0], plain[0])  # (the augmentation is on)
    assert not torch.equal(lab[1], other[1])  # another seed, another order


def test_resumed_run_continues_with_the_same_shifts(make_cfg, tmp_path):
    """Two epochs in one run, or one epoch then a resume from last.ckpt: the same weights, bit for bit
    (same order and same augmentation shifts in the second epoch)."""
    common = ("data.train_shift=2", "test=false", "+trainer.limit_val_batches=1")
    train_module.train(make_cfg(*common, "trainer.max_epochs=2", out=tmp_path / "straight"))
    train_module.train(make_cfg(*common, out=tmp_path / "first"))
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train_module.train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={first}", out=tmp_path / "resumed"))
    ckpts = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
             for run in ("straight", "resumed")]
    assert ckpts[0]["global_step"] == ckpts[1]["global_step"] > 0
    for key, value in ckpts[0]["state_dict"].items():
        assert torch.equal(value, ckpts[1]["state_dict"][key]), key
    assert "augment_state" in ckpts[1]["MNISTDataModule"]


def fake_trainer(completed: int | None = None, epoch: int = 0):
    """Just enough of a Trainer for the data module: training, its epoch and rank (and the batches done)."""
    trainer = SimpleNamespace(training=True, current_epoch=epoch, global_rank=0, world_size=1)
    if completed is not None:
        current = SimpleNamespace(completed=completed)
        trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=current)))
    return trainer


@pytest.mark.parametrize("stopped_inside_a_batch", [False, True])
def test_augmentation_generator_is_saved_and_restored(mnist_root, stopped_inside_a_batch):
    dm = make_dm(mnist_root, train_shift=3, seed=5)
    dm.trainer = fake_trainer(completed=3 if stopped_inside_a_batch else 4)
    drawn = [dm.augment_shifts(8, 3) for _ in range(4)]
    state = dm.state_dict()
    after = [dm.augment_shifts(8, 3) for _ in range(2)]
    resumed = make_dm(mnist_root, train_shift=3, seed=5)
    resumed.trainer = fake_trainer()
    resumed.load_state_dict(state)
    again = [resumed.augment_shifts(8, 3) for _ in range(2)]
    # a batch that had not finished (Ctrl-C inside it) is drawn again; otherwise the next one follows
    expected = [drawn[3], after[0]] if stopped_inside_a_batch else after
    for a, b in zip(expected, again, strict=True):
        assert torch.equal(a, b)
    # a new epoch starts from its own seed, whatever came before
    fresh = make_dm(mnist_root, train_shift=3, seed=5)
    fresh.trainer = fake_trainer(epoch=1)
    dm.trainer = fake_trainer(epoch=1)
    assert torch.equal(dm.augment_shifts(8, 3), fresh.augment_shifts(8, 3))
