"""``ImageDataModule`` for every dataset, built from its own config (conf/data/<name>.yaml) on synthetic
files in the real formats: shapes, dtypes, labels, the validation split, determinism, memory layout,
normalisation, RGB augmentation, downloads (stubbed: no network) and missing data."""

import hashlib
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
import torchvision
from conftest import compose_config
from synthetic import write_cifar, write_idx_dataset, write_image_folder

from shiftprobe.app.config_checks import validate_config
from shiftprobe.data import ImageDataModule, MNISTDataModule
from shiftprobe.data.datasets import channel_stats
from shiftprobe.errors import ArgumentError, ShiftProbeError

#: dataset -> (channels, side, classes, normalisation of its config)
EXPECTED = {
    "mnist": (1, 28, 10, ((0.1307,), (0.3081,))),
    "fashion_mnist": (1, 28, 10, ((0.2860,), (0.3530,))),
    "kmnist": (1, 28, 10, ((0.1918,), (0.3483,))),
    "cifar10": (3, 32, 10, ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    "cifar100": (3, 32, 100, ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
    "imagefolder": (3, 64, 10, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
}
IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def write_dataset(name: str, root, gz: bool = False) -> dict:
    """Synthetic files of ``name`` under ``root``: ``{split: (uint8 images, labels)}`` as written."""
    if name in IDX_FOLDERS:
        return write_idx_dataset(root, IDX_FOLDERS[name], gz=gz)
    if name.startswith("cifar"):
        return write_cifar(root, name, n_per_batch=8 if name == "cifar10" else 40, n_test=10)
    written = write_image_folder(root, n_train=14, n_test=3)
    return {split: ([str(p) for p, _ in items], np.array([c for _, c in items])) for split, items in written.items()}


def data_config(name: str, root, tmp_path, *overrides: str):
    extra = ["data.image_size=16", "data.num_classes=3", "data.num_workers=0"] if name == "imagefolder" else []
    return compose_config(
        "train",
        [f"data={name}", f"data.root={root}", "data.download=false", "data.val_size=10", "data.batch_size=8",
         "data.eval_batch_size=7", f"paths.output_dir={tmp_path}", *extra, *overrides],
        tmp_path,
    )


def built(cfg, stages=("fit", "test")) -> ImageDataModule:
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    for stage in stages:
        dm.setup(stage)
    return dm


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def test_mnist_gives_the_same_batches_as_before_the_change(mnist_root):
    """Digests of the first three training batches (pixels and labels; augmented by shift and flip, which
    are exact in float32), the rotation angles, and the val / test splits, recorded with the MNIST data
    module before the generic one replaced it (seed 3, the conftest's synthetic MNIST)."""
    dm = MNISTDataModule(root=str(mnist_root), download=False, batch_size=32, val_size=100, seed=3,
                         train_shift=2, train_flip=True)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)
    batches = iter(dm.train_dataloader())
    raw, augmented = [], []
    for _ in range(3):
        images, labels = next(batches)
        raw += [images, labels]
        augmented += list(dm.on_after_batch_transfer((images, labels), 0))
    angles = torch.cat([dm.augment_angles(32, 10.0) for _ in range(3)])
    assert digest(*raw) == "3e842aa570e298ce"
    assert digest(*augmented) == "3e9e9ebb090edd83"
    assert digest(angles) == "d17c076ef143debc"
    assert digest(dm.val_images, dm.val_labels) == "8a444b37bf54d4ad"
    assert digest(dm.test_images, dm.test_labels) == "65e08e1943bf580f"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_dataset_from_its_config(name, tmp_path):
    root = tmp_path / "data"
    written = write_dataset(name, root)
    cfg = data_config(name, root, tmp_path)
    validate_config(cfg)
    channels, side, classes, normalization = EXPECTED[name]
    side, classes = (16, 3) if name == "imagefolder" else (side, classes)
    dm = built(cfg)
    assert type(dm) is (MNISTDataModule if name == "mnist" else ImageDataModule)
    assert (dm.hparams.channels, dm.hparams.image_size, dm.num_classes) == (channels, side, classes)
    item = (side, side) if channels == 1 and name != "imagefolder" else (channels, side, side)
    n_train = len(written["train"][1])
    # the test split: in memory, uint8, contiguous, in the files' order
    assert dm.test_images.shape == (len(written["test"][1]), *item) and dm.test_images.dtype == torch.uint8
    assert dm.test_images.is_contiguous() and dm.test_labels.dtype == torch.long
    assert dm.test_labels.tolist() == list(written["test"][1])
    if name != "imagefolder":
        assert np.array_equal(dm.test_images.numpy(), written["test"][0])
        train_val = torch.cat([dm.train_images, dm.val_images]).flatten(1).numpy()
        assert sorted(map(bytes, train_val)) == sorted(map(bytes, written["train"][0].reshape(n_train, -1)))
    else:  # on disk: the split is of the files
        assert dm.train_images is None and sorted(dm.train_set.paths + dm.val_set.paths) == sorted(written["train"][0])
    assert len(dm.val_set) == 10 and len(dm.train_set) == n_train - 10
    # deterministic: the same split and batches again
    again = built(cfg)
    assert torch.equal(again.val_labels, dm.val_labels) and torch.equal(again.test_images, dm.test_images)
    images, labels = next(iter(dm.train_dataloader()))
    same_images, _ = next(iter(again.train_dataloader()))
    assert images.shape == (8, *item) and images.dtype == torch.uint8 and torch.equal(images, same_images)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (8, channels, side, side) and x.dtype == torch.float32
    torch.testing.assert_close(x, images.reshape(x.shape).float() / 255, rtol=0, atol=0)
    # normalisation: declared per channel, applied by the training module, off by default
    assert dm.normalization is None
    assert built(data_config(name, root, tmp_path, "data.normalize=true"), ()).normalization == normalization


def test_gzipped_idx_files_and_labels_out_of_range(tmp_path):
    write_dataset("fashion_mnist", tmp_path, gz=True)
    dm = built(data_config("fashion_mnist", tmp_path, tmp_path / "run"), ("test",))
    assert dm.test_images.shape == (20, 28, 28)
    assert not any(p.suffix != ".gz" for p in (tmp_path / "FashionMNIST" / "raw").iterdir())  # nothing extracted


def test_rgb_augmentation_moves_the_channels_together(tmp_path):
    """Three equal channels stay equal under shift + rotation + flip, and each equals the grey path
    (a one-channel batch through a data module with the same seed)."""
    write_dataset("cifar10", tmp_path)
    aug = ("data.train_shift=3", "data.train_rotate=30", "data.train_flip=true")
    rgb, grey = (built(data_config("cifar10", tmp_path, tmp_path / "run", *aug), ()) for _ in range(2))
    for dm in (rgb, grey):
        dm.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)
    x = torch.rand(16, 1, 32, 32)
    out_rgb = rgb.augment(x.expand(16, 3, 32, 32).contiguous())
    out_grey = grey.augment(x)
    assert not torch.equal(out_grey, x)
    for c in range(3):
        assert torch.equal(out_rgb[:, c : c + 1], out_grey)


def test_paired_set_of_colour_images(tmp_path):
    write_dataset("cifar10", tmp_path)
    dm = built(data_config("cifar10", tmp_path, tmp_path / "run"), ("test",))
    pairs = dm.paired_test_set(max_shift=2, mode="crop")
    x, tx, y, s = pairs[7]
    dy, dx = int(s[0]), int(s[1])
    image = dm.test_images[int(7 // pairs.plan.params_per_image)].float() / 255
    assert x.shape == tx.shape == (3, 32, 32) and torch.equal(x, image)
    expected = np.zeros((3, 32, 32), np.float32)  # out[i + dy, j + dx] = in[i, j], zero fill
    src = image.numpy()
    for i in range(32):
        for j in range(32):
            if 0 <= i + dy < 32 and 0 <= j + dx < 32:
                expected[:, i + dy, j + dx] = src[:, i, j]
    assert np.array_equal(tx.numpy(), expected)


def test_downloads_use_torchvision_and_the_own_readers(tmp_path, monkeypatch):
    """data.download=true: torchvision's downloaders (stubbed here: they write synthetic files, no
    network) fill data.root, then the project's readers read the files."""
    calls = []

    def fake_mnist_download(self):
        calls.append(type(self).__name__)
        write_idx_dataset(tmp_path / "fm", "FashionMNIST")

    def fake_archive(url, root, filename=None, md5=None):
        calls.append(filename)
        write_cifar(tmp_path / "c10", "cifar10", n_per_batch=4, n_test=3)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_mnist_download)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_archive)
    fm = built(data_config("fashion_mnist", tmp_path / "fm", tmp_path / "run", "data.download=true"), ("test",))
    c10 = built(data_config("cifar10", tmp_path / "c10", tmp_path / "run", "data.download=true"), ("test",))
    assert fm.test_images.shape == (20, 28, 28) and c10.test_images.shape == (3, 3, 32, 32)
    assert calls[0] == "FashionMNIST" and calls[-1] == "cifar-10-python.tar.gz"


@pytest.mark.parametrize("name", ["cifar100", "kmnist", "imagefolder"])
def test_missing_dataset_is_one_line_naming_the_folder(tmp_path, name):
    cfg = data_config(name, tmp_path / "empty", tmp_path / "run")
    with pytest.raises(ShiftProbeError) as err:
        built(cfg)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and str((tmp_path / "empty").resolve()) in msg
    assert ("data.download=true" in msg) == (name != "imagefolder")
    assert ("cannot be downloaded" in msg) == (name == "imagefolder")


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-100-python.tar.gz:\n<urlopen error [Errno -3]>")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(ShiftProbeError) as err:
        built(data_config("cifar100", tmp_path, tmp_path / "run", "data.download=true"))
    msg = str(err.value)
    assert "could not be downloaded: <urlopen error" in msg and "cifar-100-python" in msg
    assert len(msg.splitlines()) == 1


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("cifar10", "data.channels=1", "data.channels=1 is not allowed with dataset='cifar10'"),
        ("cifar10", "data.image_size=28", "data.image_size=28 is not allowed with dataset='cifar10'"),
        ("cifar100", "data.num_classes=10", "data.num_classes=10 is not allowed with dataset='cifar100'"),
        ("cifar10", "data.mean=[0.5,0.5]", "data.mean=[0.5, 0.5] is not allowed: use 3 finite number"),
        ("kmnist", "data.std=[0]", "data.std=[0] is not allowed: use 1 finite number(s), one per channel (each > 0)"),
        ("imagefolder", "data.channels=2", "data.channels=2 is not allowed: use 1 (grey) or 3 (RGB)"),
        ("imagefolder", "data.num_classes=1", "data.num_classes=1 is not allowed: use an integer >= 2"),
        ("mnist", "data.dataset=svhn", "data.dataset='svhn' is not known"),
        ("cifar10", "data.train_shift=32", "data.train_shift=32 is not allowed: use an integer from 0"),
        ("cifar10", "shift.max_shift=31", None),
    ],
)
def test_bad_data_settings_are_one_line_before_anything_is_read(tmp_path, name, override, message):
    cfg = data_config(name, tmp_path / "nothing-yet", tmp_path / "run", override)
    if message is None:  # 31 < 32: allowed for CIFAR's side
        validate_config(cfg, known_keys=False)
        return
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg, known_keys=False)
    assert str(err.value).startswith(message) and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"dataset": "cifar10", "channels": 1}, "channels=1 is not allowed with dataset='cifar10': CIFAR-10 images "
                                                "have channels=3 (only the imagefolder dataset converts and resizes); "
                                                "use channels=3"),
        ({"dataset": "svhn"}, "dataset='svhn' is not known; use one of ['mnist', 'fashion_mnist', 'kmnist', "
                              "'cifar10', 'cifar100', 'imagefolder']"),
        ({"std": (0.0,)}, "std=[0.0] is not allowed: use 1 finite number(s), one per channel (each > 0), e.g. "
                          "std=[0.5]"),
    ],
)
def test_the_data_module_names_its_arguments_and_the_app_the_keys(tmp_path, kwargs, expected):
    """The constructor's message names its argument; the settings check names the key ``data.<argument>``."""
    with pytest.raises(ArgumentError) as err:
        ImageDataModule(root=str(tmp_path), **kwargs)
    assert str(err.value) == expected
    overrides = [f"data.{k}={v}" if k != "std" else "data.std=[0.0]" for k, v in kwargs.items()]
    with pytest.raises(ShiftProbeError) as err:
        validate_config(data_config("mnist", tmp_path, tmp_path / "run", *overrides), known_keys=False)
    assert str(err.value) == f"data.{expected}"


