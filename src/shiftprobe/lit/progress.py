"""``StepLossProgressBar``: Lightning's tqdm bar, showing the latest batch loss when it redraws."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StepLossProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` plus the module's ``step_metrics`` (e.g. ``train/loss_step``, kept on the device),
    read only when the bar redraws: one host read per redraw, not a device synchronisation per step (as
    ``prog_bar=True`` step values would be)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        step = {k: v.item() for k, v in (getattr(pl_module, "step_metrics", None) or {}).items()}
        version = {"v_num": items.pop("v_num")} if "v_num" in items else {}
        return {**version, **step, **items}
