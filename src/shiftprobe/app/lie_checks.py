"""``check_lie_derivative(cfg)``: the Lie derivative's settings of ``callbacks.shift_probe``, checked before
anything is built.

``lie_derivative`` is ``true``, ``false`` or a list of generators (``[translate_x,rotate,scale]``);
``lie_derivative_layerwise`` is ``true`` or ``false`` and needs ``lie_derivative`` on;
(``lie_derivative_images`` is checked with the other numbers, ``config_checks.check_probe``). Every problem is one line naming the key, the
value and the fix (``ShiftProbeError``).
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from shiftprobe.errors import ShiftProbeError
from shiftprobe.errors import reject_setting as _fail
from shiftprobe.probe.generators import GENERATORS, check_generators

KEY = "callbacks.shift_probe.lie_derivative"
EXAMPLE = f"{KEY}=[translate_x,rotate,scale]"


def _generators(value) -> list[str]:
    """The generators listed (a one-line error for an unknown one, a repeat, an empty list, saturate)."""
    names = OmegaConf.to_container(value) if isinstance(value, ListConfig) else list(value)
    if not names or not all(isinstance(n, str) for n in names):
        _fail(KEY, names, f"use true, false or a list of generators from {list(GENERATORS)}, e.g. {EXAMPLE}")
    try:
        check_generators(names)
    except ValueError as err:
        raise ShiftProbeError(f"{KEY}={names!r} is not allowed: {err}.") from None
    colour = [n for n in names if GENERATORS[n].colour]
    if colour:  # the app measures MNIST: grey images (model.in_channels must be 1)
        _fail(
            KEY,
            names,
            f"{colour[0]!r} changes colour saturation and needs RGB images; MNIST is grey: drop it",
        )
    return names


def check_lie_derivative(cfg: DictConfig) -> None:
    """Refuse a bad ``lie_derivative``, ``lie_derivative_layerwise`` or ``lie_derivative_images``."""
    node = OmegaConf.select(cfg, "callbacks.shift_probe")
    if not isinstance(node, DictConfig):
        return
    value = node.get("lie_derivative", False)
    on = value is True or (value is not None and value is not False and bool(_generators_of(value)))
    layerwise = node.get("lie_derivative_layerwise", False)
    if not isinstance(layerwise, bool):
        _fail(f"{KEY}_layerwise", layerwise, "use true or false")
    if layerwise and not on:
        raise ShiftProbeError(
            f"{KEY}_layerwise=true needs the Lie derivative: set {KEY}=true or e.g. {EXAMPLE}."
        )


def _generators_of(value) -> list[str]:
    if isinstance(value, (ListConfig, list, tuple)):
        return _generators(value)
    _fail(KEY, value, f"use true, false or a list of generators, e.g. {EXAMPLE}")
    return []
