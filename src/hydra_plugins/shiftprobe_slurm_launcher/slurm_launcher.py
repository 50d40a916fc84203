"""Hydra's SLURM launcher (hydra-submitit-launcher) that asks ``squeue`` for job states when SLURM keeps
no accounting.

submitit polls the state of submitted jobs with ``sacct``. On a cluster without accounting
(``AccountingStorageType=accounting_storage/none``, e.g. the one-node cluster of
``scripts/slurm_single_node.sh``) every poll failed: it printed ``Slurm accounting storage is disabled``
and submitit's ``Bypassing sacct error ..., status may be inaccurate`` (three times, through Hydra's
logging), and a job that ended without a result (cancelled, killed for memory) stayed in state
``UNKNOWN``, so the sweep waited for it forever.

``SlurmLauncher`` (``_target_`` of ``conf/hydra/launcher/slurm.yaml``) watches its jobs with
``QueueWatcher`` (``_queue_watcher``): where ``sacct`` works nothing changes; where accounting is off,
job states come from ``squeue``. Hydra imports every public module here when it looks for plugins:
this one imports nothing heavy, and defines nothing without hydra-submitit-launcher
(``pip install -e ".[sweep]"``).
"""

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
