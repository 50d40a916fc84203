"""Hand-derived receptive fields (stride r, a, b: map position i sees pixels [r*i + a, r*i + b] along
each axis) against a brute-force measurement that uses nothing but the model.

The measurement: a float64 copy of the model with random weights (BatchNorm in eval mode, with random
statistics), a 48x48 canvas of random pixels, and one large perturbation (+-1000) of a single pixel
at a time along a line through the canvas centre. A forward hook captures the probed module's output
and raises, so the rest of the network (e.g. a fc1 sized for 28x28) never runs. Map row i depends
on pixel row p when some position of row i changes; that set must be exactly the hand-derived
interval, clipped to the canvas (zero padding: the clipped part is padding, not pixels).
"""

import copy

import pytest
import torch
from torch import nn

from shiftprobe.models import AllConvCNN, GapCNN, SmallResNet, allconv, gap, lab, resnet
from shiftprobe.models.lab import LabCNN

CANVAS = 48  # the widest field (resnet layer3) spans 25 pixels
DELTA = 1e3
TOL = 1e-9  # unaffected positions change by float64 rounding at most; affected ones by far more

# (stride, a, b), derived by hand (see each model file for the derivation)
HAND_DERIVED = {
    "lab": {"conv1": (1, 0, 4), "pool1": (2, 0, 5), "conv2": (2, 0, 13), "pool2": (4, 0, 15)},
    "gap": {"conv1": (1, 0, 4), "pool1": (2, 0, 5), "conv2": (2, 0, 13), "pool2": (4, 0, 15)},
    "allconv": {"conv1": (1, 0, 4), "down1": (2, 0, 5), "conv2": (2, 0, 13), "down2": (4, 0, 15)},
    "resnet": {"stem": (1, -1, 1), "layer1": (1, -3, 3), "layer2": (2, -6, 6), "layer3": (4, -12, 12)},
}
MODULE_TABLES = {
    "lab": lab.RECEPTIVE_FIELDS,
    "gap": gap.RECEPTIVE_FIELDS,
    "allconv": allconv.RECEPTIVE_FIELDS,
    "resnet": resnet.RECEPTIVE_FIELDS,
}
BUILDERS = {
    "lab": LabCNN,
    "gap": GapCNN,
    "allconv": AllConvCNN,
    "resnet": lambda: SmallResNet(width=4),
}
CASES = [(model, layer) for model, table in HAND_DERIVED.items() for layer in table]


class _Captured(Exception):
    def __init__(self, output: torch.Tensor):
        super().__init__("captured")
        self.output = output


def random_float64_copy(net: nn.Module, seed: int) -> nn.Module:
    net = copy.deepcopy(net).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g, dtype=torch.float64) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g, dtype=torch.float64) - 0.5)
    return net


def capture(net: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of module ``layer`` for input ``x``; the forward stops there."""

    def hook(module, inputs, output):
        raise _Captured(output)

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            net(x)
    except _Captured as c:
        return c.output
    finally:
        handle.remove()
    raise AssertionError(f"module {layer!r} did not run in the forward pass")


def measured_fields(net: nn.Module, layer: str, axis: int, seed: int = 0) -> list[set[int]]:
    """For each map position i along ``axis`` (0: rows, 1: columns), the canvas pixels (along that
    axis) whose perturbation changes some position of map row/column i."""
    g = torch.Generator().manual_seed(seed)
    channels = getattr(net, "in_channels", 1)
    base = torch.rand(1, channels, CANVAS, CANVAS, generator=g, dtype=torch.float64)
    ref = capture(net, layer, base)
    assert ref.dim() == 4, f"{layer} is not a spatial probe point"
    depends = None
    for sign in (1.0, -1.0):
        batch = base.repeat(CANVAS, 1, 1, 1)
        for p in range(CANVAS):
            pixel = (p, CANVAS // 2) if axis == 0 else (CANVAS // 2, p)
            batch[p, :, pixel[0], pixel[1]] += sign * DELTA
        diff = (capture(net, layer, batch) - ref).abs()
        changed = diff.amax(dim=(1, 3) if axis == 0 else (1, 2)) > TOL  # (pixel p, map position i)
        depends = changed if depends is None else depends | changed
    return [set(torch.nonzero(depends[:, i]).flatten().tolist()) for i in range(depends.shape[1])]


def test_module_tables_are_the_hand_derived_ones():
    assert MODULE_TABLES == HAND_DERIVED


def test_every_spatial_probe_point_is_covered():
    """Every 4-D default probe point of the variants has a hand-derived field."""
    for name, builder in BUILDERS.items():
        net = builder()
        layers = getattr(net, "default_probe_layers", ("conv1", "conv2"))
        aliases = getattr(net, "layer_aliases", {})
        for layer in (aliases.get(name, name) for name in layers):
            out = capture(net, layer, torch.rand(2, 1, 28, 28))
            if out.dim() == 4:
                assert layer in HAND_DERIVED[name], (name, layer)


@pytest.mark.parametrize("model,layer", CASES, ids=[f"{m}-{layer}" for m, layer in CASES])
def test_hand_derived_receptive_field_matches_brute_force(model, layer):
    torch.manual_seed(0)
    net = random_float64_copy(BUILDERS[model](), seed=1)
    r, a, b = HAND_DERIVED[model][layer]
    for axis in (0, 1):
        fields = measured_fields(net, layer, axis, seed=2 + axis)
        expected = [set(range(max(0, r * i + a), min(CANVAS - 1, r * i + b) + 1)) for i in range(len(fields))]
        # the canvas is large enough: some positions see their whole (unclipped) interval
        assert any(r * i + a >= 0 and r * i + b < CANVAS for i in range(len(fields)))
        for i, (got, want) in enumerate(zip(fields, expected, strict=True)):
            assert got == want, (
                f"{model}.{layer} axis {axis} position {i}: measured {sorted(got)}, hand-derived {sorted(want)}"
            )
