"""The Lie derivative of each layer (Gruver et al. 2022; docs/measurement.md, "The Lie derivative"), measured
by the engine: ``LieComputer`` gives per image and generator ``abs`` and ``rel`` as the pair values of the
one loop (means, standard errors, DDP, control and untrained network as for any family); ``lie_derivative``
returns them in its own dict."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from shiftprobe.probe.accumulator import MASKED, new_accumulator
from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import PairSource, control_offset, exact_float32, run, setup
from shiftprobe.probe.generators import (
    DEFAULT_GENERATORS,
    GENERATORS,
    check_channels,
    check_generators,
    check_method,
)
from shiftprobe.probe.images import as_images
from shiftprobe.probe.inputs import (
    FIRST_IMAGES,
    check_count,
    check_inputs,
    eval_mode,
    nonfinite_message,
    to_pixels,
)
from shiftprobe.probe.lie_batch import (
    TOTAL_PARTS,
    layer_values,
    layerwise_parts,
    layerwise_values,
    plan_layerwise,
)
from shiftprobe.probe.metrics import pair_metrics, sum_dtype
from shiftprobe.probe.pairs import image_update
from shiftprobe.probe.section import common_fields, group_blocks, group_metrics
from shiftprobe.probe.transform import Plan

NORM = (
    "per image: RMS over the layer's elements of the derivative (abs), divided by the RMS of the "
    "layer's activation f(x) (rel); then mean and standard error over images"
)
#: top-level keys of ``lie_derivative``'s result (a layer may not be named like one)
RESERVED_KEYS = ("n_images", "norm", "units", "flows", "method", "generators", "layers", "geometry", "seconds",
                 "layerwise", "layerwise_between", "layerwise_total", "layerwise_ranking", "layerwise_notes")
LIE_METRICS = ("abs", "rel")
CONTROL_METRICS = ("cos", "dist", "rel")
#: a layer's (or part's) entry per generator
BLOCK_KEYS = ("rel", "rel_se", "abs", "abs_se")


def layer_actions(geometry: dict, generators: Sequence[str]) -> tuple[dict, dict[str, list[str]]]:
    """Per (layer, generator): the map's stride (equivariance: the map is moved back) or None (invariance: a
    vector, or a colour generator); a spatial layer without a stride is left out, with a note."""
    actions, notes = {}, defaultdict(list)
    for name, geo in geometry.items():
        for g in generators:
            if not geo.spatial or GENERATORS[g].colour:
                actions[name, g] = None
            elif geo.stride is None:
                notes[name].append(f"{g}: the map's stride is unknown ({geo.note or 'not inferred'}): no equivariance "
                                   "Lie derivative")
            else:
                actions[name, g] = geo.stride
    return actions, notes


class LieComputer(PairSource):
    """The engine's pair source of the Lie derivative: per image and generator, each layer's ``abs``, ``rel``
    (and, with a layer-wise plan, every part of the decomposition as a pseudo-layer ``(kind, name, part)``)."""

    parallel = False  # forward-mode AD keeps one dual level for the process

    def __init__(self, net, generators: tuple[str, ...], method: str, actions: dict, plan=None):
        self.net, self.generators, self.method, self.actions, self.plan = net, generators, method, actions, plan
        self.capture = LayerCapture(net.model, net.layers, feed=net.feed)
        self.parts = layerwise_parts(plan, generators) if plan is not None else []
        self.metrics = {name: (LIE_METRICS, CONTROL_METRICS) for name in net.names}
        self.metrics.update({part: (LIE_METRICS, ()) for part in self.parts})

    def context(self):
        return torch.inference_mode(False)

    def batch_updates(self, x, y, x_control, idx) -> list[dict]:
        x, acc = x.clone(), sum_dtype(x.device)
        with torch.no_grad():
            base, ctrl = self.capture.run(x), self.capture.run(x_control)
        control = {}
        for name in self.net.names:
            m = pair_metrics(base[name].flatten(1), ctrl[name].flatten(1))
            control.update({(name, k): m[k] for k in CONTROL_METRICS})
        values = layer_values(self.capture, x, self.actions, self.generators, self.method, acc)
        if self.plan is not None:
            for (kind, name, g, part), v in layerwise_values(self.net.model, x, self.plan, self.generators,
                                                              self.method, acc, self.net.feed).items():
                values[(kind, name, part), g] = v
        nan = torch.full((len(x),), float("nan"), dtype=acc, device=x.device)
        pair_values = torch.stack([torch.stack([values[layer, g][metric] if (layer, g) in values else nan
                                                for g in self.generators], dim=1)
                                   for layer, metric in self.image_keys])
        ids = torch.arange(len(self.generators), device=x.device).expand(len(x), -1)
        update = {"shift_ids": ids, "pair_values": pair_values, "no_overlap": {}}
        return [{"control": control, "n_images": len(x)}, update,
                image_update(pair_values, self.membership, self.image_keys, control)]


def lie_section(model: nn.Module, pixels: torch.Tensor, feed, generators, *, layers=None, method: str = "bilinear",
                layerwise: bool = False, layerwise_modules=None, control_seed: int = 0, batch_size: int = 64,
                device=None, rank: int = 0, world_size: int = 1, progress: bool = False, desc: str = "Lie derivative",
                sums: dict | None = None) -> dict:
    """The Lie derivative section of one network (``pixels``: checked images or ``Images``, ``feed``: their
    ``Feed``)."""
    start = time.perf_counter()
    generators = check_generators(generators)
    method = check_method(method, generators)
    images = as_images(pixels)
    check_channels(generators, images.shape[0])
    with eval_mode(model), exact_float32(), torch.inference_mode(False):
        first = images.first(FIRST_IMAGES)
        net = setup(model, first, layers, feed, device=device, seed=control_seed, rank=rank)
        actions, notes = layer_actions(net.geometry, generators)
        plan = None
        if layerwise or layerwise_modules is not None:
            plan = plan_layerwise(model, to_pixels(first[:2].to(net.device), net.dtype), layerwise_modules, feed)
        source = LieComputer(net, generators, method, actions, plan)
        acc = new_accumulator(len(generators), source.metrics, net.device, n_groups=len(generators) + 1,
                              masked=(*MASKED, *LIE_METRICS))
        gplan = Plan.every(generators)
        source.bind(acc, gplan)
        k = control_offset(len(images), control_seed) if len(images) > 1 else 0  # one image: itself
        raw = run(source, acc, images, net, k=k, batch_size=batch_size, rank=rank, world_size=world_size,
                  progress=progress, desc=desc, pairs_per_image=len(generators))
    if sums is not None:
        sums.update(raw=raw,
                    section=lambda r: build_lie_section(r, net, k, gplan, method, actions, notes, plan))
    section = build_lie_section(raw, net, k, gplan, method, actions, notes, plan)
    section["seconds"] = time.perf_counter() - start
    return section


def build_lie_section(raw: dict, net, k: int, gplan: Plan, method: str, actions: dict, notes: dict, plan) -> dict:
    """Raw sums -> the Lie derivative's section (refuses non-finite derivatives, naming layer and generator)."""
    generators = gplan.params
    for name in net.names:
        for j, g in enumerate(generators):
            defined = (name, g) in actions
            if defined and (float(raw["pair", name, "abs_count"][j]) < float(raw["pair_count"][j])
                            or not bool(torch.isfinite(raw["pair", name, "abs"][j]))):
                raise ValueError(nonfinite_message([name], f" under {g}"))
    out = common_fields(raw, net, k)
    groups, summary = group_blocks(raw, gplan, out["layers"], (), out["control"], str)
    for j, block in enumerate(groups["param"]):
        for name in net.names:
            if (name, generators[j]) not in actions:
                block.pop(name, None)
    for name in net.names:
        if any((name, g) not in actions for g in generators):
            summary.pop(name, None)
    section = {
        "family": "lie_derivative", "kind": "lie_derivative", "parameter": "generator", "dims": 1,
        "config": {"generators": list(generators), "method": method, "norm": NORM,
                   "units": {g: GENERATORS[g].unit for g in generators},
                   "flows": {g: GENERATORS[g].flow for g in generators}},
        **out, "groups": groups, "summary": summary, "exact": {}, "fast_path": False,
        "map_action": {name: {"defined": all((name, g) in actions for g in generators),
                              "measures": "equivariance" if net.geometry[name].spatial else "invariance",
                              "note": "; ".join(notes.get(name, [])) or None} for name in net.names},
    }
    if plan is not None:
        section["layerwise"] = _layerwise(raw, plan, generators)
    return section


