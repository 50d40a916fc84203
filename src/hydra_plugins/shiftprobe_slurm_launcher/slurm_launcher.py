"""Hydra's SLURM launcher (hydra-submitit-launcher) whose jobs are watched by ``QueueWatcher``: where SLURM
keeps no accounting (``sacct`` fails, e.g. ``scripts/slurm_single_node.sh``), job states come from ``squeue``
(docs/usage.md). Hydra's plugin scan imports this module: it imports nothing heavy, and defines nothing
without hydra-submitit-launcher (``pip install -e ".[sweep]"``)."""

from __future__ import annotations

from collections.abc import Sequence

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # the plugin is not installed: hydra/launcher=slurm does not compose either
    SubmititSlurmLauncher = None


if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher whose jobs are watched by ``QueueWatcher``."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            from submitit.slurm.slurm import SlurmJob

            from ._queue_watcher import QueueWatcher

            # submitit's SlurmJob holds one watcher for all its jobs, as a class attribute
            saved = SlurmJob.__dict__["watcher"]
            SlurmJob.watcher = QueueWatcher(delay_s=saved._delay_s)
            try:
                return super().launch(job_overrides, initial_job_idx)
            finally:
                SlurmJob.watcher = saved
