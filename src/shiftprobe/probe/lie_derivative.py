"""The Lie derivative of each layer (Gruver et al. 2022): its local error of equivariance or invariance.

For a one-parameter transformation ``T_t`` of images (``T_0`` the identity) and a probe point ``f``:

* a **spatial** layer (a ``C x h x w`` map of cumulative stride ``r``) is scored for equivariance:
  ``L f(x) = d/dt [T'_{-t} f(T_t x)]`` at ``t = 0``, where ``T'`` moves the map as ``T`` moves the
  image: a translation by ``t`` pixels moves the map by ``t / r`` map positions (``r`` per axis, as
  inferred by :func:`~shiftprobe.probe.geometry.infer_geometry`); a rotation by ``t`` about the image
  centre rotates the map by the same angle about the map centre. By the chain rule
  ``L f(x) = J_f(x) . (d/dt T_t x) - (d/ds T'_s f(x))`` at ``0`` (the second term divided by ``r`` for a
  translation). A map whose stride is unknown (or not square, for ``rotate``) gets ``None``, with a
  note in ``geometry``;
* a **vector** layer is scored for invariance: ``L f(x) = d/dt f(T_t x) = J_f(x) . (d/dt T_t x)``.

``J_f(x) . v`` is computed exactly, by forward-mode differentiation (``torch.autograd.forward_ad``)
through the network, one pass per batch for all generators. No parameter gradient is built.

Generators (``t = 0`` is the identity; ``T_t x (p) = x(s_t(p))``, output pixel ``p`` reads the input at
``s_t(p)``):

* ``translate_x``: content moves right by ``t`` pixels, ``s_t(y, x) = (y, x - t)``;
* ``translate_y``: content moves down by ``t`` pixels, ``s_t(y, x) = (y - t, x)``;
* ``rotate``: content turns counter-clockwise (as displayed, the sense of ``torch.rot90(x, 1, (-2, -1))``)
  by ``t`` radians about the centre ``c = ((H - 1) / 2, (W - 1) / 2)``.

Methods (how ``T_t`` is defined between pixels):

* ``"bilinear"``: bilinear interpolation (``grid_sample``, ``align_corners=True``), images with zero
  fill outside (``padding_mode="zeros"``: the background), maps with their edge value
  (``padding_mode="border"``: a conv map's background is its bias, not 0, so zero fill would score an
  exactly equivariant layer as non-zero at the map's edge). Bilinear interpolation has a kink at the
  pixel grid, so ``t -> T_t x`` has two one-sided derivatives at ``t = 0``; the derivative used is their
  mean (the symmetric derivative, which a central finite difference converges to). In closed form it
  is ``(d s_t / dt) . grad x``, with the sampling velocity ``d s_t / dt`` from forward-mode
  differentiation of ``s_t`` and ``grad`` the central difference ``(x[j + 1] - x[j - 1]) / 2`` (with
  the fill outside).
* ``"fourier"``: a phase ramp in the DFT (circular; an integer shift is ``torch.roll``); the real part
  is kept. Translations only: a rotation is not a phase ramp.

The same method and the same definition act on the maps, so the two terms are consistent.

The norm (one definition, used everywhere)
------------------------------------------
For image ``i``, with ``d_i = L f(x_i)`` and ``a_i = f(x_i)`` over the layer's ``n`` elements::

    abs_i = sqrt(mean(d_i ** 2))           # RMS of the derivative
    rel_i = abs_i / sqrt(mean(a_i ** 2))   # relative to the RMS of the activation (undefined if 0)

``abs`` and ``rel`` are the means of ``abs_i`` and ``rel_i`` over the images, ``abs_se`` and ``rel_se``
their standard errors (``std / sqrt(N)``, ``None`` with fewer than 2 images). Units: per input pixel for
the translations, per radian for ``rotate`` (``rel`` is otherwise unitless). ``0`` means the layer is
exactly equivariant (maps) or invariant (vectors) to first order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.autograd.forward_ad as fwad
from torch import nn
from tqdm.auto import tqdm

from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import exact_float32, model_device, model_dtype
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.inputs import check_forward, check_inputs, eval_mode, nonfinite_message, to_pixels
from shiftprobe.probe.metrics import sum_dtype

GENERATORS = ("translate_x", "translate_y", "rotate")
METHODS = ("bilinear", "fourier")
#: the generators a Fourier phase ramp can express, with the axis they move (-1: x, -2: y)
FOURIER_AXIS = {"translate_x": -1, "translate_y": -2}
UNITS = {"translate_x": "per input pixel", "translate_y": "per input pixel", "rotate": "per radian"}
NORM = (
    "per image: RMS over the layer's elements of the derivative (abs), divided by the RMS of the "
    "layer's activation f(x) (rel); then mean and standard error over images"
)
#: top-level keys of the result (a layer may not be named like one)
RESERVED_KEYS = ("n_images", "norm", "units", "method", "generators", "layers", "geometry", "seconds")


def check_generators(generators: Sequence[str] | str) -> tuple[str, ...]:
    """The requested generators as a tuple; a ValueError names an unknown one and the valid choices."""
    if isinstance(generators, str):
        generators = (generators,)
    out = tuple(generators)
    if not out:
        raise ValueError(f"generators=() measures nothing: give at least one of {list(GENERATORS)}")
    for g in out:
        if g not in GENERATORS:
            raise ValueError(f"generator {g!r} is not known; use one of {list(GENERATORS)}")
    if len(set(out)) != len(out):
        raise ValueError(f"generators={list(out)} lists one twice; list each of {list(GENERATORS)} once")
    return out


def check_method(method: str, generators: Sequence[str]) -> str:
    """A ValueError for an unknown method, or for ``rotate`` with ``"fourier"`` (saying what to use)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {list(METHODS)}")
    if method == "fourier":
        bad = [g for g in generators if g not in FOURIER_AXIS]
        if bad:
            raise ValueError(
                f"method='fourier' is a phase ramp, translations only ({list(FOURIER_AXIS)}); for {bad} use "
                f"method='bilinear', or drop {bad} from generators"
            )
    return method


