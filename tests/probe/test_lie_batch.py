"""``lie_derivative(..., layerwise=True)``: each module's contribution to the output's Lie derivative.

Checked against an independent computation (central differences of the exact warps of
``tests/lie_reference.py``: a module's own Lie derivative, then carried through the rest of the network
by a second central difference), and by its sum: the contributions of the modules and of the gaps
between them add up, as vectors, to the end-to-end value.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from lie_reference import GEOMETRIC, rms_norms, warp
from torch import nn

from shiftprobe import lie_derivative
from shiftprobe.models import LabCNN


def _sequential():
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(3, 4, 3),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        )
        .double()
        .eval()
    )


#: what each tensor of ``_sequential`` is: the image, a map of stride r, or nothing to transform (a max
#: pool after a ReLU would see ties at 0, where the max has no derivative: the pool comes first)
INPUT_STRIDE = {"0": "image", "1": 1, "2": 2, "3": 2, "4": 2, "5": 2, "6": None, "7": None}
OUTPUT_STRIDE = {"0": 1, "1": 2, "2": 2, "3": 2, "4": 2, "5": None, "6": None, "7": None}


def _images(n=3, size=16, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _move(t, stride, generator, s):
    """The reference's action on a tensor of the decomposition (image: zero fill; map: edge fill)."""
    if stride == "image":
        return warp(t, generator, s)
    if stride is None:
        return t
    return warp(t, generator, s, padding="border", stride=stride)


def reference_contribution(net, x, k, generator, h=1e-6):
    """Per image (abs, rel) of J_rest(b) L_k, both by central differences (float64)."""
    modules = list(net)
    with torch.no_grad():
        a = nn.Sequential(*modules[:k])(x)
        m, rest = modules[k], nn.Sequential(*modules[k + 1 :])
        s_in, s_out = INPUT_STRIDE[str(k)], OUTPUT_STRIDE[str(k)]

        def own(sign):
            return _move(m(_move(a, s_in, generator, sign * h)), s_out, generator, -sign * h)

        own_ld = (own(1) - own(-1)) / (2 * h)
        b = m(a)
        contribution = (rest(b + h * own_ld) - rest(b - h * own_ld)) / (2 * h)
        return rms_norms(contribution, net(x))


@pytest.mark.parametrize("generator", GEOMETRIC)
def test_contributions_equal_an_independent_finite_difference(generator):
    net, x = _sequential(), _images()
    out = lie_derivative(net, x, layers=["output"], generators=[generator], layerwise=True)
    assert list(out["layerwise"]) == ["0", "1", "2", "3", "4", "5", "6", "7"]  # every leaf, in order
    for k in (0, 1, 2, 3, 5):  # image -> map, stride 1 -> 2 (pool), the ReLU, map -> map, map -> vector
        ab, rel = reference_contribution(net, x, k, generator)
        got = out["layerwise"][str(k)][generator]["contribution"]
        assert got["abs"] == pytest.approx(float(ab.mean()), rel=1e-4, abs=1e-12), (k, got)
        assert got["rel"] == pytest.approx(float(rel.mean()), rel=1e-4, abs=1e-12), (k, got)


@pytest.mark.parametrize("generator", ["translate_x", "rotate", "scale", "hyperbolic_rotate"])
def test_a_chain_of_every_leaf_adds_up_to_the_end_to_end_value(generator):
    """In an nn.Sequential the leaves cover the network: nothing happens between them (every gap is
    exactly 0), and the contributions sum to the output's Lie derivative, which equals the per-layer
    measurement of "output" (another code path)."""
    net, x = _sequential(), _images()
    out = lie_derivative(net, x, layers=["output"], generators=[generator], layerwise=True)
    total = out["layerwise_total"][generator]
    assert total["end_to_end"]["rel"] == pytest.approx(out["output"][generator]["rel"], rel=1e-12)
    assert total["modules"]["rel"] == pytest.approx(total["end_to_end"]["rel"], rel=1e-10)
    assert total["unexplained"]["rel"] < 1e-12 * total["end_to_end"]["rel"] + 1e-15
    assert total["between"]["abs"] == 0.0
    assert all(entry[generator]["contribution"]["abs"] == 0.0 for entry in out["layerwise_between"].values())
    for name in ("6", "7"):  # flatten and linear: vector to vector, nothing to transform
        assert out["layerwise"][name][generator]["contribution"]["abs"] == 0.0
    ranking = out["layerwise_ranking"][generator]
    rels = [
        (out["layerwise"].get(n) or out["layerwise_between"][n])[generator]["contribution"]["rel"]
        for n in ranking
    ]
    assert rels == sorted(rels, reverse=True) and rels[0] > 1e-3


def test_functional_operations_show_between_modules_and_the_sum_stays_exact():
    """The lab CNN calls F.relu and flatten in its forward: the gaps pool1 → conv2 (a ReLU) and
    pool2 → fc1 (a ReLU and the map-to-vector flatten) carry them; where a module's output is the next
    one's input the gap is exactly 0; vectors on both sides leave no gap at all."""
    torch.manual_seed(0)
    net = LabCNN().double().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = lie_derivative(net, x, layers=["output"], generators=["translate_x", "rotate"], layerwise=True)
    assert list(out["layerwise"]) == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
    between = out["layerwise_between"]
    assert list(between) == [
        "input → conv1",
        "conv1 → pool1",
        "pool1 → conv2",
        "conv2 → pool2",
        "pool2 → fc1",
    ]
    for g in ("translate_x", "rotate"):
        for label in ("input → conv1", "conv1 → pool1", "conv2 → pool2"):
            assert between[label][g]["contribution"]["abs"] == 0.0, (label, g)
        for label in ("pool1 → conv2", "pool2 → fc1"):
            assert between[label][g]["contribution"]["rel"] > 1e-5, (label, g)
        total = out["layerwise_total"][g]
        assert total["end_to_end"]["rel"] == pytest.approx(out["output"][g]["rel"], rel=1e-12)
        assert total["unexplained"]["rel"] < 1e-12 * total["end_to_end"]["rel"]
        own = out["layerwise"]["conv1"][g]["own"]
        assert own["rel"] > 0 and own["rel_se"] > 0  # conv1's own Lie derivative, over its output's RMS
    assert out["layerwise_notes"] == []


