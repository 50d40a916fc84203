"""Probe points by forward hooks: what a hook records is the module's output as the module returned it."""

from __future__ import annotations

import torch
from torch import nn

from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.translation import Translation


class InPlace(nn.Module):
    """torchvision's habits: a conv whose output ``nn.ReLU(inplace=True)`` overwrites, and a residual ``out +=``."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.relu(self.conv(x))
        out = self.bn(h)
        out += h
        return self.relu(out)


def _reference(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of ``conv`` and ``bn`` copied as they leave the modules."""
    store = {}

    def keep(name):
        def hook(module, inputs, output):
            store[name] = output.clone()  # returns None: the network goes on with its own output

        return hook

    handles = [getattr(net, n).register_forward_hook(keep(n)) for n in ("conv", "bn")]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return store


def test_a_later_in_place_operation_does_not_change_what_was_captured():
    torch.manual_seed(0)
    net = InPlace().eval()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), LayerCapture(net, resolve_layers(net, ["conv", "bn"])) as capture:
        runs = [capture.run(x), capture.run(x)]  # the first pass finds the overwritten outputs, the second copies them
    expected = _reference(net, x)
    assert expected["conv"].min() < 0  # the ReLU would have changed it
    for got in runs:
        for name in ("conv", "bn"):
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_the_figures_are_those_of_the_outputs_as_returned():
    """Before, ``conv`` was measured after the in-place ReLU and ``bn`` after ``+= h``: other numbers."""
    torch.manual_seed(0)
    net = InPlace().eval()
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    res = measure_family(net, x, None, Translation(1), layers=["conv", "bn"])
    row = next(g for g in res["groups"]["param"] if g["param"] == [0, 1])
    a, b = _reference(net, x), _reference(net, shift_images(x, 0, 1))
    for name in ("conv", "bn"):
        rel = ((b[name] - a[name]).flatten(1).norm(dim=1) / a[name].flatten(1).norm(dim=1)).mean()
        assert abs(row[name]["rel"] - float(rel)) <= 1e-5 * float(rel)
