"""``assert_equivariant``: a one-line equivariance test for your own unit tests (in the style of e3nn, escnn),
on the positions the transform's map action certifies, with a tolerance that follows the dtype."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shiftprobe.probe.capture import Feed, LayerCapture
from shiftprobe.probe.engine import exact_float32, model_device, model_dtype, setup
from shiftprobe.probe.families import as_transforms
from shiftprobe.probe.inputs import eval_mode
from shiftprobe.probe.thresholds import exact_tolerance


def assert_equivariant(model: nn.Module, transform, layer: str, atol: float | None = None, *,
                       images: torch.Tensor | None = None, image_shape: Sequence[int] = (1, 28, 28),
                       n_images: int = 4, seed: int = 0) -> dict:
    """Assert that probe point ``layer`` of ``model`` (eval mode, its own dtype) is equivariant (a map) or
    invariant (a vector) to every parameter of ``transform`` (a ``Transform`` or a family's name) where its
    map action is defined, on the compared positions only, for ``images`` (default ``n_images`` seeded uniform
    images of ``image_shape``). ``atol`` defaults to ``exact_tolerance(dtype)`` times the largest ``|f(x)|``
    (at least 1).

    Returns the largest absolute difference at each parameter checked (keyed by the parameter's JSON form).
    Raises an AssertionError naming the worst parameter, or a ValueError when the map action is defined at no
    parameter for this layer.

    >>> import torch, shiftprobe
    >>> from shiftprobe.testing import assert_equivariant
    >>> conv = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3))
    >>> len(assert_equivariant(conv, shiftprobe.Translation(max_shift=2), "0", image_shape=(1, 12, 12)))
    25
    """
    (transform,) = as_transforms(transform)
    dtype, device = model_dtype(model), model_device(model)
    if images is None:
        images = torch.rand(n_images, *image_shape, generator=torch.Generator().manual_seed(seed))
    x = images.to(device, dtype)
    image_size = tuple(x.shape[-2:])
    transform.check_image_size(*image_size)
    with exact_float32(), eval_mode(model, announce=False), torch.inference_mode():
        net = setup(model, x, [layer], Feed(), device=device, seed=seed)
        geo, name = net.geometry[net.names[0]], net.names[0]
        with LayerCapture(model, net.layers) as capture:
            f_x = capture.run(x)[name]
            worst = {}
            for param in transform.params():
                f_t = capture.run(transform.act(x, param))[name]
                worst.update(_difference(transform, f_x, f_t, param, geo, image_size))
    if not worst:
        note = transform.map_action_note(geo, image_size)
        raise ValueError(f"{type(transform).__name__} has no map action on layer {layer!r}: {note}")
    tol = atol if atol is not None else exact_tolerance(dtype) * max(1.0, float(f_x.abs().max()))
    key = max(worst, key=worst.get)
    assert worst[key] <= tol, (f"layer {layer!r} is not equivariant to {transform.name} {key}: max |difference| "
                               f"{worst[key]:.3g} > tolerance {tol:.3g}")
    return worst


def _difference(transform, f_x: torch.Tensor, f_t: torch.Tensor, param, geo, image_size) -> dict:
    """``{param: max |f(T x) - A f(x)|}`` on the compared positions (``{}`` where the action is undefined)."""
    key = str(transform.param_to_json(param))
    if not geo.spatial:
        return {key: float((f_t - f_x).abs().max())}
    action = transform.map_action(f_x, param, geo, image_size)
    if action is None or action.empty:  # undefined, or no certified position to compare
        return {}
    actual = f_t if action.region is None else f_t[..., action.region[0], action.region[1]]
    return {key: float((actual.to(action.expected.dtype) - action.expected).abs().max())}
