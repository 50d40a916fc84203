"""The Hydra run folder of a run that never started, and whether this job is part of a multirun (Hydra and
the standard library only: ``shiftprobe.app.preflight`` uses it before Lightning is imported)."""

from __future__ import annotations

import shutil
from pathlib import Path


def is_multirun() -> bool:
    """Whether this job runs under ``python train.py -m`` (False outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


#: the run folder's lock file (``shiftprobe.app.run_lock``): one run per folder
LOCK_NAME = ".lock"


def only_hydra_files(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what Hydra writes (``.hydra/``, ``*.log``), the run's lock
    file and empty folders."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if entry.name != ".hydra" and any(p.is_file() or p.is_symlink() for p in entry.rglob("*")):
                return False
        elif not entry.name.endswith(".log") and entry.name != LOCK_NAME:
            return False
    return True


def remove_unstarted_run_dir(rank: int = 0) -> Path | None:
    """Remove this job's Hydra run folder if the run never started (it holds only Hydra's config and log),
    and its date folder under ``runs/`` once empty; returns the removed folder. Nothing happens in a
    multirun (the sweep summary lists a broken job by its folder), outside Hydra or on ranks other than 0."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
            return None
        folder = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # a config composed without Hydra's runtime section
        return None
    if rank != 0 or not folder.is_dir() or not only_hydra_files(folder):
        return None
    for entry in list(folder.iterdir()):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    try:
        folder.rmdir()
        day = folder.parent
        if day.parent.name == "runs" and not any(day.iterdir()):
            day.rmdir()
    except OSError:
        pass
    return folder