def _part_block(raw: dict, part, j: int) -> dict | None:
    """``{"rel", "rel_se", "abs", "abs_se"}`` of a layer-wise part under generator ``j`` (None: never defined)."""
    block = group_metrics(raw, torch.tensor([j]), [part], (), {part: {}}, col=j)[part]
    if float(raw["pair", part, "abs_count"][j]) == 0:
        return None
    return {m: block.get(m) for m in BLOCK_KEYS}


def _layerwise(raw: dict, plan, generators) -> dict:
    """The ``layerwise*`` entries: per module, gap and total, each generator's parts (see ``lie_derivative``)."""
    gens = list(enumerate(generators))
    parts = layerwise_parts(plan, generators)
    modules = {step.name: {g: {"contribution": _part_block(raw, ("module", step.name, "contribution"), j),
                               "own": _part_block(raw, ("module", step.name, "own"), j)} for j, g in gens}
               for step in plan.steps}
    between = {label: {g: {"contribution": _part_block(raw, (kind, label, part), j)} for j, g in gens}
               for kind, label, part in parts if kind == "between"}
    total = {g: {part: _part_block(raw, ("total", part, "value"), j) for part in TOTAL_PARTS} for j, g in gens}
    ranking = {}
    for g in generators:
        scored = [(name, (entry[g]["contribution"] or {}).get("rel")) for name, entry in {**modules, **between}.items()]
        ranking[g] = [name for name, rel in sorted(scored, key=lambda s: -(s[1] if s[1] is not None else -1.0))]
    return {"layerwise": modules, "layerwise_between": between, "layerwise_total": total,
            "layerwise_ranking": ranking, "layerwise_notes": list(plan.notes)}


