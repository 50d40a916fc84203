"""The Lie derivative of each layer (Gruver et al. 2022): its local error of equivariance or invariance.

For a one-parameter transformation ``T_t`` of images (``T_0`` the identity; the generators, their flow
fields and units: :mod:`shiftprobe.probe.generators`) and a probe point ``f``:

* a **spatial** layer (a ``C x h x w`` map of cumulative stride ``r``, as inferred by
  :func:`~shiftprobe.probe.geometry.infer_geometry`) is scored for equivariance:
  ``L f(x) = d/dt [T'_{-t} f(T_t x)]`` at ``t = 0``, where ``T'`` moves the map as ``T`` moves the
  image (the image's flow in map coordinates: a translation by ``t`` pixels moves the map by ``t / r``
  positions; a linear flow keeps its matrix when the strides are equal, about the map centre). By the
  chain rule ``L f(x) = J_f(x) . D(x) - D'(f(x))``, ``D`` and ``D'`` the derivatives of the
  transformation of the image and of the map. A map whose stride is unknown gets ``None``, with a note
  in ``geometry``;
* a **vector** layer is scored for invariance: ``L f(x) = d/dt f(T_t x) = J_f(x) . D(x)``; so is every
  layer under ``saturate`` (a colour change does not move a map).

``J_f(x) . v`` is computed exactly, by forward-mode differentiation (``torch.autograd.forward_ad``)
through the network, one pass per batch for all generators. No parameter gradient is built. The same
method (bilinear or Fourier) and the same definition act on the maps, so the two terms are consistent.

``layerwise=True`` adds the layer-wise decomposition of the output's Lie derivative: each module's own
Lie derivative and its contribution to the output's (:mod:`shiftprobe.probe.lie_batch`).

The norm (one definition, used everywhere)
------------------------------------------
For image ``i``, with ``d_i = L f(x_i)`` (or a contribution to the output's) and ``a_i = f(x_i)`` (the
output, for a contribution) over the ``n`` elements::

    abs_i = sqrt(mean(d_i ** 2))           # RMS of the derivative
    rel_i = abs_i / sqrt(mean(a_i ** 2))   # relative to the RMS of the activation (undefined if 0)

``abs`` and ``rel`` are the means of ``abs_i`` and ``rel_i`` over the images, ``abs_se`` and ``rel_se``
their standard errors (``std / sqrt(N)``, ``None`` with fewer than 2 images). Units: those of ``t``
(per input pixel for the translations, per radian for ``rotate``, ...). ``0`` means the layer is
exactly equivariant (maps) or invariant (vectors) to first order. lie-deriv's numbers, from ours:
docs/measurement.md ("The Lie derivative").
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import exact_float32, model_device, model_dtype
from shiftprobe.probe.generators import (
    DEFAULT_GENERATORS,
    GENERATORS,
    METHODS,
    check_channels,
    check_generators,
    check_method,
)
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.inputs import check_forward, check_inputs, eval_mode, nonfinite_message, to_pixels
from shiftprobe.probe.lie_batch import Norms, layer_values, layerwise_values, plan_layerwise
from shiftprobe.probe.metrics import sum_dtype

__all__ = ["DEFAULT_GENERATORS", "GENERATORS", "METHODS", "NORM", "lie_derivative"]

NORM = (
    "per image: RMS over the layer's elements of the derivative (abs), divided by the RMS of the "
    "layer's activation f(x) (rel); then mean and standard error over images"
)
LAYERWISE_KEYS = ("layerwise", "layerwise_between", "layerwise_total", "layerwise_ranking", "layerwise_notes")
#: top-level keys of the result (a layer may not be named like one)
RESERVED_KEYS = (
    "n_images",
    "norm",
    "units",
    "flows",
    "method",
    "generators",
    "layers",
    "geometry",
    "seconds",
    *LAYERWISE_KEYS,
)


# -- what each probe point measures -----------------------------------------------------------------
def layer_actions(
    geometry: dict[str, LayerGeometry], generators: Sequence[str]
) -> tuple[dict[tuple[str, str], tuple[int, int] | None], dict[str, list[str]]]:
    """Per (layer, generator): the map's stride (equivariance: the map is moved back) or None
    (invariance: a vector, or any layer under a colour generator); a spatial layer without a stride is
    left out, with a note per layer."""
    actions: dict[tuple[str, str], tuple[int, int] | None] = {}
    notes: dict[str, list[str]] = defaultdict(list)
    for name, geo in geometry.items():
        for g in generators:
            if not geo.spatial or GENERATORS[g].colour:
                actions[name, g] = None
            elif geo.stride is None:
                why = geo.note or "not inferred"
                notes[name].append(
                    f"{g}: the map's stride is unknown ({why}): no equivariance Lie derivative"
                )
            else:
                actions[name, g] = geo.stride
    return actions, notes


def _mean_se(values: torch.Tensor) -> tuple[float | None, float | None]:
    values = values[~torch.isnan(values)]
    n = len(values)
    if n == 0:
        return None, None
    mean = float(values.mean())
    se = float(values.std(unbiased=True) / n**0.5) if n >= 2 else None
    return mean, se


def summarise(batches: list[Norms]) -> dict:
    """``{"rel", "rel_se", "abs", "abs_se"}``: means and standard errors of the per-image values."""
    rel, rel_se = _mean_se(torch.cat([b["rel"] for b in batches]).cpu())
    ab, ab_se = _mean_se(torch.cat([b["abs"] for b in batches]).cpu())
    return {"rel": rel, "rel_se": rel_se, "abs": ab, "abs_se": ab_se}


def _check_args(generators, method, batch_size, layerwise) -> tuple[tuple[str, ...], str]:
    generators = check_generators(generators)
    method = check_method(method, generators)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: use a number of images >= 1")
    if not isinstance(layerwise, bool):
        raise TypeError(f"layerwise={layerwise!r}: use True or False")
    return generators, method


def _check_images(images: torch.Tensor, generators) -> None:
    if len(images) < 1:
        raise ValueError("images is empty: give at least one image")
    if min(images.shape[-2:]) < 2:
        raise ValueError(
            f"images of {tuple(images.shape[-2:])} pixels cannot be transformed: use at least 2x2"
        )
    check_channels(generators, images.shape[1])


def lie_derivative(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    generators: Sequence[str] = DEFAULT_GENERATORS,
    *,
    method: str = "bilinear",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
    layerwise: bool = False,
    layerwise_modules: Sequence[str] | None = None,
    normalization=None,
    output_key: str | int | None = None,
) -> dict:
    """The Lie derivative of each probe point of ``model``, per generator (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Any network whose forward takes ``(N, C, H, W)`` (it may return a tuple). It runs in eval mode
        (a model in train mode is announced once; its mode is restored afterwards) in its own parameter dtype.
    images : torch.Tensor
        ``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float in [0, 1] (or normalised, with ``normalization``:
        the generators then act on the pixels, and the model is given ``(pixels - mean) / std``).
    layers : list of str, optional
        Probe points, named as in :func:`shiftprobe.measure` (module names, aliases, ``"output"``).
    generators : sequence of str
        Any of ``translate_x``, ``translate_y`` (per input pixel), ``rotate`` (per radian), ``scale``,
        ``shear``, ``stretch``, ``hyperbolic_rotate`` and ``saturate`` (RGB images only); default the
        first three. Definitions: :mod:`shiftprobe.probe.generators`.
    method : str
        ``"bilinear"`` (images zero-filled, maps edge-filled) or ``"fourier"`` (phase ramp, circular;
        translations only).
    batch_size : int
        Images per forward pass (each pass carries ``batch_size x len(generators)`` inputs).
    device : str or torch.device, optional
        Where the images go; default: where the model's parameters are.
    layerwise : bool
        Also decompose the output's Lie derivative into the contributions of modules
        (:mod:`shiftprobe.probe.lie_batch`): per generator and batch, one forward pass per module.
    layerwise_modules : list of str, optional
        The modules of the decomposition (names from ``model.named_modules()``, none inside another);
        default every leaf module but dropout and identity that runs once per forward.
    normalization, output_key
        As in :func:`shiftprobe.measure`.

    Returns
    -------
    dict
        ``{layer: {generator: {"rel", "rel_se", "abs", "abs_se"} or None}, "n_images": N, "norm": ...,
        "units": {generator: ...}, "flows", "method", "generators", "layers", "geometry": {layer: {"kind",
        "measures", "stride", "note"}}, "seconds"}``; with ``layerwise``: ``"layerwise": {module:
        {generator: {"contribution": {...}, "own": {...} or None}}}``, ``"layerwise_between": {"a → b":
        {generator: {"contribution": {...}}}}``, ``"layerwise_total": {generator: {"end_to_end",
        "modules", "between", "unexplained"}}``, ``"layerwise_ranking": {generator: [names, largest
        contribution first]}`` and ``"layerwise_notes"``.

    Examples
    --------
    >>> import torch, shiftprobe
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))
    >>> out = shiftprobe.lie_derivative(net, torch.rand(4, 1, 16, 16), layers=["0"],
    ...                                 generators=["translate_x"], method="fourier")
    >>> out["0"]["translate_x"]["rel"] < 1e-5  # a stride-1 circular convolution is equivariant
    True
    """
    generators, method = _check_args(generators, method, batch_size, layerwise)
    images, _, feed = check_inputs(model, images, normalization=normalization, output_key=output_key)
    _check_images(images, generators)
    resolved = resolve_layers(model, layers)
    for layer in resolved:
        if layer.name in RESERVED_KEYS:
            raise ValueError(
                f"a layer named {layer.name!r} would clash with the result's key; use a module alias"
            )
    start = time.perf_counter()
    device = torch.device(device) if device is not None else model_device(model)
    dtype = model_dtype(model)
    with eval_mode(model), exact_float32(), torch.inference_mode(False):
        check_forward(model, resolved, images, feed, device, dtype)
        geometry = infer_geometry(model, resolved, tuple(images.shape[1:]), device=device, feed=feed)
        actions, notes = layer_actions(geometry, generators)
        plan = None
        if layerwise or layerwise_modules is not None:
            plan = plan_layerwise(model, to_pixels(images[:2].to(device), dtype), layerwise_modules, feed)
        run = (images, generators, method, batch_size, device, dtype, progress)
        values, parts = _measure(model, resolved, actions, plan, feed, *run)
    out = _layer_results(resolved, geometry, generators, values, notes)
    if plan is not None:
        out.update(_layerwise_results(plan, generators, parts))
    out.update(
        n_images=len(images),
        norm=NORM,
        units={g: GENERATORS[g].unit for g in generators},
        flows={g: GENERATORS[g].flow for g in generators},
        method=method,
        generators=list(generators),
        layers=[layer.name for layer in resolved],
        seconds=time.perf_counter() - start,
    )
    return out


def _measure(model, resolved, actions, plan, feed, images, generators, method, batch_size, device, dtype, progress):
    """The per-image values of every batch: ``{(layer, generator): [Norms, ...]}`` and the layer-wise
    parts (``{key: [Norms, ...]}``, empty without a plan)."""
    values: dict = defaultdict(list)
    parts: dict = defaultdict(list)
    acc = sum_dtype(device)
    batches = torch.split(torch.arange(len(images)), batch_size)
    with LayerCapture(model, resolved, feed=feed) as cap:
        for idx in tqdm(batches, desc="Lie derivative", disable=not progress, unit="batch", leave=False):
            x = to_pixels(images[idx].to(device), dtype).clone()
            for key, v in layer_values(cap, x, actions, generators, method, acc).items():
                values[key].append(v)
            if plan is not None:
                for key, v in layerwise_values(model, x, plan, generators, method, acc, feed).items():
                    parts[key].append(v)
    return values, parts


def _layer_results(resolved, geometry, generators, values, notes) -> dict:
    out: dict = {}
    geo_out = {}
    for layer in resolved:
        geo = geometry[layer.name]
        for g in generators:
            batches = values.get((layer.name, g), [])
            if not all(bool(torch.isfinite(b["abs"]).all()) for b in batches):  # NaN would vanish from the mean
                raise ValueError(nonfinite_message([layer.name], f" under {g}"))
        out[layer.name] = {
            g: summarise(values[layer.name, g]) if (layer.name, g) in values else None for g in generators
        }
        geo_out[layer.name] = {
            "kind": geo.kind,
            "measures": "equivariance" if geo.spatial else "invariance",
            "stride": list(geo.stride) if geo.stride is not None else None,
            "note": "; ".join(notes.get(layer.name, [])) or None,
        }
    out["geometry"] = geo_out
    return out


def _layerwise_results(plan, generators, parts: dict) -> dict:
    """The ``layerwise*`` keys of the result from the per-image parts (see :func:`lie_derivative`)."""
    modules = {
        step.name: {
            g: {
                "contribution": summarise(parts["module", step.name, g, "contribution"]),
                "own": summarise(parts["module", step.name, g, "own"])
                if ("module", step.name, g, "own") in parts
                else None,
            }
            for g in generators
        }
        for step in plan.steps
    }
    labels = list(dict.fromkeys(label for section, label, _, _ in parts if section == "between"))
    between = {
        label: {
            g: {"contribution": summarise(parts["between", label, g, "contribution"])} for g in generators
        }
        for label in labels
    }
    total = {
        g: {
            part: summarise(parts["total", part, g, "value"])
            for part in ("end_to_end", "modules", "between", "unexplained")
        }
        for g in generators
    }
    ranking = {}
    for g in generators:
        scored = [(name, entry[g]["contribution"]["rel"]) for name, entry in {**modules, **between}.items()]
        ranking[g] = [
            name for name, rel in sorted(scored, key=lambda s: -(s[1] if s[1] is not None else -1.0))
        ]
    return {
        "layerwise": modules,
        "layerwise_between": between,
        "layerwise_total": total,
        "layerwise_ranking": ranking,
        "layerwise_notes": list(plan.notes),
    }
