"""Sanity checks of the brute-force reference (tests/reference.py) on networks whose answers are known."""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from reference import receptive_field, reference_measure, shift
from torch import nn

SHIFTS = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]


def _images(n=6, size=16, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _measure(model, shifts, mode, layers=("0",), canvas_pad=16, **kw):
    return reference_measure(
        model, _images(), None, list(layers), shifts, mode, 1, canvas_pad=canvas_pad, **kw
    )


@pytest.mark.parametrize("mode", ["crop", "roll"])
@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 3), (5, 0)])
def test_shift_matches_pixel_definition(mode, dy, dx):
    x = torch.rand(2, 1, 7, 6)
    want = torch.zeros_like(x)
    for i in range(7):
        for j in range(6):
            ti, tj = i + dy, j + dx
            if mode == "roll":
                want[..., ti % 7, tj % 6] = x[..., i, j]
            elif 0 <= ti < 7 and 0 <= tj < 6:
                want[..., ti, tj] = x[..., i, j]
    assert torch.equal(shift(x, dy, dx, mode), want)


def test_valid_conv_receptive_field_default_canvas():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 5))
    assert receptive_field(model, "0", (1, 16, 16)) == {"stride": (1, 1), "a": (0, 0), "b": (4, 4)}


@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_valid_conv_is_exactly_equivariant_on_certified_positions(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 5))
    res = _measure(model, SHIFTS, mode)
    assert res["strides"] == {"0": 1}
    for s in SHIFTS:
        m = res["per_shift"][s]["0"]
        assert m["aligned_rel"] < 1e-12 and m["aligned_count"] == 6 and m["no_overlap"] == 0
        assert m["nearest_aligned_rel"] == m["aligned_rel"]
    assert res["summary"]["0"]["aligned_rel"] < 1e-12
    assert res["summary"]["0"]["aligned_count"] == 6 * (len(SHIFTS) - 1)


def test_same_padded_stack_certifies_only_padding_free_positions():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    assert receptive_field(model, "2", (1, 16, 16), 16) == {"stride": (1, 1), "a": (-2, -2), "b": (2, 2)}
    res = _measure(model, SHIFTS, "crop", layers=("2",))
    for s in SHIFTS:
        assert res["per_shift"][s]["2"]["aligned_rel"] < 1e-12
    # the whole map (padding included) is not exactly equivariant: the certified set matters
    assert res["per_shift"][3, 0]["2"]["rel"] > 0.01


def test_pooled_stack_has_stride_two():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Conv2d(3, 3, 3))
    assert receptive_field(model, "0", (1, 16, 16), 16) == {"stride": (1, 1), "a": (0, 0), "b": (2, 2)}
    assert receptive_field(model, "2", (1, 16, 16), 16) == {"stride": (2, 2), "a": (0, 0), "b": (7, 7)}
    with pytest.raises(ValueError, match="multiple of the stride"):
        receptive_field(model, "2", (1, 16, 16), 15)
    res = _measure(model, SHIFTS, "crop", layers=("0", "2"))
    assert res["strides"] == {"0": 1, "2": 2}
    for dy, dx in SHIFTS:
        m = res["per_shift"][dy, dx]["2"]
        if dy % 2 == 0 and dx % 2 == 0:
            assert m["aligned_rel"] < 1e-12 and m["nearest_aligned_rel"] == m["aligned_rel"]
        else:
            assert m["aligned_rel"] is None and m["aligned_count"] == 0
            assert m["nearest_aligned_rel"] > 0.01 and m["nearest_count"] == 6
        assert res["per_shift"][dy, dx]["0"]["aligned_rel"] < 1e-12


