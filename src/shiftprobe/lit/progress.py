"""``StepLossProgressBar``: Lightning's tqdm bar, showing the latest batch loss when it redraws.

The module keeps its latest batch figures on the device (``pl_module.step_metrics``); the bar turns
them into numbers only when it redraws (every ``refresh_rate`` batches), so showing the loss costs one
host read per redraw instead of one per step (Lightning converts ``prog_bar=True`` step values every
step, a device synchronisation per step on a GPU).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StepLossProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` plus the module's ``step_metrics`` (e.g. ``train/loss_step``), read when drawn."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        step = {k: v.item() for k, v in (getattr(pl_module, "step_metrics", None) or {}).items()}
        version = {"v_num": items.pop("v_num")} if "v_num" in items else {}
        return {**version, **step, **items}
