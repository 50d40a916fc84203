"""``QueueWatcher``: submitit's job watcher, with ``squeue`` in place of ``sacct`` where SLURM keeps no
accounting (asked once, at the first poll); a job that squeue no longer lists has ended (``NOT_IN_QUEUE``),
so submitit returns its result or its error instead of waiting forever. Private, so that Hydra's plugin
scan does not import submitit."""

from __future__ import annotations

import logging
import os
import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger(__name__)

#: what ``sacct`` prints (on stderr, exit status 1) when the cluster keeps no accounting
ACCOUNTING_DISABLED = "accounting storage is disabled"
#: the state of a job that ``squeue`` no longer lists (submitit counts it as ended)
NOT_IN_QUEUE = "NOT_IN_QUEUE"


def accounting_enabled(job_id: str) -> bool:
    """False only when ``sacct`` (asked about ``job_id``, quietly) says accounting is disabled, or is missing;
    any other failure (a busy database) counts as enabled, and submitit polls sacct as it always does."""
    try:
        done = subprocess.run(
            ["sacct", "--noheader", "--allocations", "--format=JobID", f"--jobs={job_id}"],
            capture_output=True, text=True, timeout=60,
        )
    except FileNotFoundError:
        return False
    except subprocess.TimeoutExpired:
        return True
    return not (done.returncode != 0 and ACCOUNTING_DISABLED in done.stderr.lower())


class QueueWatcher(SlurmInfoWatcher):
    """submitit's ``SlurmInfoWatcher`` (sacct), polling ``squeue`` instead where accounting is off."""

    def __init__(self, delay_s: int = 600) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting: bool | None = None  # None: not asked yet

    def _pending(self) -> set[str]:
        return self._registered - self._finished

    def _make_command(self) -> list[str] | None:
        pending = self._pending()
        if not pending:
            return None
        if self.accounting is None:
            self.accounting = accounting_enabled(min(pending).split("_")[0])
            if not self.accounting:
                log.info("SLURM keeps no accounting here: job states come from squeue")
        if self.accounting:
            return super()._make_command()
        # this user's jobs, not --jobs=...: squeue fails when it knows none of the ids any more
        return ["squeue", "--states=all", "--noheader", "--format=%i|%T|%N", f"--user={os.getuid()}"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if self.accounting is not False:
            return super().read_info(string)
        if not isinstance(string, str):
            string = string.decode()
        info = super().read_info("JobID|State|NodeList\n" + string)
        for job_id in self._pending() - set(info):
            info[job_id] = {"JobID": job_id, "State": NOT_IN_QUEUE, "NodeList": ""}
        return info
