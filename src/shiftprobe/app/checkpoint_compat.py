"""Does a checkpoint fit the run about to use it? Checked before training (``train.py ckpt_path=``) or
testing (``eval.py``), so a checkpoint of another model variant ends in one line naming what differs
and the fix, instead of PyTorch's ``size mismatch`` traceback.

Two checks, in this order:

- the model settings stored in the checkpoint (``hyper_parameters.config.model``, written by
  ``train.py``) against the run's ``model`` settings: every key whose value differs;
- the checkpoint's weights against the model just built: missing or extra keys, different shapes
  (the only check possible for a checkpoint without stored settings).

The message names the first differences and the fix: the option of the ``model`` config group closest
to the checkpoint's settings plus the ``model.<key>=<value>`` overrides still needed (options are looked
up only inside a Hydra app; elsewhere the overrides alone).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from shiftprobe.checkpoints import load_torch_file
from shiftprobe.errors import ShiftProbeError
from shiftprobe.stored_config import WEIGHT_SOURCE_KEYS, upgrade_targets

log = logging.getLogger(__name__)

#: differing weights named in a message (the rest are counted)
MAX_NAMED = 3


def load_checkpoint(ckpt_path: str | Path, trusted: bool = False) -> dict:
    """The checkpoint as a dict, on the CPU: ``torch.load(weights_only=True)``, or unpickled when the user
    trusts the file (``trust_checkpoint=true``); a file that is no checkpoint is a ShiftProbeError."""
    checkpoint = load_torch_file(Path(ckpt_path), "ckpt_path", trusted=trusted)
    if not isinstance(checkpoint, dict):
        raise ShiftProbeError(
            f"ckpt_path={str(ckpt_path)!r} holds a {type(checkpoint).__name__}, not a checkpoint; "
            f"use a .ckpt file written by train.py, e.g. <run>/checkpoints/best.ckpt"
        )
    return checkpoint


def stored_model_config(checkpoint: dict) -> dict | None:
    """The model settings the checkpoint was trained with (None for checkpoints that record none)."""
    config = upgrade_targets((checkpoint.get("hyper_parameters") or {}).get("config") or {})
    model = config.get("model")
    return dict(model) if isinstance(model, dict) else None


def with_added_defaults(stored: dict, run: dict) -> dict:
    """``stored`` completed, for the keys ``run`` sets and the checkpoint does not record, with the default
    of the stored ``_target_``'s parameter of that name: a setting added to a model after the checkpoint
    was written (``pool``, ``padding``, ``blur_filter_size`` of GapCNN, AllConvCNN, SmallResNet) built the
    network at that default."""
    try:
        from hydra.utils import get_object

        params = inspect.signature(get_object(str(stored["_target_"]))).parameters
    except Exception:  # no target, or one that cannot be imported: compare the keys as they are
        return stored
    added = {
        k: params[k].default
        for k in run
        if k not in stored and k in params and params[k].default is not inspect.Parameter.empty
    }
    return {**stored, **added}


#: stands for a key one side does not have
ABSENT = object()


def model_differences(stored: dict, run: dict) -> list[tuple[str, object, object]]:
    """``(key, checkpoint value, run value)`` for every model key whose values differ (``ABSENT``: no such key)."""
    keys = [k for k in list(stored) + [k for k in run if k not in stored] if k not in WEIGHT_SOURCE_KEYS]
    pairs = [(str(k), stored.get(k, ABSENT), run.get(k, ABSENT)) for k in keys]
    return [(k, a, b) for k, a, b in pairs if a is ABSENT or b is ABSENT or a != b]


def state_dict_differences(stored: dict, current: dict) -> list[tuple[str, object, object]]:
    """``(key, checkpoint shape, model shape)`` for weights whose shapes differ or that only one side has
    (the shape of the side that lacks the key is None), in the model's order."""
    out = []
    for key in list(current) + [k for k in stored if k not in current]:
        a, b = stored.get(key), current.get(key)
        shape_a = list(a.shape) if isinstance(a, torch.Tensor) else None
        shape_b = list(b.shape) if isinstance(b, torch.Tensor) else None
        if shape_a != shape_b:
            out.append((key, shape_a, shape_b))
    return out


def _override(key: str, value) -> str:
    """The override that sets ``model.<key>`` to ``value`` (removes it for ``ABSENT``)."""
    if value is ABSENT:
        return f"~model.{key}"
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"model.{key}={text}"