# -- the transformations --------------------------------------------------------------------------
def sample_coords(generator: str, t: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_t``: where each output pixel ``(y, x)`` of ``T_t x`` reads the input, as two ``h x w`` tensors
    (rows, columns) in pixels; differentiable in the 0-d tensor ``t``."""
    ys = torch.arange(h, dtype=t.dtype, device=t.device).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=t.dtype, device=t.device).view(1, w).expand(h, w)
    if generator == "translate_x":
        return ys + 0 * t, xs - t
    if generator == "translate_y":
        return ys - t, xs + 0 * t
    if generator == "rotate":
        cy, cx = (h - 1) / 2, (w - 1) / 2
        cos, sin = torch.cos(t), torch.sin(t)
        dy, dx = ys - cy, xs - cx
        return cy + dx * sin + dy * cos, cx + dx * cos - dy * sin
    raise ValueError(f"generator {generator!r} is not known; use one of {list(GENERATORS)}")


def fourier_shift(x: torch.Tensor, t: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` moved by ``t`` pixels along ``axis`` (towards higher indices) with a DFT phase ramp
    (circular; the real part is kept); differentiable in ``t``."""
    n = x.shape[axis]
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    freq = torch.fft.fftfreq(n, device=x.device, dtype=work.dtype)
    shape = [1] * x.dim()
    shape[axis] = n
    phase = torch.exp(-2j * torch.pi * freq.view(shape) * t)
    return torch.fft.ifft(torch.fft.fft(work, dim=axis) * phase, dim=axis).real.to(x.dtype)


def _central_difference(x: torch.Tensor, axis: int, fill: str) -> torch.Tensor:
    """``(x[j + 1] - x[j - 1]) / 2`` along ``axis``; outside the map ``0`` (``fill="zeros"``) or the edge
    value (``fill="border"``)."""
    n = x.shape[axis]
    if fill == "zeros":
        before = after = torch.zeros_like(x.narrow(axis, 0, 1))
    else:
        before, after = x.narrow(axis, 0, 1), x.narrow(axis, n - 1, 1)
    padded = torch.cat([before, x, after], dim=axis)
    return (padded.narrow(axis, 2, n) - padded.narrow(axis, 0, n)) / 2


def generator_derivative(x: torch.Tensor, generator: str, method: str = "bilinear", fill: str = "zeros") -> torch.Tensor:
    """``d/dt T_t x`` at ``t = 0`` for a batch of images or maps ``x`` (``... x h x w``), see the module
    docstring (``bilinear``: the symmetric derivative of the interpolation, with ``fill`` outside: ``zeros``
    for images, ``border`` for maps)."""
    # the parameter t in float64 for float64 maps, else float32 (half precision: float32 coordinates)
    t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    zero = torch.zeros((), dtype=t_dtype, device=x.device)
    one = torch.ones((), dtype=t_dtype, device=x.device)
    if method == "fourier":
        axis = FOURIER_AXIS[generator]
        _, tangent = torch.func.jvp(lambda t: fourier_shift(x, t, axis), (zero,), (one,))
        return tangent
    h, w = x.shape[-2:]
    _, (vy, vx) = torch.func.jvp(lambda t: sample_coords(generator, t, h, w), (zero,), (one,))
    return _central_difference(x, -2, fill) * vy.to(x.dtype) + _central_difference(x, -1, fill) * vx.to(x.dtype)


# -- the measurement ------------------------------------------------------------------------------
def _map_scale(geo: LayerGeometry, generator: str) -> tuple[float | None, str | None]:
    """How far the map moves per unit ``t`` of the image's transformation, or (None, why not)."""
    if geo.stride is None:
        return None, f"the map's stride is unknown ({geo.note or 'not inferred'}): no equivariance Lie derivative"
    ry, rx = geo.stride
    if generator == "translate_x":
        return 1.0 / rx, None
    if generator == "translate_y":
        return 1.0 / ry, None
    if ry != rx:
        return None, f"stride {ry}x{rx} is not square: a rotation of the image is no rotation of the map"
    return 1.0, None


def _mean_se(values: torch.Tensor) -> tuple[float | None, float | None]:
    values = values[~torch.isnan(values)]
    n = len(values)
    if n == 0:
        return None, None
    mean = float(values.mean())
    se = float(values.std(unbiased=True) / n**0.5) if n >= 2 else None
    return mean, se


def lie_derivative(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    generators: Sequence[str] = GENERATORS,
    *,
    method: str = "bilinear",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
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
        Any of ``"translate_x"``, ``"translate_y"`` (per input pixel) and ``"rotate"`` (per radian).
    method : str
        ``"bilinear"`` (images zero-filled, maps edge-filled) or ``"fourier"`` (phase ramp, circular;
        translations only).
    batch_size : int
        Images per forward pass (each pass carries ``batch_size x len(generators)`` inputs).
    device : str or torch.device, optional
        Where the images go; default: where the model's parameters are.
    normalization, output_key
        As in :func:`shiftprobe.measure`.

    Returns
    -------
    dict
        ``{layer: {generator: {"rel", "rel_se", "abs", "abs_se"} or None}, "n_images": N, "norm": ...,
        "units": {generator: ...}, "method", "generators", "layers", "geometry": {layer: {"kind",
        "measures", "stride", "note"}}, "seconds"}``.

    Examples
    --------
    >>> import torch, shiftprobe
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))
    >>> out = shiftprobe.lie_derivative(net, torch.rand(4, 1, 16, 16), layers=["0"],
    ...                                 generators=["translate_x"], method="fourier")
    >>> out["0"]["translate_x"]["rel"] < 1e-5  # a stride-1 circular convolution is equivariant
    True
    """
    generators = check_generators(generators)
    method = check_method(method, generators)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: use a number of images >= 1")
    images, _, feed = check_inputs(model, images, normalization=normalization, output_key=output_key)
    n = len(images)
    if n < 1:
        raise ValueError("images is empty: give at least one image")
    if min(images.shape[-2:]) < 2:
        raise ValueError(f"images of {tuple(images.shape[-2:])} pixels cannot be transformed: use at least 2x2")
    resolved = resolve_layers(model, layers)
    for layer in resolved:
        if layer.name in RESERVED_KEYS:
            raise ValueError(f"a layer named {layer.name!r} would clash with the result's key; use a module alias")
    start = time.perf_counter()
    device = torch.device(device) if device is not None else model_device(model)
    dtype = model_dtype(model)
    with eval_mode(model), exact_float32(), torch.inference_mode(False):
        check_forward(model, resolved, images, feed, device, dtype)
        geometry = infer_geometry(model, resolved, tuple(images.shape[1:]), device=device, feed=feed)
        values = _measure(model, images, resolved, geometry, generators, method, batch_size, device, dtype, progress, feed)
    out: dict = {}
    geo_out = {}
    for layer in resolved:
        geo = geometry[layer.name]
        notes = []
        entry = {}
        for g in generators:
            v = values.get((layer.name, g))
            if v is None:
                entry[g] = None
                notes.append(f"{g}: {_map_scale(geo, g)[1]}")
                continue
            abs_values = torch.cat(v["abs"]).cpu()
            if not bool(torch.isfinite(abs_values).all()):  # a NaN here would be dropped from the mean
                raise ValueError(nonfinite_message([layer.name], f" under {g}"))
            rel, rel_se = _mean_se(torch.cat(v["rel"]).cpu())
            ab, ab_se = _mean_se(abs_values)
            entry[g] = {"rel": rel, "rel_se": rel_se, "abs": ab, "abs_se": ab_se}
        out[layer.name] = entry
        geo_out[layer.name] = {
            "kind": geo.kind,
            "measures": "equivariance" if geo.spatial else "invariance",
            "stride": list(geo.stride) if geo.stride is not None else None,
            "note": "; ".join(notes) or None,
        }
    out.update(
        n_images=n,
        norm=NORM,
        units={g: UNITS[g] for g in generators},
        method=method,
        generators=list(generators),
        layers=[layer.name for layer in resolved],
        geometry=geo_out,
        seconds=time.perf_counter() - start,
    )
    return out


def _measure(model, images, resolved, geometry, generators, method, batch_size, device, dtype, progress, feed) -> dict:
    """Per (layer, generator): the per-image ``rel`` and ``abs`` values, batch by batch."""
    names = [layer.name for layer in resolved]
    # per (layer, generator): how far the map moves per unit t (0.0: a vector, scored for invariance;
    # None: not measurable)
    scales = {}
    for name in names:
        for g in generators:
            scales[name, g] = _map_scale(geometry[name], g)[0] if geometry[name].spatial else 0.0
    values = {key: {"rel": [], "abs": []} for key, scale in scales.items() if scale is not None}
    acc = sum_dtype(device)
    n, k = len(images), len(generators)
    batches = torch.split(torch.arange(n), batch_size)
    with LayerCapture(model, resolved, feed=feed) as cap:
        for idx in tqdm(batches, desc="Lie derivative", disable=not progress, unit="batch", leave=False):
            x = to_pixels(images[idx].to(device), dtype).clone()
            b = len(x)
            tangent = torch.cat([generator_derivative(x, g, method) for g in generators])
            with torch.no_grad(), fwad.dual_level():
                feats = cap.run(fwad.make_dual(x.repeat(k, 1, 1, 1), tangent))
                unpacked = {}
                for name in names:
                    primal, dual = fwad.unpack_dual(feats[name])
                    if dual is None:  # the layer does not depend on the input
                        dual = torch.zeros_like(primal)
                    unpacked[name] = (primal[:b].clone(), dual.clone())
            with torch.no_grad():
                for name in names:
                    primal, dual = unpacked[name]
                    size = primal[0].numel()
                    act = primal.reshape(b, -1).to(acc).pow(2).mean(1).sqrt()
                    for j, g in enumerate(generators):
                        scale = scales[name, g]
                        if scale is None:
                            continue
                        d = dual[j * b : (j + 1) * b]
                        if scale:
                            d = d - scale * generator_derivative(primal, g, method, fill="border")
                        rms = d.reshape(b, -1).to(acc).pow(2).sum(1).div(size).sqrt()
                        values[name, g]["abs"].append(rms)  # on the device: one copy per layer at the end
                        values[name, g]["rel"].append(torch.where(act > 0, rms / act, float("nan")))
    return values
