"""A test-only callback (imported by ``train.py`` subprocesses through PYTHONPATH=tests): sets every
weight of one DDP rank's network to NaN before batch ``at``, so that rank alone sees a NaN loss, as
when one rank's batch makes a run diverge."""

import lightning as L
import torch


class NanWeightsOnRank(L.Callback):
    def __init__(self, rank: int = 1, at: int = 1):
        self.rank, self.at = int(rank), int(at)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.at:
            with torch.no_grad():
                for p in pl_module.net.parameters():
                    p.fill_(float("nan"))
