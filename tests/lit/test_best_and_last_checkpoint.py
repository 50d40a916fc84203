"""``BestAndLastCheckpoint``: last.ckpt is the end of the last epoch even when the monitored value
stopped improving (plain ``ModelCheckpoint`` leaves it at the last improvement: the control)."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.lit.checkpointing import BestAndLastCheckpoint


class ConstantValAcc(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val/acc", 0.5)  # never improves after the first epoch

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, cls):
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    ckpt = cls(dirpath=tmp_path / "checkpoints", filename="best", monitor="val/acc", mode="max", save_top_k=1,
               save_last=True)
    trainer = L.Trainer(max_epochs=3, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(ConstantValAcc(), data, data)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    return last["global_step"], best["global_step"], trainer.global_step


@pytest.mark.parametrize("cls,last_is_current", [(BestAndLastCheckpoint, True), (ModelCheckpoint, False)])
def test_last_ckpt_is_the_end_of_the_last_epoch(tmp_path, cls, last_is_current):
    last, best, final = _fit(tmp_path, cls)
    assert best == 2  # the first epoch's 2 steps: the only improvement
    assert (last == final == 6) is last_is_current