def _shown(value) -> str:
    return "absent" if value is ABSENT else repr(value)


def _model_options() -> dict[str, dict]:
    """Every option of the ``model`` config group -> its resolved settings (this run's other overrides
    applied). Only inside a Hydra app (its config search path); elsewhere none."""
    try:
        from hydra import compose
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        if not (GlobalHydra.instance().is_initialized() and HydraConfig.initialized()):
            return {}
        hydra_cfg = HydraConfig.get()
        others = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith("model")]
        found = {}
        for option in sorted(GlobalHydra.instance().config_loader().get_group_options("model")):
            cfg = compose(hydra_cfg.job.config_name, overrides=[*others, f"model={option}"])
            found[option] = OmegaConf.to_container(cfg.model, resolve=True)
        return found
    except Exception as err:  # a hint only: never hide the real message behind a composition problem
        log.debug("could not compare with the model options: %s", err)
        return {}


def _settings_fix(stored: dict, diffs: list[tuple[str, object, object]]) -> str:
    """``model=<closest option> model.<key>=<value> ...``: the overrides that give ``stored``."""
    overrides = " ".join(_override(key, a) for key, a, _ in diffs)
    best = None
    for option, settings in _model_options().items():
        rest = model_differences(stored, settings)
        if best is None or len(rest) < len(best[1]):
            best = (option, rest)
    if best is None or len(best[1]) >= len(diffs):
        return overrides
    option, rest = best
    if not rest:
        return f"model={option} (or {overrides})"
    return " ".join([f"model={option}"] + [_override(key, a) for key, a, _ in rest])


def _shapes_fit(state_dict: dict) -> Callable[[dict], bool]:
    def fits(model_cfg: dict) -> bool:
        """Whether the network these settings build has the checkpoint's weight shapes."""
        import hydra

        from shiftprobe.lit.module import ShiftProbeModule

        try:
            net = hydra.utils.instantiate(model_cfg)
        except Exception:
            return False
        return not state_dict_differences(state_dict, ShiftProbeModule(net=net).state_dict())

    return fits


def check_checkpoint_fits(
    checkpoint: dict, ckpt_path: str | Path, run_model: dict | None, module: torch.nn.Module, action: str
) -> None:
    """Raise ShiftProbeError (one line: what differs and the fix) unless ``checkpoint`` fits the run.

    ``run_model``: the run's resolved ``model`` settings; ``module``: the LightningModule just built;
    ``action``: what the run does with the checkpoint ("resume", "test"), for the message.
    """
    where = f"ckpt_path={str(ckpt_path)!r}"
    stored = stored_model_config(checkpoint)
    if stored is not None and isinstance(run_model, dict):
        stored = with_added_defaults(stored, run_model)
        diffs = model_differences(stored, run_model)
        if diffs:
            named = "; ".join(
                f"model.{key} is {_shown(a)} in the checkpoint but {_shown(b)} in this run"
                for key, a, b in diffs
            )
            raise ShiftProbeError(
                f"{where} was trained with other model settings: {named}. "
                f"To {action} it, use the settings it was trained with: add {_settings_fix(stored, diffs)}."
            )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ShiftProbeError(
            f"{where} holds no weights (no state_dict); use a .ckpt file written by train.py"
        )
    diffs = state_dict_differences(state, module.state_dict())
    if not diffs:
        return

    def shape(value) -> str:
        return "absent" if value is None else "[" + ", ".join(map(str, value)) + "]"

    named = "; ".join(
        f"{key} is {shape(a)} in the checkpoint, {shape(b)} in this model" for key, a, b in diffs[:MAX_NAMED]
    )
    more = f" (and {len(diffs) - MAX_NAMED} more)" if len(diffs) > MAX_NAMED else ""
    fits = _shapes_fit(state)
    options = [option for option, settings in _model_options().items() if fits(settings)]
    if options:
        hint = f"it fits model={options[0]}: add model={options[0]}"
    else:
        hint = "use the model settings it was trained with (model=<option>, model.<key>=<value>)"
    recorded = "" if stored is None else " although the recorded model settings agree"
    raise ShiftProbeError(
        f"{where} does not fit this model{recorded}: {named}{more}. To {action} it, {hint}."
    )
