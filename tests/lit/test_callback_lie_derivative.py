"""ShiftProbeCallback(lie_derivative=True): results.json (``families.lie_derivative``) and results.md get the
Lie derivative of the trained and the untrained network, on a seeded subset of the measured images."""

import copy
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import shiftprobe
from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.engine import subset_indices
from shiftprobe.probe.lie import lie_result


class TinyData(L.LightningDataModule):
    def __init__(self, n=12):
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


def test_results_json_gets_the_lie_derivative(tmp_path):
    cb = ShiftProbeCallback(max_shift=1, batch_size=16, output_dir=str(tmp_path / "run"), progress=False,
                            figures=False, lie_derivative=True, lie_derivative_images=5)
    module = TinyModule()
    with torch.no_grad():  # the 'trained' net differs from its initial weights
        module.net.conv1.weight.mul_(1.5)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[cb], enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(module, datamodule=TinyData())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    section = res["families"]["lie_derivative"]
    assert section["kind"] == "lie_derivative" and [b["param"] for b in section["groups"]["param"]] == [
        "translate_x", "translate_y", "rotate"]
    assert section["control"]["offset"] >= 1 and "dist" in section["control"]["fc1"]
    block, untrained = lie_result(section), lie_result(section["untrained"])
    assert block["n_images"] == untrained["n_images"] == 5
    assert block["layers"] == ["conv1", "conv2", "fc1", "logits"]
    assert block["generators"] == ["translate_x", "translate_y", "rotate"]
    for layer in block["layers"]:
        for g in block["generators"]:
            assert block[layer][g]["rel"] > 0 and block[layer][g]["rel_se"] > 0
    assert block["conv1"]["rotate"]["abs"] != pytest.approx(untrained["conv1"]["rotate"]["abs"])
    # the same numbers as a direct call on the same seeded subset of the (12) measured images
    images = TinyData().test_images[subset_indices(12, 5, 0)]
    direct = shiftprobe.lie_derivative(module.net, images)
    assert block["fc1"]["rotate"]["rel"] == pytest.approx(direct["fc1"]["rotate"]["rel"], rel=1e-6)
    assert "## Lie derivative" in (tmp_path / "run" / "results.md").read_text()


def test_lie_derivative_is_off_by_default_and_checks_its_image_count():
    assert ShiftProbeCallback().lie_generators is None
    with pytest.raises(ValueError, match="lie_derivative_images"):
        ShiftProbeCallback(lie_derivative=True, lie_derivative_images=1)


def test_generators_and_the_layerwise_decomposition_reach_results_and_figures(tmp_path):
    cb = ShiftProbeCallback(max_shift=1, batch_size=16, output_dir=str(tmp_path / "run"), progress=False,
                            figures=True, lie_derivative=["translate_x", "scale"], lie_derivative_images=3,
                            lie_derivative_layerwise=True, layers=["conv1", "logits"])
    trainer = L.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[cb], enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(TinyModule(), datamodule=TinyData())
    run = tmp_path / "run"
    section = json.loads((run / "results.json").read_text())["families"]["lie_derivative"]
    for block in (lie_result(section), lie_result(section["untrained"])):
        assert block["generators"] == ["translate_x", "scale"]
        assert list(block["layerwise"]) == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
        assert block["layerwise"]["pool1"]["scale"]["contribution"]["rel"] > 0
        total = block["layerwise_total"]["scale"]
        assert total["unexplained"]["rel"] < 1e-5 * total["end_to_end"]["rel"]
    assert "### Layer-wise decomposition" in (run / "results.md").read_text()
    assert (run / "lie_layerwise.png").stat().st_size > 1000