@pytest.mark.parametrize("circular", [("0",), ()])
def test_circular_conv_under_roll(circular):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"))
    assert receptive_field(model, "0", (1, 16, 16), 16) == {"stride": (1, 1), "a": (-1, -1), "b": (1, 1)}
    res = _measure(model, SHIFTS + [(8, -7)], "roll", circular=circular)
    for s in SHIFTS + [(8, -7)]:
        m = res["per_shift"][s]["0"]
        assert m["aligned_rel"] < 1e-12
        if circular:  # whole map: a permutation of each channel, so sorted values agree too
            assert m["sorted_rel"] < 1e-12


def test_no_overlap_is_counted():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 5))
    res = _measure(model, [(12, 0), (11, 0)], "crop")  # 16 - 5 + 1 = 12 map rows
    assert res["per_shift"][12, 0]["0"]["aligned_rel"] is None
    assert res["per_shift"][12, 0]["0"]["no_overlap"] == 6
    assert res["per_shift"][12, 0]["0"]["nearest_no_overlap"] == 6
    assert res["per_shift"][11, 0]["0"]["aligned_count"] == 6


def test_zero_shift_is_identity():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 49, 4))
    res = _measure(model, [(0, 0), (1, 1)], "crop", layers=("0", "4", "output"))
    for layer in ("0", "4", "output"):
        m = res["per_shift"][0, 0][layer]
        assert m["cos"] == 1.0 and m["dist"] == 0.0 and m["rel"] == 0.0 and m["invariance_score"] == 1.0
    assert res["per_shift"][0, 0]["0"]["equivariance_score"] == 1.0
    assert set(res["strides"]) == {"0"}  # the Linear output is a vector


class _LabLike(nn.Module):
    """The lab CNN's shape: tuple output, fully connected head that rejects other input sizes."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 5), nn.Conv2d(4, 6, 5)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 12), nn.Linear(12, 10)

    def forward(self, x):
        c2 = self.conv2(F.relu(F.max_pool2d(self.conv1(x), 2)))
        h = self.fc1(F.relu(F.max_pool2d(c2, 2)).flatten(1))
        return F.log_softmax(self.fc2(F.relu(h)), dim=1), c2


def test_lab_like_network_end_to_end():
    torch.manual_seed(6)
    model, x = _LabLike(), _images(6, 28, seed=1)
    labels = torch.arange(6) % 10
    assert receptive_field(model, "conv2", (1, 28, 28), 16) == {"stride": (2, 2), "a": (0, 0), "b": (13, 13)}
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    t0 = time.perf_counter()
    res = reference_measure(
        model, x, labels, ["conv1", "conv2", "fc1", "output"], shifts, "crop", 1, canvas_pad=16
    )
    assert time.perf_counter() - t0 < 10
    assert res["strides"] == {"conv1": 1, "conv2": 2}
    out = res["per_shift"][0, 0]["output"]
    assert out["consistency"] == 1.0 and out["shifted_acc"] == res["accuracy"]
    assert 0.0 <= res["summary"]["output"]["consistency"] <= 1.0
    assert res["summary"]["conv2"]["aligned_count"] == 6 * 8  # (+-2, 0/+-2) minus (0, 0)
    assert res["summary"]["conv2"]["aligned_rel"] < 1e-12
    # pooled = sum over all non-zero-shift pairs / their number
    d = [v["dist"] for s in shifts if s != (0, 0) for v in res["pairs"][s]["fc1"]]
    assert math.isclose(res["summary"]["fc1"]["dist"], sum(d) / len(d), rel_tol=1e-12)
    ctrl = res["control"]["fc1"]["dist"]
    assert math.isclose(res["summary"]["fc1"]["invariance_score"], 1 - sum(d) / len(d) / ctrl, rel_tol=1e-12)
    assert "consistency" in res["control"]["output"]


def test_globally_pooled_map_is_a_vector():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1))
    res = _measure(model, [(1, 0)], "crop", layers=("0", "1"))
    assert res["strides"] == {"0": 1}
    assert "sorted_rel" not in res["per_shift"][1, 0]["1"] and "aligned_rel" not in res["summary"]["1"]
