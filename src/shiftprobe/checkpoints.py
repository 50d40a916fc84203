"""Read a network's weights from the files people have (``read_checkpoint``, ``load_network``; Lightning-free):
``torch.load(weights_only=True)`` unless the caller trusts the file, a ``.ckpt``'s model settings checked by
:mod:`shiftprobe.stored_config` before anything is built from them."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shiftprobe.errors import ShiftProbeError
from shiftprobe.stored_config import checked_model_config, without_weight_source

log = logging.getLogger(__name__)

#: where a training checkpoint written by train.py keeps the network's initial weights
INITIAL_STATE_KEY = "initial_net_state"
#: prefixes stripped from every key of a plain state_dict (when all keys have it)
STRIPPED_PREFIXES = ("net.", "module.", "_orig_mod.")
#: keys under which a training-loop checkpoint (a dict of several things) keeps the model's weights
NESTED_STATE_KEYS = ("state_dict", "model_state_dict")
ACCEPTED = ("a .ckpt written by train.py, a state_dict (torch.save(model.state_dict(), path)) "
            "or a whole module (torch.save(model, path))")


@dataclass
class CheckpointFile:
    """What a checkpoint file holds: its ``kind`` (``"lightning"``, ``"state_dict"`` or ``"module"``), the
    network's ``weights`` without the ``net.`` prefix, the ``initial`` weights a train.py checkpoint records,
    the whole Lightning ``checkpoint`` dict and the saved ``module`` (each where the kind has one)."""

    path: Path
    kind: str
    weights: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor] | None = None
    checkpoint: dict | None = None
    module: nn.Module | None = None


def recorded_config(checkpoint: Mapping) -> dict | None:
    """The run configuration a train.py checkpoint records (``hyper_parameters.config``), else None."""
    return (checkpoint.get("hyper_parameters") or {}).get("config") or None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the prefixes every key shares (``net.``, ``module.``, ``_orig_mod.``, nested too)."""
    state = dict(state)
    while True:
        prefix = next((p for p in STRIPPED_PREFIXES if state and all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}


#: the opt-in that lets the command line's files be unpickled (eval.py, train.py, initial_state)
CLI_OPT_IN = "trust_checkpoint=true"


def _refuse_pickle(path: Path, what: str, opt_in: str | None) -> ShiftProbeError:
    """The one line for a pickle not trusted; ``opt_in`` None: the setting never unpickles (``model.weights``)."""
    trust = ", so it is not loaded: " if opt_in is None else f": it is loaded only if you trust the file and say so with {opt_in}; or "
    return ShiftProbeError(
        f"{what}={str(path)!r} holds pickled Python objects (a whole saved module?), and unpickling runs code "
        f"stored in the file{trust}save its weights instead, torch.save(model.state_dict(), path)"
    )


def load_torch_file(path: Path, what: str, *, trusted: bool = False, opt_in: str | None = CLI_OPT_IN):
    """``torch.load(path, weights_only=True)``; a file of pickled objects is unpickled only when ``trusted``.
    ``what`` (the setting the path came from) and ``opt_in`` (how the user says they trust the file) are for
    the one-line ``ShiftProbeError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of known structure: do not run it
            raise ShiftProbeError(
                f"{what}={str(path)!r} is not a PyTorch checkpoint (torch.load cannot read it); use {ACCEPTED}"
            ) from None
    except Exception as err:
        raise ShiftProbeError(
            f"{what}={str(path)!r} is not a PyTorch checkpoint (torch.load: {err.__class__.__name__}); use {ACCEPTED}"
        ) from None
    if not trusted:
        raise _refuse_pickle(path, what, opt_in)
    return _unpickle(path, what)


def _unpickle(path: Path, what: str):
    """``torch.load(path, weights_only=False)``: the one load that runs code from a file (the user trusts it)."""
    log.warning("%s=%s holds pickled Python objects: unpickling it (you trust it), which runs code stored in "
                "the file", what, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as err:
        raise ShiftProbeError(
            f"{what}={str(path)!r} is a whole saved module whose class cannot be imported here ({err}); "
            f"save its weights instead, torch.save(model.state_dict(), path), and give the matching model=..."
        ) from None
    except Exception as err:
        raise ShiftProbeError(
            f"{what}={str(path)!r} cannot be unpickled ({err.__class__.__name__}: {err}); use {ACCEPTED}"
        ) from None


def read_checkpoint(
    path: str | Path, what: str = "ckpt_path", *, trusted: bool = False, opt_in: str | None = CLI_OPT_IN
) -> CheckpointFile:
    """Read ``path`` as one of the accepted formats (``ACCEPTED``); ``what``, ``trusted`` and ``opt_in`` as
    for ``load_torch_file``."""
    path = Path(path)
    if not path.is_file():
        raise ShiftProbeError(f"{what}={str(path)!r}: no such file; use {ACCEPTED}")
    obj = load_torch_file(path, what, trusted=trusted, opt_in=opt_in)
    if isinstance(obj, nn.Module):
        weights = {k: v.detach() for k, v in obj.state_dict().items()}
        return CheckpointFile(path, "module", weights, module=obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping) and "pytorch-lightning_version" in obj:
        state = obj["state_dict"]
        initial = obj.get(INITIAL_STATE_KEY)
        net = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        weights = net or strip_prefix(state)
        return CheckpointFile(
            path, "lightning", weights, initial=dict(initial) if _is_state_dict(initial) else None, checkpoint=dict(obj)
        )
    if _is_state_dict(obj):
        return CheckpointFile(path, "state_dict", strip_prefix(obj))
    if isinstance(obj, Mapping):
        for key in NESTED_STATE_KEYS:
            if _is_state_dict(obj.get(key)):
                return CheckpointFile(path, "state_dict", strip_prefix(obj[key]))
        keys = ", ".join(map(repr, list(obj)[:6])) or "none"
        raise ShiftProbeError(
            f"{what}={str(path)!r} holds a dict without network weights (keys: {keys}); use {ACCEPTED}"
        )
    raise ShiftProbeError(f"{what}={str(path)!r} holds a {type(obj).__name__}, not network weights; use {ACCEPTED}")


def load_network(
    path: str | Path, model: nn.Module | None = None, *, initial: bool = False, trusted: bool = False
) -> nn.Module:
    """A network with the weights of the checkpoint at ``path`` (a ``.ckpt`` written by ``train.py``, a plain
    ``state_dict`` or, with ``trusted=True``, a whole saved module: unpickling it **runs code stored in it**).

    ``model`` (changed in place and returned) defaults to the model the ``.ckpt`` records (one of the
    project's, built from plain settings only), else the lab CNN; a whole saved module is used as it is.
    ``initial=True``: the initial weights a ``train.py`` checkpoint records (e.g. ``measure(untrained=)``).

    Examples
    --------
    >>> import torch, tempfile, os, shiftprobe
    >>> path = os.path.join(tempfile.mkdtemp(), "lab_net.pt")
    >>> torch.save(shiftprobe.LabCNN().state_dict(), path)
    >>> type(shiftprobe.load_network(path)).__name__
    'LabCNN'
    """
    source = read_checkpoint(path, what="path", trusted=trusted, opt_in="load_network(path, trusted=True)")
    weights = source.weights
    if initial:
        if source.initial is None:
            raise ShiftProbeError(f"path={str(path)!r} records no initial weights (only train.py checkpoints do)")
        weights = source.initial
    if model is None:
        if source.module is not None and not initial:
            return source.module
        model = source.module if source.module is not None else _recorded_model(source)
    problems = fit_problems(weights, model.state_dict())
    if problems:
        raise ShiftProbeError(
            f"path={str(path)!r} does not fit {type(model).__name__}: {problems}; "
            f"pass the network it was saved from as model="
        )
    model.load_state_dict(weights)
    return model


def _recorded_model(source: CheckpointFile) -> nn.Module:
    """The model the checkpoint's settings name, built only after ``checked_model_config``; else the lab CNN."""
    config = recorded_config(source.checkpoint or {}) or {}
    model_cfg = config.get("model") if isinstance(config, Mapping) else None
    if isinstance(model_cfg, Mapping) and "_target_" in model_cfg:
        where = f"path={str(source.path)!r}"
        cls, kwargs = checked_model_config(without_weight_source(model_cfg), where)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ShiftProbeError(
                f"{where} records model settings {cls.__name__} does not take ({err}); pass the network as model="
            ) from None
    from shiftprobe.models import LabCNN

    return LabCNN()


def fit_problems(stored: Mapping, current: Mapping) -> str | None:
    """The first three differences between weights read from a file and a model's, as one phrase (None: they
    fit): other shapes, then keys the file lacks, then keys the model lacks."""
    parts = [f"{k} is {list(stored[k].shape)} in the file but {list(v.shape)} in the model"
             for k, v in current.items() if k in stored and tuple(stored[k].shape) != tuple(v.shape)]
    parts += [f"{k} is missing from the file" for k in current if k not in stored]
    parts += [f"{k} is in the file but not in the model" for k in stored if k not in current]
    if not parts:
        return None
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + more
