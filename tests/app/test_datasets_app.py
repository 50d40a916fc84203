"""``python train.py data=<name>`` end to end on synthetic files: colour images through training, the
measurement and the figures; a network that does not take the data's images is one line before training;
``eval.py`` tests on the dataset the run was trained on."""

import json
import sys
from pathlib import Path

import hydra
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from synthetic import write_cifar  # noqa: E402

import shiftprobe.app.train as train_module  # noqa: E402
from shiftprobe.app.evaluate import check_same_dataset  # noqa: E402
from shiftprobe.errors import ShiftProbeError  # noqa: E402

CIFAR = ("data=cifar10", "data.val_size=8", "data.batch_size=8", "data.eval_batch_size=16")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", n_per_batch=8, n_test=12)
    return root


def test_cifar10_trains_and_is_measured_in_colour(make_cfg, cifar_root, tmp_path):
    out = tmp_path / "run"
    cfg = make_cfg(
        *CIFAR, f"data.root={cifar_root}", "model=gap", "shift=small",
        "callbacks=[shift_probe]", "callbacks.shift_probe.progress=false", "callbacks.shift_probe.figures=false",
        "callbacks.shift_probe.untrained=false", "callbacks.shift_probe.max_images=6",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", out=out,
    )
    assert cfg.model.in_channels == 3  # model.in_channels: ${data.channels}
    metrics = train_module.train(cfg)
    assert "test/acc" in metrics
    results = json.loads((out / "results.json").read_text())["families"]["translation"]
    assert results["n_images"] == 6 and "conv2" in results["summary"]


