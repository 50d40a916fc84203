"""Does a checkpoint fit the run about to resume or test it? One line naming what differs (the recorded model
settings against the run's, then the weights against the model built) and the fix (the ``model`` option
closest to the checkpoint's settings and the overrides still needed), instead of PyTorch's traceback."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from shiftprobe.checkpoints import fit_problems, recorded_config
from shiftprobe.errors import ShiftProbeError
from shiftprobe.stored_config import WEIGHT_SOURCE_KEYS, checked_model_config, upgrade_targets

log = logging.getLogger(__name__)

#: stands for a key one side does not have
ABSENT = object()


def stored_model_config(checkpoint: dict) -> dict | None:
    """The model settings the checkpoint was trained with (None for checkpoints that record none)."""
    model = upgrade_targets(recorded_config(checkpoint) or {}).get("model")
    return dict(model) if isinstance(model, dict) else None


def with_added_defaults(stored: dict, run: dict) -> dict:
    """``stored`` completed, for the keys ``run`` sets and the checkpoint does not record, with the default
    of the stored ``_target_``'s parameter: a setting added to a model after the checkpoint was written
    (``pool``, ``padding``, ``blur_filter_size``) built the network at that default."""
    try:
        from hydra.utils import get_object

        params = inspect.signature(get_object(str(stored["_target_"]))).parameters
    except Exception:  # no target, or one that cannot be imported: compare the keys as they are
        return stored
    empty = inspect.Parameter.empty
    added = {k: params[k].default for k in run if k not in stored and k in params and params[k].default is not empty}
    return {**stored, **added}


def model_differences(stored: dict, run: dict) -> list[tuple[str, object, object]]:
    """``(key, checkpoint value, run value)`` for every model key whose values differ (``ABSENT``: no key)."""
    keys = [k for k in list(stored) + [k for k in run if k not in stored] if k not in WEIGHT_SOURCE_KEYS]
    pairs = [(str(k), stored.get(k, ABSENT), run.get(k, ABSENT)) for k in keys]
    return [(k, a, b) for k, a, b in pairs if a is ABSENT or b is ABSENT or a != b]


def _override(key: str, value, group: str = "model") -> str:
    """The override that sets ``<group>.<key>`` to ``value`` (removes it for ``ABSENT``)."""
    if value is ABSENT:
        return f"~{group}.{key}"
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{group}.{key}={text}"


def _shown(value) -> str:
    return "absent" if value is ABSENT else repr(value)


def _group_options(group: str = "model") -> dict[str, dict]:
    """Every option of the config ``group`` -> its resolved settings (this run's other overrides applied);
    none outside a Hydra app."""
    try:
        from hydra import compose
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        if not (GlobalHydra.instance().is_initialized() and HydraConfig.initialized()):
            return {}
        hydra_cfg = HydraConfig.get()
        others = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith(group)]
        found = {}
        for option in sorted(GlobalHydra.instance().config_loader().get_group_options(group)):
            cfg = compose(hydra_cfg.job.config_name, overrides=[*others, f"{group}={option}"])
            found[option] = OmegaConf.to_container(cfg[group], resolve=True)
        return found
    except Exception as err:  # a hint only: never hide the real message behind a composition problem
        log.debug("could not compare with the %s options: %s", group, err)
        return {}


def _settings_fix(stored: dict, diffs: list[tuple[str, object, object]], group: str = "model", keys=None) -> str:
    """``<group>=<closest option> <group>.<key>=<value> ...``: the overrides that give ``stored`` (only its
    ``keys``, when given)."""
    overrides = " ".join(_override(key, a, group) for key, a, _ in diffs)
    best = None
    for option, settings in _group_options(group).items():
        rest = model_differences(stored, {k: v for k, v in settings.items() if keys is None or k in keys})
        if best is None or len(rest) < len(best[1]):
            best = (option, rest)
    if best is None or len(best[1]) >= len(diffs):
        return overrides
    option, rest = best
    if not rest:
        return f"{group}={option} (or {overrides})"
    return " ".join([f"{group}={option}"] + [_override(key, a, group) for key, a, _ in rest])


def _fits(state: dict, model_cfg: dict) -> bool:
    """Whether the network ``model_cfg`` builds has the weights ``state`` (``net.`` keys) holds."""
    import hydra

    try:
        net = hydra.utils.instantiate(model_cfg)
    except Exception:
        return False
    return fit_problems(state, {f"net.{k}": v for k, v in net.state_dict().items()}) is None


def check_checkpoint_fits(
    checkpoint: dict, ckpt_path: str | Path, run_model: dict | None, module: torch.nn.Module, action: str
) -> None:
    """Raise ShiftProbeError (one line: what differs and the fix) unless ``checkpoint`` fits the run's
    resolved ``model`` settings and the LightningModule just built; ``action`` ("resume", "test"): for the
    message."""
    where = f"ckpt_path={str(ckpt_path)!r}"
    stored = stored_model_config(checkpoint)
    if stored is not None:  # one of the project's models with plain values, or one line: never offered as a fix
        checked_model_config(stored, where)
    if stored is not None and isinstance(run_model, dict):
        stored = with_added_defaults(stored, run_model)
        diffs = model_differences(stored, run_model)
        if diffs:
            named = "; ".join(f"model.{k} is {_shown(a)} in the checkpoint but {_shown(b)} in this run" for k, a, b in diffs)
            raise ShiftProbeError(f"{where} was trained with other model settings: {named}. "
                                  f"To {action} it, use the settings it was trained with: add {_settings_fix(stored, diffs)}.")
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ShiftProbeError(f"{where} holds no weights (no state_dict); use a .ckpt file written by train.py")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    problems = fit_problems(state, module.state_dict())
    if problems is None:
        return
    options = [option for option, settings in _group_options().items() if _fits(state, settings)]
    if options:
        hint = f"it fits model={options[0]}: add model={options[0]}"
    else:
        hint = "use the model settings it was trained with (model=<option>, model.<key>=<value>)"
    recorded = "" if stored is None else " although the recorded model settings agree"
    raise ShiftProbeError(f"{where} does not fit this model{recorded}: {problems}. To {action} it, {hint}.")


#: what a resume continues with, so what its command line must not change: ``(group, keys (None: all), why)``
RESUMED = (
    ("optimizer", None, "continues with the checkpoint's optimizer and its settings"),
    ("data", ("dataset", "val_size", "split_seed"), "keeps the checkpoint's training and validation images"),
)


def check_resume_fits(checkpoint: dict, ckpt_path: str | Path, config: dict) -> None:
    """A resume restores the optimizer's state and its settings (``lr``, ...) and trains on the images the
    checkpoint's run split off for training: another optimizer would be ignored or fail at the first step,
    another split (``data.val_size``, ``data.split_seed``, ``data.dataset``) would validate on training images.
    One line naming what differs and the fix."""
    recorded = recorded_config(checkpoint) or {}
    for group, keys, why in RESUMED:
        stored, run = recorded.get(group), config.get(group)
        if not isinstance(stored, dict) or not isinstance(run, dict):
            continue
        stored = with_added_defaults(stored, run)
        stored, run = ({k: v for k, v in d.items() if keys is None or k in keys} for d in (stored, run))
        diffs = model_differences(stored, run)
        if diffs:
            named = "; ".join(f"{group}.{k} is {_shown(a)} in the checkpoint but {_shown(b)} in this run" for k, a, b in diffs)
            raise ShiftProbeError(f"ckpt_path={str(ckpt_path)!r} was trained with other {group} settings: {named}. A resume "
                                  f"{why}: add {_settings_fix(stored, diffs, group, keys)}, or start a new run without "
                                  f"ckpt_path.")
