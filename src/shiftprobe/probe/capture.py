"""Probe points of any ``nn.Module`` by forward hooks: module names, aliases (``model.layer_aliases``),
``"output"`` (``select_output``), and one call of a module that runs several times (``"conv#2"``; a plain
``"conv"`` is then refused). ``Feed`` gives the model its input (a declared normalisation) and reads its output."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

OUTPUT = "output"
#: module types left out of the default probe points (they add nothing a neighbour does not show)
_SKIPPED_BY_DEFAULT = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Flatten, nn.Identity, nn.Softmax, nn.LogSoftmax)


#: separates a module's name from the number of its call (``"conv#2"``)
CALL_MARK = "#"


@dataclass(frozen=True)
class Layer:
    """A probe point: ``name`` as shown in results, ``module`` its path in ``named_modules()`` or ``"output"``,
    ``call`` which call of the module in one forward pass (1 = the first; None = its only call)."""

    name: str
    module: str
    call: int | None = None


def call_names(name: str, n_calls: int) -> str:
    """``'conv#1', 'conv#2', ...``: the names of the ``n_calls`` calls of the probe point ``name``."""
    return ", ".join(repr(f"{name}{CALL_MARK}{k}") for k in range(1, n_calls + 1))


def default_layers(model: nn.Module) -> list[str]:
    """The model's ``default_probe_layers`` if it declares them, else its top-level children (without
    activations, dropout, flatten) and ``"output"``."""
    declared = getattr(model, "default_probe_layers", None)
    if declared:
        return list(declared)
    names = [n for n, m in model.named_children() if not isinstance(m, _SKIPPED_BY_DEFAULT)]
    return names + [OUTPUT]


def _split_call(name: str, modules: Mapping, aliases: Mapping) -> tuple[str, int | None]:
    """``"conv#2"`` -> ``("conv", 2)``; a name that is itself a module or an alias has no call number."""
    base, mark, number = name.rpartition(CALL_MARK)
    if not mark or name in modules or name in aliases:
        return name, None
    if not number.isdigit() or int(number) < 1:
        raise ValueError(
            f"layer {name!r}: the call number after {CALL_MARK!r} must be 1, 2, ... (e.g. {base + CALL_MARK + '2'!r})"
        )
    if base == OUTPUT:
        raise ValueError(f"layer {name!r}: the model's output is read once per forward pass; use 'output'")
    return base, int(number)


def resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> list[Layer]:
    """Check the requested names against the model and return them as ``Layer``s (order kept)."""
    if isinstance(layers, str):
        raise ValueError(f"layers={layers!r}: give a list of names, e.g. layers=[{layers!r}]")
    names = default_layers(model) if layers is None else list(layers)
    odd = [name for name in names if not isinstance(name, str)]
    if odd:
        raise ValueError(f"layers={names!r}: give each name as a string, e.g. {str(odd[0])!r}")
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
        base, call = _split_call(name, modules, aliases)
        path = aliases.get(base, base)
        if path not in modules or path == "":
            known = [n for n in modules if n][:30]
            raise ValueError(
                f"layer {name!r} is not a module of {type(model).__name__}; use names from "
                f"model.named_modules(), e.g. {known}, an alias {sorted(aliases)}, or 'output'"
            )
        shown = reverse.get(path, base)
        out.append(Layer(shown if call is None else f"{shown}{CALL_MARK}{call}", path, call))
    seen = set()
    for layer in out:
        if layer.name in seen:
            raise ValueError(f"layer {layer.name!r} is listed twice; list each probe point once")
        seen.add(layer.name)
    return out


class _Stop(Exception):
    """Raised from a hook to end a forward pass once every wanted output is captured."""


def first_tensor(value):
    """The first tensor of a module output (a tensor, or tuples, lists and dicts of them, depth first);
    ``None`` and other non-tensor entries are skipped (e.g. an attention module's ``(out, None)``)."""
    found = _find_tensor(value)
    if found is None:
        raise TypeError(f"cannot read a tensor from a module output of type {type(value).__name__}")
    return found


def _find_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = _find_tensor(item)
        if found is not None:
            return found
    return None


def _named_entries(output) -> dict | None:
    """The entries of a dict or named tuple output by name; None for anything else."""
    if isinstance(output, Mapping):
        return dict(output)
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return dict(zip(output._fields, output, strict=True))
    return None


def _tensor_keys(entries: Mapping | None) -> list:
    return [key for key, value in (entries or {}).items() if isinstance(value, torch.Tensor)]


def layer_tensor(name: str, output) -> torch.Tensor:
    """A probe point's tensor: its module's output, of a tuple or list the first tensor; a dict or named tuple
    must hold one tensor (several: a ValueError listing them, as there is no ``output_key`` for a layer)."""
    tensors = _tensor_keys(_named_entries(output))
    if len(tensors) > 1:
        raise ValueError(f"layer {name!r} returns a {type(output).__name__} with several tensors {tensors}: probe "
                         "the submodule that computes the one to measure")
    return first_tensor(output)


def select_output(output, output_key: str | int | None = None) -> torch.Tensor:
    """The model's output as the one tensor measured (probe point ``"output"``): a tensor itself; of a dict
    or named tuple the entry ``output_key``, or else its one tensor (``None`` entries skipped; several
    tensors: a ValueError listing them); of a tuple or list the entry ``output_key``, else its first."""
    entries = _named_entries(output)
    if output_key is not None:
        return first_tensor(_pick(output, entries, output_key))
    if entries is not None:
        tensors = _tensor_keys(entries)
        if len(tensors) > 1:
            example = "logits" if "logits" in tensors else tensors[0]
            raise ValueError(
                f"the model returns a {type(output).__name__} with several tensors {tensors}: say which one to "
                f"measure with output_key= (e.g. output_key={example!r})"
            )
        if tensors:
            return entries[tensors[0]]
    return first_tensor(output)


def _pick(output, entries: dict | None, key):
    """The entry ``key`` of the model's output (see ``select_output``), or a ValueError naming the choices."""
    if entries is not None and isinstance(key, str):
        if key not in entries:
            raise ValueError(f"output_key={key!r} is not in the model's output; its keys are {list(entries)}")
        return entries[key]
    if isinstance(output, (tuple, list)) and isinstance(key, int):
        if not -len(output) <= key < len(output):
            raise ValueError(f"output_key={key}: the model returns {len(output)} outputs; use 0 to {len(output) - 1}")
        return output[key]
    kind = f"a dict or named tuple with keys {list(entries)}" if entries is not None else f"a {type(output).__name__}"
    raise ValueError(
        f"output_key={key!r} does not apply: the model returns {kind}; use a key of a dict or named tuple, "
        "a position (int) in a tuple, or output_key=None"
    )


@dataclass(frozen=True)
class Feed:
    """How the probe feeds the model and reads its output: ``mean``, ``std`` (``(C, 1, 1)``, or None)
    normalise the pixels just before the forward pass, so every transformation acts on pixels;
    ``output_key``: which entry of the model's output is ``"output"`` (``select_output``)."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    output_key: str | int | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the model is given for ``pixels`` (``N x C x H x W`` in [0, 1])."""
        if self.mean is None:
            return pixels
        key = (pixels.device, pixels.dtype)
        if key not in self._cache:  # one copy per device and dtype (no host-device copy per batch)
            with torch.inference_mode(False):  # usable by autograd later (geometry inference, the Lie derivative)
                self._cache[key] = (self.mean.to(pixels.device, pixels.dtype), self.std.to(pixels.device, pixels.dtype))
        mean, std = self._cache[key]
        return (pixels - mean) / std

    def model_output(self, output) -> torch.Tensor:
        return select_output(output, self.output_key)


class LayerCapture:
    """Forward hooks on the probe modules (removed on exit of the context); ``run(x)`` returns ``{layer name:
    output}``, recorded only inside ``run``. A ``Layer`` with ``call=k`` records its module's ``k``-th call in
    the pass; ``run`` refuses a module without a call number that ran more than once. ``stop_early``: end the
    forward once every probe point is captured, unless ``"output"`` is one (for inputs later layers cannot take)."""

    def __init__(self, model: nn.Module, layers: Sequence[Layer], stop_early: bool = False, feed: Feed | None = None):
        self.model, self.layers = model, list(layers)
        self.stop_early = stop_early and all(layer.module != OUTPUT for layer in self.layers)
        self.feed = feed if feed is not None else Feed()
        self._local = threading.local()  # each thread (the engine runs batches in parallel) has its own store
        self._handles = []
        self._wanted = {layer.name for layer in self.layers if layer.module != OUTPUT}
        by_module: dict[str, list[Layer]] = {}
        for layer in self.layers:
            if layer.module != OUTPUT:
                by_module.setdefault(layer.module, []).append(layer)
        modules = dict(model.named_modules())
        for path, group in by_module.items():
            self._handles.append(modules[path].register_forward_hook(self._hook(path, group)))

    def _hook(self, path: str, group: list[Layer]):
        def hook(module, inputs, output):
            store = getattr(self._local, "store", None)
            if store is None:
                return None
            calls = self._local.calls
            calls[path] = k = calls.get(path, 0) + 1
            for layer in group:
                if (layer.call or 1) == k:  # a copy: a later in-place module (ReLU(inplace=True)) changes the output
                    store[layer.name] = layer_tensor(layer.name, output).clone()
            if self.stop_early and len(store) == len(self._wanted):
                raise _Stop
            return None

        return hook

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The probe points of the model's forward pass on ``x`` (pixels, given to the model through ``feed``)."""
        self._local.store, self._local.calls = {}, {}
        try:
            try:
                output = self.model(self.feed.model_input(x))
            except _Stop:
                output = None
            out, calls = dict(self._local.store), dict(self._local.calls)
        finally:
            self._local.store = self._local.calls = None
        self._check_calls(calls, complete=output is not None)
        if output is not None:
            out[OUTPUT] = self.feed.model_output(output)
        return out

    def _check_calls(self, calls: dict[str, int], complete: bool) -> None:
        """One line for a probe point whose module ran more often than its name allows, or not at all."""
        for layer in self.layers:
            if layer.module == OUTPUT:
                continue
            n = calls.get(layer.module, 0)
            if layer.call is None and n > 1:
                raise ValueError(
                    f"layer {layer.name!r} runs {n} times in one forward pass (shared weights or a loop), so "
                    f"the name is ambiguous: probe one call at a time, e.g. layers=[{call_names(layer.name, n)}]"
                )
            if not complete:
                continue
            if n == 0:
                raise ValueError(f"layer {layer.name!r} ({layer.module}) did not run in the model's forward pass")
            if layer.call is not None and n < layer.call:
                base = layer.name.rpartition(CALL_MARK)[0]
                raise ValueError(
                    f"layer {layer.name!r}: {layer.module} runs {n} time(s) in one forward pass; use {call_names(base, n)}"
                )

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
