"""Probe points of any ``torch.nn.Module``, captured with forward hooks.

A layer is named as in ``model.named_modules()`` (``"features.3"``), by an alias the model declares
(``model.layer_aliases``, e.g. the lab CNN's ``{"logits": "fc2"}``), or ``"output"``: the model's
output (its first element when the model returns a tuple, e.g. the lab CNN's log-probabilities).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

OUTPUT = "output"
#: module types left out of the default probe points (they add nothing a neighbour does not show)
_SKIPPED_BY_DEFAULT = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Flatten, nn.Identity, nn.Softmax, nn.LogSoftmax)


@dataclass(frozen=True)
class Layer:
    """A probe point: ``name`` as shown in results, ``module`` its path in ``named_modules()`` or ``"output"``."""

    name: str
    module: str


def default_layers(model: nn.Module) -> list[str]:
    """The model's ``default_probe_layers`` if it declares them, else its top-level children (without
    activations, dropout, flatten) and ``"output"``."""
    declared = getattr(model, "default_probe_layers", None)
    if declared:
        return list(declared)
    names = [n for n, m in model.named_children() if not isinstance(m, _SKIPPED_BY_DEFAULT)]
    return names + [OUTPUT]


def resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> list[Layer]:
    """Check the requested names against the model and return them as ``Layer``s (order kept)."""
    names = default_layers(model) if layers is None else list(layers)
    if not names:
        raise ValueError("layers=[] measures nothing: name at least one module, or leave layers=None")
    aliases = dict(getattr(model, "layer_aliases", {}) or {})
    modules = dict(model.named_modules())
    reverse = {module: alias for alias, module in aliases.items()}
    out: list[Layer] = []
    for name in names:
        if name == OUTPUT:
            out.append(Layer(OUTPUT, OUTPUT))
            continue
        path = aliases.get(name, name)
        if path not in modules or path == "":
            known = [n for n in modules if n][:30]
            raise ValueError(
                f"layer {name!r} is not a module of {type(model).__name__}; use names from "
                f"model.named_modules(), e.g. {known}, an alias {sorted(aliases)}, or 'output'"
            )
        out.append(Layer(reverse.get(path, name), path))
    seen = set()
    for layer in out:
        if layer.name in seen:
            raise ValueError(f"layer {layer.name!r} is listed twice; list each probe point once")
        seen.add(layer.name)
    return out


class _Stop(Exception):
    """Raised from a hook to end a forward pass once every wanted output is captured."""


def first_tensor(value):
    """The first tensor of a module output (tensors, tuples/lists of them, or dicts)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return first_tensor(value[0])
    if isinstance(value, dict) and value:
        return first_tensor(next(iter(value.values())))
    raise TypeError(f"cannot read a tensor from a module output of type {type(value).__name__}")


class LayerCapture:
    """Forward hooks on the probe modules; ``run(x)`` returns ``{layer name: output}``.

    The hooks record only inside ``run``, so other forwards of the model (e.g. a fast path that calls
    the same modules on other inputs) leave no trace. Use as a context manager (hooks are removed on exit).

    ``stop_early``: end the forward as soon as every hooked module has fired (for inputs the later
    layers cannot take, e.g. a larger canvas before a fixed-size linear layer). ``"output"`` is then
    not available.
    """

    def __init__(self, model: nn.Module, layers: Sequence[Layer], stop_early: bool = False):
        self.model, self.layers, self.stop_early = model, list(layers), stop_early
        self._local = threading.local()  # each thread (the engine runs batches in parallel) has its own store
        self._handles = []
        self._wanted = {layer.module for layer in self.layers if layer.module != OUTPUT}
        modules = dict(model.named_modules())
        for layer in self.layers:
            if layer.module != OUTPUT:
                self._handles.append(modules[layer.module].register_forward_hook(self._hook(layer.name)))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            store = getattr(self._local, "store", None)
            if store is None:
                return None
            store[name] = first_tensor(output)
            if self.stop_early and len(store) == len(self._wanted):
                raise _Stop
            return None

        return hook

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._local.store = {}
        try:
            try:
                output = self.model(x)
            except _Stop:
                output = None
            out = dict(self._local.store)
        finally:
            self._local.store = None
        if output is not None:
            out[OUTPUT] = first_tensor(output)
        for layer in self.layers:
            if layer.module == OUTPUT and output is not None:
                out[layer.name] = out[OUTPUT]
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
