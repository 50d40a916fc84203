"""``ShiftProbeModule``: a thin LightningModule around the network (``self.net``): NLL loss, accuracies,
the initial weights kept for the untrained control (``initial_net_state``, in every checkpoint), and a
training step that does no more than the loop needs (metrics accumulate on the device)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from shiftprobe.checkpoints import INITIAL_STATE_KEY
from shiftprobe.errors import ShiftProbeError, TrainingDiverged

#: a mean NLL above this means the true class gets probability below e^-1000: the run has diverged
DIVERGED_LOSS = 1e3
#: one process on an accelerator: the worst loss is kept on the device and read every this many steps
DIVERGENCE_CHECK_EVERY = 25
#: the checkpoint's loop-progress keys of Lightning's automatic and manual optimization
_AUTO_PROGRESS = "epoch_loop.automatic_optimization.optim_progress"
_MANUAL_PROGRESS = "epoch_loop.manual_optimization.optim_step_progress"


class ShiftProbeModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        config: dict | None = None,
        normalization: tuple | None = None,
        num_classes: int = 10,
    ):
        """``optimizer``: ``params -> Optimizer`` (Hydra ``_partial_: true``); ``config``: the run's resolved
        configuration, kept in hparams and checkpoints; ``normalization``: the data module's ``(mean, std)``,
        applied to every input before ``net``."""
        super().__init__()
        # the net is a module (saved in the state dict) and the optimizer a callable: neither is a
        # hyper-parameter, and leaving them out keeps checkpoints loadable with weights_only=True
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        # a network built with loaded weights (model.weights) carries its random initial weights: those are
        # the untrained control, not the loaded ones
        initial = net.__dict__.pop("untrained_state", None) or net.state_dict()
        self.initial_net_state = copy.deepcopy({k: v.detach().cpu() for k, v in initial.items()})
        #: where ``initial_net_state`` comes from, in words (results.json ``untrained_origin``)
        seed = (config or {}).get("seed")
        self.initial_net_origin = "the initial weights of this training run" + (f" (seed={seed})" if seed is not None else "")
        # a training step adds loss x images and correct predictions to sums on the device (``_epoch_sums``),
        # handed to these once per epoch: MeanMetric's and micro MulticlassAccuracy's figures, cheaper
        self.train_loss = EpochRatio(integer=False)
        self.train_acc = EpochRatio(integer=True)
        self._epoch_sums: list | None = None  # [loss x images, correct predictions, images] this epoch
        #: the latest batch's figures, on the device, for the progress bar to read when it redraws
        self.step_metrics: dict[str, torch.Tensor] = {}
        self._worst: torch.Tensor | None = None  # [any NaN, worst loss] since the last check (accelerators)
        self.val_acc = MulticlassAccuracy(num_classes=int(num_classes), average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=int(num_classes), average="micro")
        self._set_normalization(normalization)
        # image-weighted mean losses synchronised by their sums (Lightning's sync_dist mean truncates an
        # uneven image count on gloo); nan_strategy=nan keeps a NaN loss NaN instead of dropping it
        self.val_loss = MeanMetric(nan_strategy=math.nan)
        self.test_loss = MeanMetric(nan_strategy=math.nan)

    @property
    def automatic_optimization(self) -> bool:
        """False (the step is taken in ``training_step``, saving Lightning's closure: a tenth of a CPU step
        of the lab CNN) unless the trainer clips or accumulates gradients (only Lightning's loop does)."""
        trainer = self._trainer
        if trainer is None:
            return True
        return bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:  # Lightning's __init__ sets the default
        self._automatic_optimization = value

    def _set_normalization(self, normalization: tuple | None) -> None:
        if normalization is not None and getattr(self.net, "normalize", False) is True:
            normalization = None  # the network normalises its input itself (model.normalize=true)
        #: ``(mean, std)`` applied to the network's input (by the measurement after each transform), or None
        self.input_normalization = None
        if normalization is not None:
            mean, std = (tuple(float(v) for v in values) for values in normalization)
            self.input_normalization = (mean, std)
            self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the network's input: ``(x - mean) / std`` per channel, in ``x``'s dtype
        (``x`` itself without a normalisation)."""
        if self.input_normalization is None:
            return x
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the pixels ``x``: the network's output (its first element for the lab's tuple;
        ``log_softmax`` of it for a network returning logits, ``net.outputs_logits``)."""
        out = self.net(self.normalize_input(x))
        out = out if isinstance(out, torch.Tensor) else out[0]
        return F.log_softmax(out, dim=1) if getattr(self.net, "outputs_logits", False) else out

    def _step(self, batch):
        x, y = batch
        # the DataModule makes float32 pixels after Lightning's precision plugin has converted the batch;
        # a network in bf16 / fp16 (trainer.precision=bf16-true / 16-true) gets them in its own dtype
        dtype = next((p.dtype for p in self.net.parameters() if p.is_floating_point()), x.dtype)
        log_probs = self(x.to(dtype))
        return F.nll_loss(log_probs.float(), y), log_probs.argmax(dim=1), y

    def diverged_loss(self, loss: torch.Tensor) -> float | None:
        """The loss if training has diverged (not finite, or above ``DIVERGED_LOSS``), else None. Under DDP
        the worst loss of any rank (one small all-reduce per step), so every rank stops at the same step;
        one process on the CPU: every step; on an accelerator: the worst loss (NaN first) kept on the device
        and read every ``DIVERGENCE_CHECK_EVERY`` steps, without a host sync per step."""
        value = loss.detach()
        trainer = self._trainer
        single = trainer is None or trainer.world_size <= 1
        if single and value.device.type == "cpu":
            return None if bool(torch.isfinite(value) & (value <= DIVERGED_LOSS)) else float(value)
        # [is NaN, loss with NaN as +inf]: their maxima tell whether any step (or rank) diverged and how
        as_max = torch.nan_to_num(value.float(), nan=math.inf, posinf=None if single else math.inf)
        worst = torch.stack([torch.isnan(value).float(), as_max])
        if not single:
            worst = trainer.strategy.reduce(worst, reduce_op="max")
        else:
            self._worst = worst if self._worst is None else torch.maximum(self._worst, worst)
            if (self.global_step + 1) % DIVERGENCE_CHECK_EVERY and trainer is not None:
                return None
            worst, self._worst = self._worst, None
        is_nan, loss_max = worst.tolist()
        if is_nan:
            return math.nan
        return None if loss_max <= DIVERGED_LOSS else loss_max

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._step(batch)
        diverged = self.diverged_loss(loss)
        if diverged is not None:
            lr = None
            if self._trainer is not None and self._trainer.optimizers:
                lr = self._trainer.optimizers[0].param_groups[0].get("lr")
            lr_text = f" (optimizer.lr={lr:g})" if lr is not None else ""
            world = self._trainer.world_size if self._trainer is not None else 1
            which = f" (the worst of the {world} processes)" if world > 1 else ""
            raise TrainingDiverged(
                f"training diverged: the training loss (train/loss) is {diverged:.4g}{which} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}){lr_text}. Training "
                f"stopped; no test results were written. Use a lower learning rate, e.g. optimizer.lr=1e-3."
            )
        if not self.automatic_optimization:  # Lightning's optimizer counts the step and runs the hooks
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        n = len(y)
        # in the metric's dtype, as MeanMetric casts each value (a no-op in float32)
        loss_images, correct = loss.detach().to(self.train_loss.dtype) * n, (preds == y).sum()
        sums, step = self._epoch_sums, [loss_images, correct, n]
        self._epoch_sums = step if sums is None else [a + b for a, b in zip(sums, step, strict=True)]
        self.step_metrics = {"train/loss_step": loss.detach()}
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # this rank's batch loss, only on the steps the loggers write (Lightning's own rule): logging it on
        # every step cost a third of the loop's time on the CPU
        connector = getattr(self._trainer, "_logger_connector", None)
        if connector is None or connector.should_update_logs or self._trainer.fast_dev_run:
            self.log("train/loss_step", self.step_metrics["train/loss_step"], on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = None

    def on_train_epoch_end(self) -> None:
        # per epoch: the mean over every training image of every rank (the metrics sum their states)
        sums, self._epoch_sums = self._epoch_sums, None
        if sums is not None:
            loss_images, correct, n = sums
            self.train_loss.update(loss_images, torch.tensor(float(n)))
            self.train_acc.update(correct, torch.tensor(n))
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def _evaluation_step(self, batch, stage: str) -> None:
        """``val`` / ``test``: the batch's loss and predictions into the stage's metrics, logged per epoch."""
        loss, preds, y = self._step(batch)
        acc, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        acc.update(preds, y)
        mean_loss.update(loss, weight=len(y))
        self.log(f"{stage}/loss", mean_loss, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ShiftProbeError("no optimizer configured: training needs one, e.g. optimizer=adam")
        return self.optimizer_factory(params=self.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[INITIAL_STATE_KEY] = self.initial_net_state
        _sync_step_progress(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        _sync_step_progress(checkpoint)
        state = checkpoint.get(INITIAL_STATE_KEY)
        if state is not None:
            self.initial_net_state = {k: v.detach().cpu().clone() for k, v in state.items()}
            self.initial_net_origin = "initial weights saved in the checkpoint"


class EpochRatio(Metric):
    """``num / den`` summed over the updates and the ranks: float sums as ``MeanMetric`` (``integer=False``)
    or counts divided as floats, as micro ``MulticlassAccuracy`` (``integer=True``)."""

    full_state_update = False

    def __init__(self, integer: bool):
        super().__init__()
        self.integer = bool(integer)
        self.add_state("num", default=torch.tensor(0 if integer else 0.0), dist_reduce_fx="sum")
        self.add_state("den", default=torch.tensor(0 if integer else 0.0), dist_reduce_fx="sum")

    def update(self, num: torch.Tensor, den: torch.Tensor) -> None:
        self.num += num.to(self.num.dtype)
        self.den += den.to(self.den.device, self.den.dtype)

    def compute(self) -> torch.Tensor:
        if self.integer:
            return self.num.float() / self.den.float()
        return self.num / self.den


def _sync_step_progress(checkpoint: dict) -> None:
    """Make the checkpoint's optimizer-step counts of Lightning's automatic and manual loops agree (the
    larger), so ``global_step`` resumes alike whichever loop wrote the checkpoint and whichever resumes it."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    auto, manual = loop.get(_AUTO_PROGRESS), loop.get(_MANUAL_PROGRESS)
    if not isinstance(auto, dict) or not isinstance(manual, dict):
        return
    try:
        auto_step = auto["optimizer"]["step"]
        auto_done, manual_done = int(auto_step["total"]["completed"]), int(manual["total"]["completed"])
    except (KeyError, TypeError, ValueError):
        return
    if manual_done > auto_done:
        auto["optimizer"]["step"] = copy.deepcopy(manual)
        zero_grad = auto["optimizer"].get("zero_grad")
        if isinstance(zero_grad, dict):
            for part in ("total", "current"):
                n = int(manual[part]["completed"])
                zero_grad[part] = {"ready": n, "started": n, "completed": n}
    elif auto_done > manual_done:
        loop[_MANUAL_PROGRESS] = copy.deepcopy(auto_step)
