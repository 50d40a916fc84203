"""ShiftProbeCallback on a tiny Trainer: it measures at test end and writes every output file."""

import copy
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

import shiftprobe
from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.models.lab import LabCNN


class TinyData(L.LightningDataModule):
    def __init__(self, n=40):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        img = torch.zeros(n, 28, 28)
        img[:, 8:20, 8:20] = torch.rand(n, 12, 12, generator=g)
        self.test_images = (img * 255).to(torch.uint8)
        self.test_labels = torch.randint(0, 10, (n,), generator=g)

    def test_dataloader(self):
        x = self.test_images.unsqueeze(1).float() / 255
        return DataLoader(TensorDataset(x, self.test_labels), batch_size=16)


class TinyModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = LabCNN()
        self.initial_net_state = copy.deepcopy(self.net.state_dict())

    def test_step(self, batch, _):
        x, y = batch
        self.log("test/acc", (self.net(x)[0].argmax(1) == y).float().mean())


@pytest.mark.parametrize("logger_kind", ["tensorboard", "csv"])
def test_callback_writes_results_files(tmp_path, logger_kind):
    logger = TensorBoardLogger(tmp_path, name="tb") if logger_kind == "tensorboard" else CSVLogger(tmp_path)
    # drawing is slow: the figures (with TensorBoard, on a small grid) and the untrained control (with
    # CSV) once each; figures=False and untrained=False are checked on the way
    figures = logger_kind == "tensorboard"
    untrained = not figures
    max_shift = 1 if figures else 2
    cb = ShiftProbeCallback(max_shift=max_shift, batch_size=16, output_dir=str(tmp_path / "run"), progress=False,
                            figures=figures, untrained=untrained)
    module = TinyModule()
    with torch.no_grad():  # make the 'trained' net differ from its initial weights
        module.net.conv1.weight.mul_(1.5)
    trainer = L.Trainer(
        default_root_dir=tmp_path, logger=logger, callbacks=[cb], enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )
    trainer.test(module, datamodule=TinyData())
    out = tmp_path / "run"
    for name in ("results.json", "results.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("heatmaps.png", "radial.png", "examples.png"):
        assert (out / name).exists() is figures, name
        if figures:
            assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["schema_version"] == 3 and res["primary"] == "translation" and list(res["families"]) == ["translation"]
    assert res["subset"] == {"n_images": 40, "of": 40, "how": "all images"}
    sec = res["families"]["translation"]
    for key in ("accuracy", "config", "control", "groups", "summary", "seconds", "geometry", "precision", "classifier",
                "fast_path", "exact", "map_action"):
        assert key in sec, key
    assert ("untrained" in sec) is untrained and sec["examples"]["layer"] == "conv2"  # figures or not
    shifts = sec["groups"]["param"]
    assert len(shifts) == (2 * max_shift + 1) ** 2 and sec["n_images"] == 40 and sec["fast_path"] is True
    assert set(shifts[0]) >= {"param", "conv1", "conv2", "fc1", "logits"}
    assert sec["config"]["mode"] == "crop" and sec["classifier"] == "logits"
    assert [sec["geometry"][n]["stride"] for n in ("conv1", "conv2")] == [[1, 1], [2, 2]]
    # the lab net is exact on its certified region at every shift its stride divides
    assert all(e["conv1"]["aligned_rel_max"] < 1e-5 for e in shifts) and sec["exact"]["conv1"]["all"]
    if untrained:  # the untrained block measures the initial weights, not the modified ones
        assert sec["untrained"]["summary"]["conv1"]["dist"] != pytest.approx(sec["summary"]["conv1"]["dist"])
        net0 = LabCNN()
        net0.load_state_dict(module.initial_net_state)
        direct = shiftprobe.measure(net0, TinyData().test_images, TinyData().test_labels,
                                    transform=shiftprobe.Translation(max_shift=2))
        assert sec["untrained"]["summary"]["conv1"]["dist"] == pytest.approx(direct.summary["conv1"]["dist"], rel=1e-6)
    assert "conv1" in (out / "results.md").read_text()
    assert cb.results["families"]["translation"]["summary"]["fc1"]["invariance_score"] == \
        sec["summary"]["fc1"]["invariance_score"]
    if logger_kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ev = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0}).Reload()
        tags = ev.Tags()["scalars"]
        assert "probe/fc1/invariance_score" in tags
        # the first screen (groups sorted by name) is the lab's answer: each layer's score
        assert {"answer/conv1", "answer/conv2", "answer/fc1", "answer/logits"} <= set(tags)
        assert min(tag.split("/")[0] for tag in tags) == "answer"
        assert ev.Scalars("answer/conv2")[0].value == pytest.approx(sec["summary"]["conv2"]["equivariance_score"])
        assert any(tag.startswith("shift_probe/heatmaps") for tag in ev.Tags()["images"])
    else:
        metrics = [p.read_text() for p in (tmp_path / "lightning_logs").rglob("metrics.csv")]
        assert any("probe/fc1/invariance_score" in m and "answer_untrained/fc1" in m for m in metrics)


def test_callback_refuses_bad_shift_before_running():
    with pytest.raises(ValueError, match="max_shift"):
        ShiftProbeCallback(max_shift=-1)
    with pytest.raises(ValueError, match="pattern"):
        ShiftProbeCallback(pattern="spiral")


@pytest.mark.parametrize("layers", [[], "conv2"])
def test_callback_refuses_empty_layers_as_the_api_does(layers):
    """``layers=[]`` measured the default layers; the API refuses it: so does the callback (None: defaults)."""
    with pytest.raises(ValueError, match="give a list of module names"):
        ShiftProbeCallback(layers=layers)
    assert ShiftProbeCallback(layers=None).layers is None


def test_callback_checks_its_layers_against_the_network_when_the_run_starts():
    from shiftprobe.errors import ShiftProbeError

    module = TinyModule()
    ShiftProbeCallback(layers=["conv2", "logits", "output"]).setup(None, module, "fit")
    with pytest.raises(ShiftProbeError) as err:
        ShiftProbeCallback(layers=["conv9"]).setup(None, module, "fit")
    assert str(err.value).startswith(
        "callbacks.shift_probe.layers=['conv9'] is not allowed: layer 'conv9' is not a module of LabCNN"
    )
    assert err.value.same_on_every_rank  # under DDP every rank finds it: reported once


def test_the_answer_keys_are_the_networks_own_probe_points():
    """TensorBoard's HPARAMS metrics: ``answer/<layer>`` of the probe points the network declares."""
    from shiftprobe.app.train import hparam_metrics

    net = LabCNN()
    assert hparam_metrics([ShiftProbeCallback()], net) == (
        "val/acc", "test/acc", "answer/conv1", "answer/conv2", "answer/fc1", "answer/logits")
    assert hparam_metrics([ShiftProbeCallback(layers=["fc1"])], net)[2:] == ("answer/fc1",)
    assert hparam_metrics([], net) == ("val/acc", "test/acc")
