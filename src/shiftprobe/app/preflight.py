"""The settings check of ``python train.py`` and ``eval.py`` before Lightning (seconds to import) is: a bad
value is one line and exit status 1 in about 2 s, leaving no run folder. A misspelt key of a ``_target_``
section is found by the run's own check, after the imports."""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from shiftprobe.app.config_checks import check_network, validate_config
from shiftprobe.app.run_dir import is_multirun, remove_unstarted_run_dir
from shiftprobe.errors import ShiftProbeError

#: the environment variables a launcher sets for a process's global rank, in the order Lightning reads them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launch_rank() -> int:
    """This process's global rank from its launcher's environment (0 for a plain run)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def check_settings_first(cfg: DictConfig, require_ckpt: bool = False) -> None:
    """``validate_config(cfg, known_keys=False)`` and, for train.py, ``check_network`` (eval.py takes the
    model from the checkpoint); on a bad setting print ``error: ...``, remove the unstarted run folder and
    exit with status 1. Nothing in a multirun (``shiftprobe.app.train.run`` reports a broken job there)."""
    if is_multirun():
        return
    try:
        validate_config(cfg, require_ckpt=require_ckpt, known_keys=False)
        if not require_ckpt:
            check_network(cfg)
    except ShiftProbeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        remove_unstarted_run_dir(launch_rank())
        sys.exit(1)
