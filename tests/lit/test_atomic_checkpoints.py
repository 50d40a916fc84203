"""``AtomicCheckpointIO``: a full disk during a save leaves the earlier checkpoints whole and loadable
(Lightning's own save copied a file staged in /tmp over the old one: on a 300 kB tmpfs best.ckpt was
left truncated and last.ckpt empty). The trainer that train.py / eval.py build uses it, DDP included."""

import disk_faults
import lightning as L
import pytest
import torch
from conftest import compose_config, test_overrides
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.app.train import build_trainer
from shiftprobe.errors import WriteError
from shiftprobe.lit.checkpointing import AtomicCheckpointIO, BestAndLastCheckpoint

full_disk = disk_faults.full_disk  # the fixture


class ImprovingValAcc(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val/acc", float(self.current_epoch))  # a new best every epoch

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_full_disk_keeps_the_earlier_checkpoints_loadable(tmp_path, full_disk):
    folder = tmp_path / "checkpoints"
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    ckpt = BestAndLastCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max", save_top_k=1,
                                 save_last=True)
    trainer = L.Trainer(max_epochs=3, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
                        plugins=[AtomicCheckpointIO()])
    # epoch 0 writes best.ckpt and last.ckpt; the disk is full from epoch 1's first checkpoint on
    full_disk(capacity=300, only=".ckpt.tmp-", files_left=2)
    with pytest.raises(WriteError) as info:
        trainer.fit(ImprovingValAcc(), data, data)
    assert "\n" not in str(info.value) and f"in {folder} (" in str(info.value)
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(folder / name, weights_only=True)
        assert state["epoch"] == 0 and state["global_step"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary file left


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_the_apps_trainer_saves_checkpoints_atomically(mnist_root, tmp_path, trainer):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"trainer={trainer}"], tmp_path)
    built = build_trainer(cfg, [], [])
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)
    assert type(built.strategy).__name__ == ("DDPStrategy" if trainer == "ddp_cpu" else "SingleDeviceStrategy")