def test_imagefolder_needs_a_root_and_the_right_number_of_classes(tmp_path):
    cfg = compose_config("train", ["data=imagefolder", f"paths.output_dir={tmp_path}"], tmp_path)
    with pytest.raises(ShiftProbeError, match="data.root=None is not allowed: set data.root to the folder"):
        validate_config(cfg, known_keys=False)
    write_dataset("imagefolder", tmp_path / "imgs")
    cfg = data_config("imagefolder", tmp_path / "imgs", tmp_path, "data.num_classes=4")
    with pytest.raises(ShiftProbeError, match=r"data.num_classes=4 does not fit .* 3 class folder\(s\) .*num_classes=3"):
        built(cfg)


def test_imagefolder_workers_give_the_same_batches(tmp_path):
    write_dataset("imagefolder", tmp_path)
    batches = []
    for workers in (0, 2):
        dm = built(data_config("imagefolder", tmp_path, tmp_path / "run", f"data.num_workers={workers}"))
        batches.append(next(iter(dm.train_dataloader())))
        assert dm.classes == ["cat", "dog", "emu"]
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_channel_stats_equal_numpy(tmp_path):
    images = torch.randint(0, 256, (50, 3, 9, 7), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=8)
    pixels = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-9)
    grey_mean, grey_std = channel_stats(images[:, 0])
    np.testing.assert_allclose(grey_mean + grey_std, [pixels[:, 0].mean(), pixels[:, 0].std()], rtol=1e-9)


