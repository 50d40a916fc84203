"""``quiet_lightning()``: silence, by message only, what Lightning and PyTorch print that a user can do
nothing about; warnings the user can act on stay."""

from __future__ import annotations

import logging
import re
import warnings

#: (message regex, why the user cannot act on it): each matching warning is ignored
SILENCED_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning's own use of a PyTorch API that PyTorch deprecated (lightning/pytorch/utilities/_pytree.py)",
    ),
    (
        r"The dirpath has changed from ",
        "every resume writes into its own new run directory (Hydra), so the checkpoint folder always changes",
    ),
    (
        r"The `srun` command is available on your system but is not used",
        "printed by every run on a machine that has SLURM installed; the project's SLURM jobs start through "
        "hydra/launcher=slurm or submitit_slurm, which run each task under srun themselves",
    ),
    (
        r"You requested to overfit but enabled train dataloader shuffling",
        "debug=overfit: Lightning replaces the project's seeded training order by a fixed one, as intended",
    ),
)
#: Lightning info lines (regexes, searched anywhere in the message) that are dropped
SILENCED_LOG_LINES: tuple[str, ...] = (r"Tip: .*litlogger",)
#: the loggers Lightning's ``rank_zero_info`` writes to (the PyTorch one replaces Fabric's on import)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...] = SILENCED_LOG_LINES):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def quiet_lightning() -> None:
    """Ignore ``SILENCED_WARNINGS`` and drop ``SILENCED_LOG_LINES`` (idempotent)."""
    for pattern, _why in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages())
