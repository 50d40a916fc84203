"""What a training step shows and writes (issue 12): the batch loss reaches the loggers on the steps they
write and the progress bar when it redraws, the epoch metrics once per epoch, each equal to the
loss of its step; the per-step work no longer goes through Lightning's per-step logging."""

import functools

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.lit import StepLossProgressBar
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.models.lab import LabCNN


class Recorder(L.Callback):
    """Every batch loss (from ``step_metrics``) and what the bar would show at each step."""

    def __init__(self, bar):
        self.bar, self.losses, self.shown = bar, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.shown.append(self.bar.get_metrics(trainer, pl_module).get("train/loss_step"))


def fit(tmp_path, n_batches=7, log_every=3, epochs=1):
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(n_batches * 8, 1, 28, 28), torch.randint(0, 10, (n_batches * 8,)))
    module = ShiftProbeModule(net=LabCNN(), optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    bar = StepLossProgressBar(refresh_rate=2)
    rec = Recorder(bar)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=epochs, log_every_n_steps=log_every, callbacks=[bar, rec],
                        logger=CSVLogger(tmp_path, name="csv", version=""), enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, DataLoader(data, batch_size=8))
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    rows = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    return rec, rows, trainer


def test_loss_step_is_written_on_the_loggers_steps_with_that_steps_loss(tmp_path):
    rec, rows, _ = fit(tmp_path, n_batches=7, log_every=3, epochs=2)
    steps = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    assert sorted(steps) == [2, 5, 8, 11]  # Lightning writes every 3rd step: 3, 6, 9, 12 (0-based 2, 5, ...)
    for step, value in steps.items():
        assert value == pytest.approx(rec.losses[step], rel=1e-6)
    epochs = [r for r in rows if r.get("train/loss")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    for r, losses in zip(epochs, (rec.losses[:7], rec.losses[7:]), strict=True):  # equal batches: the mean of the step losses
        assert float(r["train/loss"]) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_progress_bar_shows_the_latest_batch_loss_first(tmp_path):
    rec, _, trainer = fit(tmp_path, n_batches=4, log_every=50)
    assert rec.shown == pytest.approx(rec.losses, rel=1e-6)
    items = trainer.progress_bar_callback.get_metrics(trainer, trainer.lightning_module)
    assert list(items)[0] == "train/loss_step" and {"train/loss", "train/acc"} <= set(items)
    assert "train/loss_step" not in trainer.progress_bar_metrics  # not converted by Lightning every step


def test_bar_without_step_metrics_is_lightnings():
    class Plain(L.LightningModule):
        pass

    bar = StepLossProgressBar()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, callbacks=[bar])
    assert bar.get_metrics(trainer, Plain()) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the deferred check is for accelerators)")
def test_divergence_on_a_gpu_stops_within_the_check_interval(tmp_path):
    from shiftprobe.errors import TrainingDiverged
    from shiftprobe.lit.module import DIVERGENCE_CHECK_EVERY

    torch.manual_seed(0)
    data = TensorDataset(torch.rand(64 * 8, 1, 28, 28), torch.randint(0, 10, (64 * 8,)))
    module = ShiftProbeModule(net=LabCNN(), optimizer=functools.partial(torch.optim.SGD, lr=1e6))
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                        accelerator="gpu", devices=1, enable_progress_bar=False)
    with pytest.raises(TrainingDiverged, match="diverged"):
        trainer.fit(module, DataLoader(data, batch_size=8))
    assert trainer.global_step <= 2 * DIVERGENCE_CHECK_EVERY
