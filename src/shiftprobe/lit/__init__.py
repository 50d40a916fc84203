"""The Lightning glue: the LightningModule, the measurement callback, the interrupt checkpoint."""

from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.lit.checkpointing import InterruptCheckpoint
from shiftprobe.lit.module import ShiftProbeModule

__all__ = ["InterruptCheckpoint", "ShiftProbeCallback", "ShiftProbeModule"]
