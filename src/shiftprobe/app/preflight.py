"""The settings check of ``python train.py``, before Lightning is imported.

Importing Lightning takes about 4.5 s on a 2-core CPU (it pulls in ``torch._dynamo`` and torchvision);
the check of the settings' values needs only torch and OmegaConf. So ``train.py`` runs
``check_settings_first`` before it imports the training code: ``python train.py optimizer.lr=0``
answers in about 2 s with the same one line and exit status 1, and leaves no run folder (a misspelt
key is still found by the run's own check, after the imports). The probe points
(``callbacks.shift_probe.layers``) are checked against the network itself, built from ``cfg.model``
(plain ``torch.nn`` modules, no Lightning). In a multirun it does nothing: there a broken job is
reported by ``shiftprobe.app.train.run`` as before (the sweep goes on, an Optuna trial fails); the
measurement callback checks its layers itself when the run starts.
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

from shiftprobe.app.config_checks import PROBE, validate_config
from shiftprobe.app.run_dir import is_multirun, remove_unstarted_run_dir
from shiftprobe.errors import ShiftProbeError, reject_setting

#: the environment variables a launcher sets for a process's global rank, in the order Lightning reads them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launch_rank() -> int:
    """This process's global rank from its launcher's environment (0 for a plain run)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def check_probe_layers(cfg: DictConfig) -> None:
    """Refuse ``callbacks.shift_probe.layers`` naming a module the network does not have, in one line
    (the network built from ``cfg.model``; a model that cannot be built is left to the run to report)."""
    import hydra

    from shiftprobe.probe.capture import resolve_layers

    layers = OmegaConf.select(cfg, f"{PROBE}.layers", default=None)
    if layers is None or OmegaConf.select(cfg, "model._target_", default=None) is None:
        return
    try:
        net = hydra.utils.instantiate(cfg.model)
    except Exception:  # e.g. a key the model does not take: the run's key check names it
        return
    names = list(OmegaConf.to_container(layers))
    try:
        resolve_layers(net, names)
    except ValueError as err:
        reject_setting(f"{PROBE}.layers", names, str(err))


def check_settings_first(cfg: DictConfig) -> None:
    """Every value check of ``validate_config(cfg)`` (not the key names: checking them against the
    classes' signatures imports the classes, and so Lightning; the run itself checks them next); on a
    bad setting print ``error: ...``, remove the unstarted run folder and exit with status 1. Nothing
    in a multirun."""
    if is_multirun():
        return
    try:
        validate_config(cfg, known_keys=False)  # the key names: checked by the run itself (they import Lightning)
        check_probe_layers(cfg)
    except ShiftProbeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        remove_unstarted_run_dir(launch_rank())
        sys.exit(1)