def test_the_data_doc_example_runs(tmp_path, capsys):
    """docs/data.md's example, on a synthetic image folder in place of /path/to/images."""
    import re

    from conftest import ROOT

    block = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "data.md").read_text(encoding="utf-8"), re.S)[0]
    write_image_folder(tmp_path, classes=("a", "b", "c", "d", "e"), n_train=1, n_test=2)
    exec(block.replace("/path/to/images", str(tmp_path)), {})
    mean, std = eval(capsys.readouterr().out)
    assert len(mean) == len(std) == 3 and all(0 < m < 1 for m in mean)


def test_every_name_of_the_data_package_resolves():
    import shiftprobe.data

    for name in shiftprobe.data.__all__:
        assert getattr(shiftprobe.data, name) is not None, name
    assert shiftprobe.data.MNISTDataModule.__mro__[1] is ImageDataModule


@pytest.mark.parametrize("folders", [[], ["cat"]])
def test_an_image_folder_with_fewer_than_two_classes_is_one_line(tmp_path, folders):
    """A classifier needs two classes: the fix named is the folders, not data.num_classes=1 or 0 (which the
    metrics refused with a traceback)."""
    for split in ("train", "test"):
        (tmp_path / "imgs" / split).mkdir(parents=True)
    for name in folders:
        write_dataset("imagefolder", tmp_path / "one")
        (tmp_path / "one" / "train" / "cat").rename(tmp_path / "imgs" / "train" / name)
    with pytest.raises(ShiftProbeError) as err:
        built(data_config("imagefolder", tmp_path / "imgs", tmp_path, "data.num_classes=3"))
    msg = str(err.value)
    assert f"has {len(folders)} class folder(s)" in msg and "at least 2" in msg and "num_classes=0" not in msg
    assert "num_classes=1" not in msg and len(msg.splitlines()) == 1