def lie_result(section: dict) -> dict:
    """The Lie derivative section in ``lie_derivative``'s dict shape."""
    config = section["config"]
    blocks = {block["param"]: block for block in section["groups"]["param"]}
    out: dict = {}
    for name in section["layers"]:
        out[name] = {g: ({m: blocks[g][name].get(m) for m in BLOCK_KEYS}
                         if name in blocks[g] else None) for g in config["generators"]}
    out["geometry"] = {name: {"kind": section["geometry"][name]["kind"],
                              "measures": section["map_action"][name]["measures"],
                              "stride": section["geometry"][name]["stride"],
                              "note": section["map_action"][name]["note"]} for name in section["layers"]}
    out.update(section.get("layerwise") or {})
    out.update(n_images=section["n_images"], norm=config["norm"], units=config["units"], flows=config["flows"],
               method=config["method"], generators=list(config["generators"]), layers=list(section["layers"]),
               seconds=section.get("seconds"))
    return out


def lie_derivative(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None,
                   generators: Sequence[str] = DEFAULT_GENERATORS, *, method: str = "bilinear",
                   batch_size: int = 64, device: torch.device | str | None = None, progress: bool = False,
                   layerwise: bool = False, layerwise_modules: Sequence[str] | None = None,
                   normalization=None, output_key: str | int | None = None) -> dict:
    """The Lie derivative of each probe point of ``model``, per generator: ``{layer: {generator: {"rel",
    "rel_se", "abs", "abs_se"} or None}, "n_images", "norm", "units", "flows", "method", "generators",
    "layers", "geometry", "seconds"}`` (with ``layerwise``: the ``layerwise*`` keys too). The arguments as in
    docs/api.md, "The Lie derivative"; ``model``, ``images``, ``layers``, ``device``, ``progress``,
    ``normalization`` and ``output_key`` as in :func:`shiftprobe.measure`; ``batch_size`` images (each
    ``len(generators)`` inputs) per forward pass.

    Examples
    --------
    >>> import torch, shiftprobe
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))
    >>> out = shiftprobe.lie_derivative(net, torch.rand(4, 1, 16, 16), layers=["0"],
    ...                                 generators=["translate_x"], method="fourier")
    >>> out["0"]["translate_x"]["rel"] < 1e-5  # a stride-1 circular convolution is equivariant
    True
    """
    check_count("batch_size", batch_size, "images")
    if not isinstance(layerwise, bool):
        raise TypeError(f"layerwise={layerwise!r}: use True or False")
    pixels, _, feed = check_inputs(model, images, normalization=normalization, output_key=output_key)
    if len(pixels) < 1 or min(pixels.shape[-2:]) < 2:
        raise ValueError(f"images of shape {tuple(pixels.shape)}: give at least one image of at least 2x2 pixels")
    reserved = [layer.name for layer in resolve_layers(model, layers) if layer.name in RESERVED_KEYS]
    if reserved:
        raise ValueError(f"a layer named {reserved[0]!r} would clash with the result's key; use a module alias")
    section = lie_section(model, pixels, feed, generators, layers=layers, method=method, layerwise=layerwise,
                          layerwise_modules=layerwise_modules, batch_size=batch_size, device=device, progress=progress)
    return lie_result(section)
