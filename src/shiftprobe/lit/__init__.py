"""The Lightning glue: the LightningModule, the measurement callback, the interrupt checkpoint, the progress bar."""

from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.lit.checkpointing import InterruptCheckpoint
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.lit.progress import StepLossProgressBar

__all__ = ["InterruptCheckpoint", "ShiftProbeCallback", "ShiftProbeModule", "StepLossProgressBar"]
