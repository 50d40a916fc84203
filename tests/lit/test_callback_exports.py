"""ShiftProbeCallback's ``export_pairs`` and ``initial_state`` on a tiny Trainer."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.models.lab import LabCNN


class TinyData(L.LightningDataModule):
    def __init__(self, n=24):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        img = torch.zeros(n, 28, 28)
        img[:, 8:20, 8:20] = torch.rand(n, 12, 12, generator=g)
        self.test_images = (img * 255).to(torch.uint8)
        self.test_labels = torch.randint(0, 10, (n,), generator=g)

    def test_dataloader(self):
        x = self.test_images.unsqueeze(1).float() / 255
        return DataLoader(TensorDataset(x, self.test_labels), batch_size=12)


def module(seed=0) -> ShiftProbeModule:
    torch.manual_seed(seed)
    return ShiftProbeModule(net=LabCNN(), config={"seed": seed})


def run(tmp_path, callback, pl_module):
    trainer = L.Trainer(
        default_root_dir=tmp_path, logger=False, callbacks=[callback], enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )
    trainer.test(pl_module, datamodule=TinyData())
    return json.loads((tmp_path / "run" / "results.json").read_text())


def probe(tmp_path, **kwargs) -> ShiftProbeCallback:
    return ShiftProbeCallback(max_shift=1, batch_size=12, figures=False, progress=False,
                              output_dir=str(tmp_path / "run"), **kwargs)


def test_export_pairs_writes_both_files(tmp_path):
    pl_module = module()
    with torch.no_grad():
        pl_module.net.fc1.weight.mul_(2.0)  # trained differs from untrained
    res = run(tmp_path, probe(tmp_path, export_pairs=5, layers=["conv2", "fc1"]), pl_module)
    pt, npz = tmp_path / "run" / "pairs.pt", tmp_path / "run" / "pairs.npz"
    assert pt.is_file() and npz.is_file()
    pairs = torch.load(pt, weights_only=True)
    assert set(np.load(npz).files) == set(pairs)
    assert pairs["trained/conv2/tx"].shape == (5, 20, 8, 8) and pairs["untrained/fc1/x"].shape == (5, 50)
    with torch.no_grad():
        own = pl_module.net.probe(pairs["tx"])["conv2"]
    torch.testing.assert_close(pairs["trained/conv2/tx"], own)
    assert not torch.allclose(pairs["trained/fc1/x"], pairs["untrained/fc1/x"])
    assert res["untrained_origin"] == "the initial weights of this training run (seed=0)"


def test_no_export_by_default(tmp_path):
    run(tmp_path, probe(tmp_path, untrained=False), module())
    assert not (tmp_path / "run" / "pairs.pt").exists()


def test_initial_state_file_is_the_untrained_control(tmp_path):
    init = module(seed=5).net
    torch.save(init.state_dict(), tmp_path / "init.pt")
    res = run(tmp_path, probe(tmp_path, initial_state=str(tmp_path / "init.pt"), export_pairs=3), module(seed=0))
    assert res["untrained_origin"].startswith("the file given by callbacks.shift_probe.initial_state")
    pairs = torch.load(tmp_path / "run" / "pairs.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(pairs["untrained/fc1/x"], init.probe(pairs["x"])["fc1"])
    md = (tmp_path / "run" / "results.md").read_text()
    assert "callbacks.shift_probe.initial_state" in md


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"export_pairs": -1}, "export_pairs=-1 is not allowed"),
        ({"initial_state": "no/such/file.pt"}, "no such file"),
    ],
)
def test_bad_settings_stop_before_testing(tmp_path, kwargs, message):
    with pytest.raises(ShiftProbeError, match=message):
        run(tmp_path, probe(tmp_path, **kwargs), module())


def test_initial_state_of_another_architecture_is_named(tmp_path):
    from shiftprobe.models import GapCNN

    torch.save(GapCNN().state_dict(), tmp_path / "gap.pt")
    with pytest.raises(ShiftProbeError, match=r"does not fit the network being measured: .*fc1\.weight"):
        run(tmp_path, probe(tmp_path, initial_state=str(tmp_path / "gap.pt")), module())
