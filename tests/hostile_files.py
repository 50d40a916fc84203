"""Crafted checkpoint files for the security tests: each would create a marker file if anything ran it.

The payload only opens ``marker`` for writing (creates an empty file), so a test that fails does nothing
worse than leave that file. Two kinds:

- ``pickle_payload``: a pickled object whose ``__reduce__`` calls ``open(marker, "w")`` when unpickled
  (what a ``weights_only=False`` load, an automatic unpickling retry, or Lightning's load with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would run);
- ``config_payload``: plain tensors and values (it passes ``torch.load(weights_only=True)``), but its
  stored settings hold a Hydra config ``torch.load(io.BytesIO(<pickle bytes>), weights_only=False)``,
  which ``hydra.utils.instantiate`` would run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from shiftprobe.models import LabCNN

LIGHTNING_VERSION = "2.6.0"


class Payload:
    """Unpickling this object creates ``marker`` (an empty file)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def instantiated_payload(marker: Path) -> dict:
    """A Hydra config whose instantiation unpickles a ``Payload`` (so creates ``marker``)."""
    return {
        "_target_": "torch.load",
        "f": {"_target_": "io.BytesIO", "_args_": [pickle.dumps(Payload(marker))]},
        "weights_only": False,
    }


def lightning_checkpoint(config: dict | None = None, extra: dict | None = None) -> dict:
    """A checkpoint as train.py writes it (the lab CNN's weights, ``net.`` prefixed), with ``config``."""
    state = {f"net.{k}": v for k, v in LabCNN().state_dict().items()}
    ckpt = {
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "epoch": 0,
        "global_step": 1,
        "state_dict": state,
        "initial_net_state": {k[len("net."):]: v.clone() for k, v in state.items()},
        "hyper_parameters": {"config": config or {}},
    }
    return ckpt | (extra or {})


def lab_model_config(**changes) -> dict:
    return {"_target_": "shiftprobe.models.LabCNN", "pool": "max", "padding": "valid",
            "blur_filter_size": 3, "normalize": False} | changes


def pickle_payload(path: Path, marker: Path, kind: str = "lightning") -> Path:
    """Write a file whose unpickling creates ``marker``: a train.py-like checkpoint (``kind="lightning"``)
    or a plain state_dict (``"state_dict"``) with a ``Payload`` inside."""
    if kind == "lightning":
        obj = lightning_checkpoint({"model": lab_model_config()}, extra={"payload": Payload(marker)})
    else:
        obj = {**LabCNN().state_dict(), "payload": Payload(marker)}
    torch.save(obj, path)
    return path


#: where a config payload may sit in a checkpoint's stored settings (what eval.py / load_network take;
#: before issue 18, eval.py ran the payload at ``model`` and ``callbacks.shift_probe.layers``)
CONFIG_PLACES = ("model", "model.pool", "callbacks.shift_probe.layers", "data.val_size", "transform.rot90",
                 "shift.seed")


def config_payload(path: Path, marker: Path, place: str = "model") -> Path:
    """Write a checkpoint that ``torch.load(weights_only=True)`` reads, whose stored settings hold
    ``instantiated_payload(marker)`` at ``place`` (a dotted key of ``CONFIG_PLACES``)."""
    config = {"seed": 0, "model": lab_model_config(), "shift": {"max_shift": 1, "seed": 0},
              "data": {"val_size": 100}, "callbacks": {"shift_probe": {"max_images": 8, "layers": None}},
              "transform": {"translation": {}}}
    *parents, leaf = place.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[leaf] = instantiated_payload(marker)
    torch.save(lightning_checkpoint(config), path)
    assert isinstance(torch.load(path, weights_only=True), dict)  # the safe load alone lets it through
    return path
