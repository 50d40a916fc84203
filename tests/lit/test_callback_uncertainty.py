"""The callback's share of issue 11: K untrained initialisations and the intervals in TensorBoard."""

from __future__ import annotations

import copy
import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.measure import measure_family, reinitialised_copy
from shiftprobe.probe.translation import Translation


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


def _run(tmp_path, **kwargs):
    logger = TensorBoardLogger(tmp_path, name="tb")
    cb = ShiftProbeCallback(max_shift=1, batch_size=16, output_dir=str(tmp_path / "run"), progress=False,
                            figures=False, seed=5, **kwargs)
    module = TinyModule()
    with torch.no_grad():
        module.net.conv1.weight.mul_(1.5)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=logger, callbacks=[cb], enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(module, datamodule=TinyData())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    return res["families"]["translation"], logger, module


def test_three_untrained_initialisations(tmp_path):
    res, _, module = _run(tmp_path, untrained_inits=3)
    inits = res["untrained_inits"]
    assert inits["k"] == 3
    stats = inits["summary"]["fc1"]["invariance_score"]
    assert stats["min"] <= res["untrained"]["summary"]["fc1"]["invariance_score"] <= stats["max"]
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] > 0
    # init 0 is the saved initial weights; 1 and 2 are re-initialised copies with the seeds 5 + k
    values = [res["untrained"]["summary"]["fc1"]["invariance_score"]]
    data = TinyData()
    net0 = copy.deepcopy(module.net)
    net0.load_state_dict(module.initial_net_state)
    for k in (1, 2):
        net = reinitialised_copy(net0, 5 + k)
        values.append(measure_family(net, data.test_images, data.test_labels, Translation(1, seed=5), control_seed=5,
                                     batch_size=16)["summary"]["fc1"]["invariance_score"])
    mean = sum(values) / 3
    assert stats["mean"] == pytest.approx(mean, abs=1e-12)
    assert stats["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2), abs=1e-12)
    assert stats["min"] == min(values) and stats["max"] == max(values)
    # standard errors and intervals are not summarised over inits
    assert not any(m.endswith(("_se", "_ci")) for m in inits["summary"]["conv2"])
    assert "equivariance_score" in inits["summary"]["conv2"] and "consistency" in inits["summary"]["logits"]


def test_one_initialisation_has_no_spread(tmp_path):
    res, _, _ = _run(tmp_path, untrained_inits=1)
    assert "untrained_inits" not in res and "untrained" in res


def test_reinitialised_copy_is_fresh_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    net = LabCNN()
    state = torch.random.get_rng_state()
    a, b, c = reinitialised_copy(net, 1), reinitialised_copy(net, 1), reinitialised_copy(net, 2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not torch.equal(a.fc1.weight, net.fc1.weight)
    assert a.conv1.weight.abs().max() <= 1 / math.sqrt(25)  # PyTorch's default init bound, 1/sqrt(fan_in)


def test_untrained_inits_must_be_a_positive_count():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="untrained_inits"):
            ShiftProbeCallback(untrained_inits=bad)


def test_tensorboard_gets_the_headline_intervals(tmp_path):
    res, logger, _ = _run(tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(logger.log_dir)).Reload().Tags()["scalars"]
    for layer, score in (("fc1", "invariance_score"), ("conv2", "equivariance_score"), ("logits", "invariance_score")):
        lo, hi = res["summary"][layer][f"{score}_ci"]
        assert lo <= res["summary"][layer][score] <= hi
        assert f"probe/{layer}/{score}_ci_low" in tags and f"probe/{layer}/{score}_ci_high" in tags
    assert "probe_untrained/fc1/invariance_score_ci_low" in tags
    headline = ShiftProbeCallback.headline(res)
    assert headline["probe/fc1/invariance_score_ci_low"] == pytest.approx(res["summary"]["fc1"]["invariance_score_ci"][0])
    assert headline["probe/fc1/invariance_score_ci_high"] == pytest.approx(res["summary"]["fc1"]["invariance_score_ci"][1])