def test_float32_sums_to_round_off():
    torch.manual_seed(0)
    net = LabCNN().eval()
    out = lie_derivative(net, torch.rand(4, 28, 28), layers=["output"], generators=["scale"], layerwise=True)
    total = out["layerwise_total"]["scale"]
    assert total["unexplained"]["rel"] < 1e-5 * total["end_to_end"]["rel"]


def test_exactly_equivariant_modules_contribute_zero():
    """Under Fourier translations a circular convolution (stride 1) commutes with the shift and the
    global mean of a shifted map does not change: their contributions are 0 (round-off); the ReLU,
    which does not commute with a band-limited shift, carries the whole end-to-end value."""
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"),
            nn.ReLU(),
            nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 2),
        )
        .double()
        .eval()
    )
    x = _images(size=12)
    out = lie_derivative(
        net, x, layers=["output"], generators=["translate_x", "translate_y"], method="fourier", layerwise=True
    )
    for g in ("translate_x", "translate_y"):
        end = out["layerwise_total"][g]["end_to_end"]["rel"]
        for name in ("0", "2", "3"):
            assert out["layerwise"][name][g]["contribution"]["rel"] < 1e-12 * max(end, 1.0), (name, g)
            assert out["layerwise"][name][g]["own"] is None or out["layerwise"][name][g]["own"]["rel"] < 1e-12
        assert out["layerwise"]["1"][g]["contribution"]["rel"] == pytest.approx(end, rel=1e-10)
        assert out["layerwise_ranking"][g][0] == "1"


def test_saturate_acts_on_the_input_image_only():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)
    )
    net = net.double().eval()
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = lie_derivative(net, x, layers=["output"], generators=["saturate"], layerwise=True)
    total = out["layerwise_total"]["saturate"]
    first = out["layerwise"]["0"]["saturate"]["contribution"]
    assert first["rel"] == pytest.approx(total["end_to_end"]["rel"], rel=1e-12) and first["rel"] > 1e-3
    for name in ("1", "2", "3", "4"):
        assert out["layerwise"][name]["saturate"]["contribution"]["abs"] == 0.0
    assert list(out["layerwise_between"]) == ["input → 0"]  # the only gap with a transformed side


class Twice(nn.Module):
    """One convolution applied twice (shared weights), then a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(torch.relu(self.conv(x)))).flatten(1))


def test_module_choice_is_checked_and_a_shared_module_is_left_out():
    torch.manual_seed(0)
    x = _images(size=8)
    with pytest.raises(ValueError, match="'conv' runs 2 times"):
        lie_derivative(Twice(), x, generators=["rotate"], layerwise_modules=["conv", "head"])
    torch.manual_seed(0)
    out = lie_derivative(Twice().double(), x, layers=["output"], generators=["rotate"], layerwise=True)
    assert list(out["layerwise"]) == ["head"] and "conv: left out" in out["layerwise_notes"][0]
    total = out["layerwise_total"]["rotate"]
    assert total["end_to_end"]["rel"] > 1e-3
    assert total["between"]["rel"] == pytest.approx(
        total["end_to_end"]["rel"], rel=1e-12
    )  # the gap before head
    assert total["unexplained"]["rel"] < 1e-12 * total["end_to_end"]["rel"]
    net = _sequential()
    with pytest.raises(ValueError, match="'nope' is not a module"):
        lie_derivative(net, _images(), layerwise_modules=["nope"])
    with pytest.raises(ValueError, match="nested"):
        lie_derivative(nn.Sequential(net), _images(), layerwise_modules=["0", "0.1"])
    chosen = lie_derivative(
        net, _images(), layers=["output"], generators=["rotate"], layerwise_modules=["0", "3"]
    )
    assert list(chosen["layerwise"]) == ["0", "3"]
    assert list(chosen["layerwise_between"]) == ["input → 0", "0 → 3", "3 → output"]
    total = chosen["layerwise_total"]["rotate"]
    assert total["unexplained"]["rel"] < 1e-12 * total["end_to_end"]["rel"]


@pytest.mark.parametrize("layerwise", [False, True])
def test_no_warning_from_torchs_forward_mode_internals(layerwise):
    """torch warns, on the first dual tensor of a process, that its forward-mode decompositions use the
    deprecated torch.jit.script: nothing a user can act on. A fresh process (the warning is printed once per
    process) with Python's default warning filters, which are what a user sees, must print none."""
    code = (
        "import torch\nfrom shiftprobe import lie_derivative\nfrom shiftprobe.models import LabCNN\n"
        "torch.manual_seed(0)\n"
        f"lie_derivative(LabCNN().eval(), torch.rand(2, 1, 28, 28), layerwise={layerwise})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr
