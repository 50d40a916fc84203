"""Inferred strides and receptive fields equal the hand-derived ones; exactness on random weights.

Hand-derived values live beside each model (``RECEPTIVE_FIELDS``: stride, a, b with position q seeing
pixels [r q + a, r q + b]); ``tests/models/test_receptive_fields.py`` checks those against a
perturbation measurement. Here the engine's autograd inference must agree with them.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import shiftprobe
from shiftprobe.models import AllConvCNN, GapCNN, SmallResNet, allconv, gap, lab, resnet
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.translation import Translation

CASES = [
    (LabCNN, lab.RECEPTIVE_FIELDS),
    (GapCNN, gap.RECEPTIVE_FIELDS),
    (AllConvCNN, allconv.RECEPTIVE_FIELDS),
    (SmallResNet, resnet.RECEPTIVE_FIELDS),
]


def _random_bn(net: nn.Module) -> nn.Module:
    """Random BatchNorm statistics, so eval-mode BN is a real per-channel affine map."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


@pytest.mark.parametrize("cls, table", CASES, ids=[c.__name__ for c, _ in CASES])
def test_inferred_geometry_equals_hand_derived(cls, table):
    torch.manual_seed(0)
    net = _random_bn(cls())
    geo = infer_geometry(net, resolve_layers(net, list(table)), (1, 28, 28))
    for layer, (r, a, b) in table.items():
        g = geo[layer]
        assert g.stride == (r, r), layer
        assert g.receptive_field == (a, b, a, b), layer
        lo, hi = max(0, math.ceil(-a / r)), min(g.shape[1] - 1, (27 - b) // r)
        assert g.interior == (lo, hi, lo, hi), layer


def test_vectors_and_global_pooling_are_not_spatial():
    net = GapCNN().eval()
    geo = infer_geometry(net, resolve_layers(net, ["gap", "fc1", "logits"]), (1, 28, 28))
    assert all(g.kind == "vector" for g in geo.values())


def test_torchvision_resnet18_strides():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    geo = infer_geometry(net, resolve_layers(net, layers), (3, 64, 64))
    assert [geo[n].stride for n in layers[:5]] == [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32)]
    assert geo["conv1"].receptive_field == (-3, 3, -3, 3)
    assert geo["fc"].kind == "vector"


def test_circular_padding_detected_only_when_every_layer_is_circular():
    assert all(
        g.circular for n, g in infer_geometry(LabCNN(padding="circular"), resolve_layers(LabCNN(padding="circular"), ["conv1", "conv2"]), (1, 28, 28)).items()
    )
    for net in (LabCNN(), LabCNN(pool="blur", padding="circular"), SmallResNet()):
        geo = infer_geometry(net, resolve_layers(net, None), (1, 28, 28))
        assert not any(g.circular for g in geo.values())


class _ZeroPad(nn.Module):
    """Zero padding in the forward (``F.pad``): no module declares it."""

    def forward(self, x):
        return nn.functional.pad(x, (1, 1, 1, 1))


def test_circularity_is_what_the_network_does_not_what_its_modules_declare():
    """A functional zero pad, or an average pool whose ceil_mode clips the last window, is not circular
    although no module pads: such a layer is compared on its interior under roll, where it is exact."""
    torch.manual_seed(0)
    zero_pad = nn.Sequential(_ZeroPad(), nn.Conv2d(1, 4, 3), nn.ReLU(), _ZeroPad(), nn.Conv2d(4, 4, 3)).eval()
    clipped = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.AvgPool2d(3, 2, ceil_mode=True))
    geo = infer_geometry(zero_pad, resolve_layers(zero_pad, ["1", "4"]), (1, 16, 16))
    assert not geo["1"].circular and not geo["4"].circular
    geo = infer_geometry(clipped, resolve_layers(clipped, ["0", "1"]), (1, 16, 16))
    assert geo["0"].circular and not geo["1"].circular
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = measure_family(zero_pad, images, None, Translation(2, "roll"), layers=["4"])
    assert res["summary"]["4"]["aligned_rel_max"] < 1e-5


def test_an_interior_the_gradients_underestimate_is_not_certified():
    """A 7x7 max pool passes on few of its inputs, so the gradients of four canvases can miss an edge of the
    receptive field (here its top row: -3 instead of -4); claiming that interior would certify positions
    that read the padding. The network contradicts it, and the layer gets no exact test."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(7, 1, 3)).eval()
    geo = infer_geometry(net, resolve_layers(net, ["1"]), (1, 24, 24))["1"]
    assert geo.interior is None and not geo.exact_test and "misses input pixels" in geo.note
    torch.manual_seed(0)  # the same network where the gradients find the whole field
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(7, 1, 3)).eval()
    assert infer_geometry(net, resolve_layers(net, ["1"]), (1, 24, 24))["1"].receptive_field == (-4, 4, -4, 4)


class SameCNN(nn.Module):
    """Zero 'same' padding, bias everywhere: only interior positions can be exact."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        x = self.c2(torch.relu(self.c1(x)))
        x = self.c3(self.pool(torch.relu(x)))
        return self.head(x.mean(dim=(2, 3)))


NETS = {
    "lab": (LabCNN, ["conv1", "conv2"]),
    "blurpool": (lambda: LabCNN(pool="blur"), ["conv1", "conv2"]),
    "same": (SameCNN, ["c1", "c2", "c3"]),
    "gap": (GapCNN, ["conv1", "conv2"]),
    "allconv": (AllConvCNN, ["conv1", "down1", "conv2", "down2"]),
    "resnet": (SmallResNet, ["stem", "layer1", "layer2", "layer3"]),
}


@pytest.mark.parametrize("mode", ["crop", "roll"])
@pytest.mark.parametrize("name", list(NETS))
def test_exact_at_every_multiple_of_the_inferred_stride(name, mode):
    """Random weights: aligned_rel < 1e-5 for every pair at every shift the stride divides."""
    make, layers = NETS[name]
    torch.manual_seed(0)
    net = _random_bn(make())
    images = (torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    res = measure_family(net, images, None, Translation(4, mode), layers=layers)
    checked = 0
    for entry in res["groups"]["param"]:
        dy, dx = entry["param"]
        for layer in layers:
            stride = res["geometry"][layer]["stride"]
            block = entry[layer]
            if dy % stride[0] == 0 and dx % stride[1] == 0:
                if block.get("aligned_rel_no_overlap") == 6:
                    continue
                assert block["aligned_rel_max"] < 1e-5, (layer, dy, dx, block["aligned_rel_max"])
                checked += 1
            else:
                assert block["aligned_rel"] is None
    assert checked >= len(layers)


def test_circular_net_under_roll_is_exact_on_the_whole_map_sorted_values_included():
    torch.manual_seed(0)
    net = LabCNN(padding="circular").eval()
    images = (torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    res = measure_family(net, images, None, Translation(2, "roll"), layers=["conv1", "conv2"])
    for entry in res["groups"]["param"]:
        assert entry["conv1"]["aligned_rel_max"] < 1e-5
        assert entry["conv1"]["sorted_rel"] < 1e-5
        if entry["param"][0] % 2 == 0 and entry["param"][1] % 2 == 0:
            assert entry["conv2"]["aligned_rel_max"] < 1e-5
            assert entry["conv2"]["sorted_rel"] < 1e-5


def test_a_spatial_output_gets_the_geometry_of_the_module_that_computes_it():
    """A fully convolutional network (a segmentation-style map as its output): ``"output"`` is that of the
    last conv, stride, receptive field and exact test included, also probed beside another layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1)).double().eval()
    images = torch.rand(4, 1, 10, 10, dtype=torch.float64)
    res = measure_family(net, images, None, Translation(1), layers=["0", "2", "output"])
    assert res["geometry"]["output"]["note"] is None
    for key in ("stride", "receptive_field", "interior"):
        assert res["geometry"]["output"][key] == res["geometry"]["2"][key] is not None, key
    assert res["summary"]["output"]["aligned_rel"] == res["summary"]["2"]["aligned_rel"] < 1e-12


class _DoubleConvFloatHead(nn.Module):
    """A model that keeps a float64 convolution and casts around it itself."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3).double(), nn.Linear(2 * 10 * 10, 3)

    def forward(self, x):
        return self.head(self.conv(x.double()).float().flatten(1))


def test_a_model_of_mixed_dtypes_gets_its_geometry_and_exact_test():
    """A float32 copy broke its own casts (a traceback: 'Input type (double) and bias type (float)')."""
    torch.manual_seed(0)
    res = shiftprobe.measure(_DoubleConvFloatHead().eval(), torch.rand(8, 1, 12, 12), layers=["conv"],
                             transform=shiftprobe.Translation(max_shift=1), progress=False)
    assert res["geometry"]["conv"]["stride"] == [1, 1]
    assert res.summary["conv"]["aligned_rel"] < 1e-5