def test_a_checkpoint_of_other_image_folder_classes_is_one_line(tmp_path):
    """Label i is the i-th class folder: a checkpoint trained on cat, dog, emu tested on a folder of ant, bee,
    cow (as many classes) would count every prediction against another class, so the classes travel in the
    data state of a checkpoint and are compared when it is loaded."""
    write_image_folder(tmp_path / "a", n_train=4, n_test=1)
    write_image_folder(tmp_path / "b", classes=("ant", "bee", "cow"), n_train=4, n_test=1)
    state = built(data_config("imagefolder", tmp_path / "a", tmp_path / "run", "data.val_size=2"), ("test",)).state_dict()
    assert state["classes"] == ["cat", "dog", "emu"]
    built(data_config("imagefolder", tmp_path / "a", tmp_path / "run", "data.val_size=2"), ("test",)).load_state_dict(state)
    other = built(data_config("imagefolder", tmp_path / "b", tmp_path / "run", "data.val_size=2"), ("test",))
    with pytest.raises(ShiftProbeError) as err:
        other.load_state_dict(state)
    msg = str(err.value)
    assert "['cat', 'dog', 'emu']" in msg and "['ant', 'bee', 'cow']" in msg and len(msg.splitlines()) == 1


def test_resuming_mid_epoch_with_another_batch_size_is_one_line(tmp_path):
    """The rest of a stopped epoch is counted in batches: a checkpoint stopped after 2 batches of 8 resumed
    with batches of 16 skipped 32 images instead of 16 (16 of the epoch never seen, without a word). At the
    end of an epoch another batch size is fine."""
    write_dataset("mnist", tmp_path / "d")

    def module(batch_size: int) -> ImageDataModule:
        return built(data_config("mnist", tmp_path / "d", tmp_path / "run", f"data.batch_size={batch_size}"), ("fit",))

    state = {"shuffle_seed": 5, "epoch": 0, "batches_done": 2, "batch_size": 8}
    module(8).load_state_dict(state)
    module(16).load_state_dict({**state, "batches_done": 7})  # 50 training images: 7 batches of 8, a whole epoch
    with pytest.raises(ShiftProbeError) as err:
        module(16).load_state_dict(state)
    msg = str(err.value)
    assert "after 2 batches of data.batch_size=8" in msg and "resume it with data.batch_size=8" in msg
    assert len(msg.splitlines()) == 1
