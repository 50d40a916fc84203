"""What a configuration stored in a file (a ``.ckpt``'s ``hyper_parameters.config``) may ask for, checked
before ``eval.py`` or ``shiftprobe.load_network`` build anything from it (``checked_model_config``,
``check_plain``). Lightning- and Hydra-free."""

from __future__ import annotations

import re
from collections.abc import Mapping

from shiftprobe.errors import ShiftProbeError

#: ``_target_``s of checkpoints written before the package layout of version 0.2
LEGACY_TARGETS = {
    "shiftprobe.model.LabCNN": "shiftprobe.models.LabCNN",
    "shiftprobe.callback.ShiftProbeCallback": "shiftprobe.lit.ShiftProbeCallback",
    "shiftprobe.checkpointing.InterruptCheckpoint": "shiftprobe.lit.InterruptCheckpoint",
}
#: a Hydra key (``_target_``, ``_args_``, ``_partial_``, ``_recursive_``, ``_convert_``, ...)
_SPECIAL_KEY = re.compile(r"^_.*_$")
#: longest stored value quoted in a message
_SHOWN = 60


def upgrade_targets(config):
    """The saved configuration with legacy ``_target_`` paths replaced by today's (checkpoints of 0.1 load)."""
    if isinstance(config, dict):
        return {k: (LEGACY_TARGETS.get(v, v) if k == "_target_" else upgrade_targets(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [upgrade_targets(v) for v in config]
    return config


#: model keys that say where a run's starting weights came from, not what the network is: not compared
#: with the run's, and not read again when the network is rebuilt from a checkpoint (it holds the weights)
WEIGHT_SOURCE_KEYS = ("weights",)


def without_weight_source(model: dict) -> dict:
    """A recorded model config to rebuild the network from a checkpoint: ``weights`` (``model=torchvision``'s
    starting weights) set to None, so the file is not read again (the checkpoint's weights are loaded)."""
    return {k: (None if k in WEIGHT_SOURCE_KEYS else v) for k, v in model.items()}


def model_targets() -> dict[str, type]:
    """Every ``_target_`` a stored model setting may name -> the class it builds: each class of
    ``shiftprobe.models`` as ``shiftprobe.models.<Name>`` and as ``<its module>.<Name>``."""
    import shiftprobe.models as models

    out = {}
    for name in models.BUILDERS:
        cls = getattr(models, name)
        out[f"shiftprobe.models.{name}"] = cls
        out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _refuse(where: str, key: str, value, why: str) -> None:
    raise ShiftProbeError(
        f"{where} records {key}={_shown(value)}, {why}: nothing is built from a file's settings unless each "
        f"is a number, a text, true/false, null or a list/mapping of those; use a checkpoint written by train.py"
    )


def check_plain(where: str, key: str, value) -> None:
    """Raise ShiftProbeError unless the stored ``value`` (at ``key``) is plain: a number, a text without an
    interpolation (``${...}``), true/false, null, or a list or mapping of those with no Hydra key
    (``_target_``, ``_args_``, ...) at any depth."""
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if "${" in value:
            _refuse(where, key, value, "an interpolation")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(where, f"{key}[{i}]", item)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str) or _SPECIAL_KEY.match(k):
                _refuse(where, f"{key}.{k}", item, f"a key {k!r} that asks for code to run")
            check_plain(where, f"{key}.{k}", item)
        return
    _refuse(where, key, value, f"a {type(value).__name__}")


def checked_model_config(model_cfg: Mapping, where: str) -> tuple[type, dict]:
    """The model class a stored ``model`` setting names and its keyword arguments, after checking both;
    ``where`` names the file for the one-line error, e.g. ``"ckpt_path='best.ckpt'"``."""
    if not isinstance(model_cfg, Mapping):
        _refuse(where, "model", model_cfg, "not a mapping of settings")
    config = upgrade_targets(dict(model_cfg))
    target = config.pop("_target_", None)
    allowed = model_targets()
    if not isinstance(target, str) or target not in allowed:
        names = ", ".join(sorted(k for k in allowed if k.count(".") == 2))
        raise ShiftProbeError(
            f"{where} records model._target_={_shown(target)}, which is not one of the project's models "
            f"({names}): nothing is built from it; measure your own network with "
            f"shiftprobe.load_network(path, model=YourNet())"
        )
    check_plain(where, "model", config)
    return allowed[target], config
