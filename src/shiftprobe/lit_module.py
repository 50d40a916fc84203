"""``ShiftProbeModule``: a thin LightningModule around the lab CNN (``self.net``).

NLL loss on the network's log-probabilities, torchmetrics accuracy for train / val / test, the
optimizer built from a Hydra ``_partial_`` config (the module supplies the parameters). The network's
initial weights are kept (``initial_net_state``) and written into every checkpoint, so the measurement
can compare the trained network with the same network untrained.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from shiftprobe.errors import ShiftProbeError

INITIAL_STATE_KEY = "initial_net_state"
#: a mean NLL above this means the true class gets probability below e^-1000: the run has diverged
DIVERGED_LOSS = 1e3


class ShiftProbeModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        config: dict | None = None,
    ):
        """``net``: the LabCNN. ``optimizer``: ``params -> Optimizer`` (Hydra ``_partial_: true``).
        ``config``: the run's resolved configuration (plain dict), kept in hparams and checkpoints."""
        super().__init__()
        # the net is a module (saved in the state dict) and the optimizer a callable: neither is a
        # hyper-parameter, and leaving them out keeps checkpoints loadable with weights_only=True
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.initial_net_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (the lab's first output)."""
        return self.net(x)[0]

    def _step(self, batch):
        x, y = batch
        log_probs = self(x)
        return F.nll_loss(log_probs, y), log_probs.argmax(dim=1), y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._step(batch)
        if not torch.isfinite(loss) or loss.detach() > DIVERGED_LOSS:
            lr = None
            if self._trainer is not None and self._trainer.optimizers:
                lr = self._trainer.optimizers[0].param_groups[0].get("lr")
            lr_text = f" (optimizer.lr={lr:g})" if lr is not None else ""
            raise ShiftProbeError(
                f"training diverged: the training loss (train/loss) is {loss.item():.4g} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}){lr_text}. Training "
                f"stopped; no test results were written. Use a lower learning rate, e.g. optimizer.lr=1e-3."
            )
        self.train_acc.update(preds, y)
        # per step: this rank's batch loss; per epoch: the mean over every training image of every rank
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, y = self._step(batch)
        self.val_acc.update(preds, y)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, preds, y = self._step(batch)
        self.test_acc.update(preds, y)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log("test/acc", self.test_acc, on_epoch=True)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ShiftProbeError("no optimizer configured: training needs one, e.g. optimizer=adam")
        return self.optimizer_factory(params=self.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[INITIAL_STATE_KEY] = self.initial_net_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(INITIAL_STATE_KEY)
        if state is not None:
            self.initial_net_state = {k: v.detach().cpu().clone() for k, v in state.items()}
