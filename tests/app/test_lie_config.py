"""``callbacks.shift_probe.lie_derivative`` (true, false or a list of generators) and
``lie_derivative_layerwise`` from the command line: they reach the callback, and bad values stop before
anything runs with one line naming the key, the value and the fix."""

from __future__ import annotations

import pytest
from conftest import compose_config

from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.train import instantiate_callbacks
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.callbacks import ShiftProbeCallback

KEY = "callbacks.shift_probe.lie_derivative"


def compose(*overrides: str):
    return compose_config("train", ["data.root=/tmp", *overrides])


def probe_callback(cfg) -> ShiftProbeCallback:
    return next(cb for cb in instantiate_callbacks(cfg) if isinstance(cb, ShiftProbeCallback))


@pytest.mark.parametrize(
    "overrides, generators, layerwise",
    [
        ([], None, False),
        ([f"{KEY}=true"], ("translate_x", "translate_y", "rotate"), False),
        ([f"{KEY}=[translate_x,rotate,scale]"], ("translate_x", "rotate", "scale"), False),
        ([f"{KEY}=[hyperbolic_rotate]", f"{KEY}_layerwise=true"], ("hyperbolic_rotate",), True),
    ],
)
def test_settings_reach_the_callback(overrides, generators, layerwise):
    cfg = compose(*overrides)
    validate_config(cfg)
    cb = probe_callback(cfg)
    assert cb.lie_generators == generators
    assert cb.lie_derivative_layerwise is layerwise


BAD = [
    (
        [f"{KEY}=[sheer]"],
        f"{KEY}=['sheer'] is not allowed: generator 'sheer' is not known (did you mean 'shear'?)",
    ),
    ([f"{KEY}=[rotate,rotate]"], "lists one twice"),
    ([f"{KEY}=[]"], f"{KEY}=[] is not allowed: use true, false or a list of generators"),
    (
        [f"{KEY}=[translate_x,saturate]"],
        "'saturate' changes colour saturation and needs RGB images; MNIST is grey",
    ),
    ([f"{KEY}=maybe"], f"{KEY}='maybe' is not allowed"),
    ([f"{KEY}_layerwise=true"], f"{KEY}_layerwise=true needs the Lie derivative: set {KEY}=true"),
    ([f"{KEY}=true", f"{KEY}_layerwise=yes"], f"{KEY}_layerwise='yes' is not allowed: use true or false"),
    ([f"{KEY}=true", f"{KEY}_images=1"], f"{KEY}_images=1 is not allowed: use an integer >= 2"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_values_stop_with_one_line(overrides, message):
    cfg = compose(*overrides)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert message in text and "\n" not in text
    with pytest.raises(ShiftProbeError):
        validate_config(cfg, known_keys=False)  # the check train.py runs before importing Lightning


def test_the_callback_checks_its_arguments_too():
    with pytest.raises(ValueError, match="did you mean 'scale'"):
        ShiftProbeCallback(lie_derivative=["scal"])
    with pytest.raises(ValueError, match="lie_derivative_layerwise=true needs"):
        ShiftProbeCallback(lie_derivative_layerwise=True)
    assert (
        ShiftProbeCallback(lie_derivative=True, lie_derivative_layerwise=True).lie_generators[0]
        == "translate_x"
    )