def test_example_pairs_keep_the_colours(cifar_root):
    """The translation section's example pairs (computed while measuring) keep colour images in colour."""
    import shiftprobe
    from shiftprobe.data.datasets import DATASETS, load_split
    from shiftprobe.models import GapCNN

    images, _ = load_split(DATASETS["cifar10"], cifar_root, "test", 10)
    res = shiftprobe.measure(GapCNN(in_channels=3).eval(), images[:4], layers=["conv2"], transform=shiftprobe.Translation(2))
    examples = res["families"]["translation"]["examples"]
    pair = examples["pairs"][1]
    assert torch.tensor(pair["x"]).shape == (32, 32, 3)
    assert torch.equal(torch.tensor(pair["x"]), images[0].permute(1, 2, 0).float() / 255)
    grey = shiftprobe.measure(GapCNN().eval(), images[:4, 0], layers=["conv2"], transform=shiftprobe.Translation(2))
    assert torch.tensor(grey["families"]["translation"]["examples"]["pairs"][0]["x"]).shape == (32, 32)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("model=lab",), "does not take the images of data=cifar10 (3x32x32 images, 10 classes)"),
        (("model=gap", "data=cifar100", "model.num_classes=10"), "needs 100 class scores: choose a model with 100 outputs"),
    ],
)
def test_a_network_for_other_images_is_one_line_before_training(make_cfg, cifar_root, overrides, message):
    cfg = make_cfg(*CIFAR, f"data.root={cifar_root}", *overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    with pytest.raises(ShiftProbeError) as err:
        train_module.build_module(cfg, {}, datamodule=datamodule)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_model_normalize_is_mnist_only(make_cfg, cifar_root):
    from shiftprobe.app.config_checks import validate_config

    with pytest.raises(ShiftProbeError, match="model.normalize=True is not allowed: it normalises with MNIST's"):
        validate_config(make_cfg(*CIFAR, f"data.root={cifar_root}", "model=gap", "model.normalize=true"))


def test_eval_tests_on_the_dataset_of_the_run(make_cfg):
    cfg = make_cfg()
    check_same_dataset(cfg, {"dataset": "mnist"})
    check_same_dataset(cfg, {})  # runs from before data=<name>: MNIST
    with pytest.raises(ShiftProbeError, match="trained on data=cifar10, this command tests on data=mnist: add data=cifar10"):
        check_same_dataset(cfg, {"dataset": "cifar10"})


def _ends_with_a_report(out: Path, n_images: int) -> None:
    """results.json (read through the public API, any schema), results.md and the figures of a run."""
    import shiftprobe

    res = shiftprobe.load_results(out / "results.json")
    assert res.summary and res.families["translation"]["n_images"] == n_images
    assert "invariance" in (out / "results.md").read_text()
    for name in ("heatmaps", "radial", "examples"):
        assert (out / f"{name}.png").stat().st_size > 1000, name


def test_cifar10_with_torchvision_resnet18_ends_with_results_and_figures(make_cfg, cifar_root, tmp_path):
    """The issue's recipe: python train.py data=cifar10 data.root=<CIFAR-10> model=torchvision
    model.name=resnet18 trainer.max_epochs=1 (on a tiny synthetic CIFAR-10 in the real layout)."""
    out = tmp_path / "run"
    cfg = make_cfg(
        *CIFAR, f"data.root={cifar_root}", "model=torchvision", "model.name=resnet18", "trainer.max_epochs=1",
        "shift=small", "callbacks=[shift_probe]", "callbacks.shift_probe.progress=false",
        "callbacks.shift_probe.max_images=6", out=out,
    )
    assert "test/acc" in train_module.train(cfg)
    _ends_with_a_report(out, 6)


def test_imagefolder_of_two_sizes_ends_with_results_and_figures(make_cfg, tmp_path):
    from synthetic import write_image_folder

    root = tmp_path / "folder"
    write_image_folder(root, n_train=6, n_test=3)
    out = tmp_path / "run"
    cfg = make_cfg(
        "data=imagefolder", f"data.root={root}", "data.image_size=24", "data.num_classes=3", "data.val_size=3",
        "data.batch_size=4", "data.eval_batch_size=8", "model=torchvision", "model.name=resnet18",
        "model.small_input=true", "trainer.max_epochs=1", "shift=small",
        "callbacks=[shift_probe]",
        "callbacks.shift_probe.progress=false", out=out,
    )
    assert "test/acc" in train_module.train(cfg)
    _ends_with_a_report(out, 9)


def test_eval_of_a_cifar_run_takes_its_dataset_from_the_checkpoint(make_cfg, cifar_root):
    """The run's recorded ``data.dataset`` reaches the check: a CIFAR-10 checkpoint is tested with
    data=cifar10, and with the default data=mnist it is one line naming data=cifar10."""
    from shiftprobe.app.evaluate import apply_run_config

    saved = {"data": {"dataset": "cifar10", "channels": 3, "image_size": 32, "num_classes": 10, "val_size": 8}}
    cfg = make_cfg(*CIFAR, f"data.root={cifar_root}", config_name="eval")
    apply_run_config(cfg, saved)
    assert (cfg.data.dataset, cfg.data.channels) == ("cifar10", 3)
    with pytest.raises(ShiftProbeError, match="trained on data=cifar10, this command tests on data=mnist: add data=cifar10"):
        apply_run_config(make_cfg(config_name="eval"), saved)


@pytest.mark.parametrize("model", ["gap", "allconv", "resnet"])
def test_the_built_in_cnns_give_a_score_per_class_of_the_data(make_cfg, tmp_path, model):
    """README's recipe ``data=imagefolder data.num_classes=5 model=gap``: the heads had 10 outputs whatever
    the data, so any other number of classes was refused."""
    from synthetic import write_image_folder

    write_image_folder(tmp_path / "imgs", classes=("a", "b", "c", "d", "e"), n_train=2, n_test=1)
    cfg = make_cfg("data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.num_classes=5", "data.image_size=28",
                   f"model={model}")
    module = train_module.build_module(cfg, {}, datamodule=hydra.utils.instantiate(cfg.data))
    assert module.net(torch.zeros(2, 3, 28, 28))[0].shape == (2, 5)
