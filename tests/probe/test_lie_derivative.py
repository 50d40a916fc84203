"""``shiftprobe.lie_derivative``: zero where theory says so, and equal to an independent finite difference.

The finite-difference reference below writes its own warps (``grid_sample`` and a DFT phase ramp) and
its own norm; it imports nothing from ``shiftprobe.probe.lie_derivative`` but the function under test.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shiftprobe
from shiftprobe import lie_derivative
from shiftprobe.models import LabCNN

TOL32 = 1e-5  # float32 round-off, relative (the engine's exact tolerance for float32)
GENERATORS = ("translate_x", "translate_y", "rotate")


# -- an independent reference ---------------------------------------------------------------------
def warp(x: torch.Tensor, generator: str, t: float, method: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """``T_t x``: translate_x / translate_y move content right / down by ``t`` pixels; rotate turns it
    counter-clockwise (as displayed) by ``t`` radians about ((H-1)/2, (W-1)/2)."""
    n, _, h, w = x.shape
    if method == "fourier":
        axis, size = (-1, w) if generator == "translate_x" else (-2, h)
        k = torch.arange(size, dtype=x.dtype)
        k = torch.where(k < (size + 1) // 2, k, k - size)  # signed frequency index
        shape = [1, 1, 1, 1]
        shape[axis] = size
        ramp = torch.polar(torch.ones_like(k), -2 * math.pi * k * t / size).view(shape)
        return torch.fft.ifft(torch.fft.fft(x, dim=axis) * ramp, dim=axis).real
    yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    if generator == "translate_x":
        sy, sx = yy, xx - t
    elif generator == "translate_y":
        sy, sx = yy - t, xx
    else:
        cy, cx = (h - 1) / 2, (w - 1) / 2
        c, s = math.cos(t), math.sin(t)
        sx = cx + c * (xx - cx) - s * (yy - cy)
        sy = cy + s * (xx - cx) + c * (yy - cy)
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], dim=-1).expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def test_reference_warp_conventions():
    """The reference's own conventions, pinned to plain pixel operations."""
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(warp(x, "rotate", math.pi / 2), torch.rot90(x, 1, dims=(-2, -1)))
    right = torch.zeros_like(x)
    right[..., 1:] = x[..., :-1]
    assert torch.allclose(warp(x, "translate_x", 1.0), right)
    assert torch.allclose(warp(x, "translate_y", 2.0, "fourier"), torch.roll(x, 2, dims=-2))


def finite_difference(probe, x, layer, generator, method, stride, t):
    """Per-image ``(abs, rel)`` of the central difference of ``T'_{-t/r} f(T_t x)`` (maps, ``stride`` r)
    or ``f(T_t x)`` (vectors, ``stride`` None): RMS over elements, over the RMS of ``f(x)``."""

    def moved(sign):
        out = probe(warp(x, generator, sign * t, method))[layer]
        if stride is not None:
            s = t / stride if generator != "rotate" else t
            out = warp(out, generator, -sign * s, method, padding="border")
        return out

    d = ((moved(1) - moved(-1)) / (2 * t)).flatten(1)
    a = probe(x)[layer].flatten(1)
    rms_d, rms_a = d.pow(2).mean(1).sqrt(), a.pow(2).mean(1).sqrt()
    return rms_d, rms_d / rms_a


@pytest.mark.parametrize("method, generators", [("bilinear", GENERATORS), ("fourier", GENERATORS[:2])])
def test_agrees_with_finite_differences_on_the_lab_net(method, generators):
    torch.manual_seed(0)
    net = LabCNN().double().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    strides = {"conv1": 1, "conv2": 2, "fc1": None}  # the lab CNN's (docs/measurement.md)
    out = lie_derivative(net, x, layers=list(strides), generators=generators, method=method)
    assert out["n_images"] == 3 and out["method"] == method
    # bilinear has a kink at t = 0 (the central difference errs by O(t) on curved rotation paths), and
    # the ReLUs / max pools have kinks nearby: a tiny t, in float64
    t = 1e-6
    with torch.no_grad():
        for layer, stride in strides.items():
            assert out["geometry"][layer]["stride"] == (None if stride is None else [stride, stride])
            for g in generators:
                ab, rel = finite_difference(net.probe, x, layer, g, method, stride, t)
                got = out[layer][g]
                assert got["abs"] == pytest.approx(float(ab.mean()), rel=1e-3), (layer, g)
                assert got["rel"] == pytest.approx(float(rel.mean()), rel=1e-3), (layer, g)
                assert got["rel_se"] == pytest.approx(float(rel.std() / math.sqrt(3)), rel=1e-2), (layer, g)
                assert got["rel"] > 1e-3  # not trivially zero: the agreement means something


# -- zero by construction -------------------------------------------------------------------------
class SpectrumNet(nn.Module):
    """An MLP on the DFT magnitudes ``|fft2(x)|``. A Fourier translation multiplies every DFT coefficient
    by a unit phase, so the magnitudes do not change at any t (with an even width, keeping the real part
    scales the Nyquist coefficient by cos(pi t), whose derivative at 0 is 0): the Lie derivative of both
    layers is exactly 0 for Fourier translations. A bilinear translation is not a phase ramp."""

    def __init__(self, c=2, h=15, w=16):
        super().__init__()
        self.fc1 = nn.Linear(c * h * w, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        spectrum = torch.fft.fft2(x, norm="ortho").abs().flatten(1)
        return self.fc2(torch.tanh(self.fc1(spectrum)))


class MomentNet(nn.Module):
    """An MLP on radial moments ``m_k = mean_p x(p) (|p - c|^2 / H^2)^k`` per channel, k in ``orders``.

    Why the rotation Lie derivative is exactly 0 (for k <= 2): the bilinear generator is
    ``u(p) . grad x(p)`` with central differences, zero outside, and ``u = (x - cx, -(y - cy))`` (rows,
    cols). For an image that is zero on its outermost pixels, summation by parts (no boundary terms:
    zero fill) turns ``sum_p w(p) u . grad x`` into
    ``sum_p x(p) K(p)`` with ``K = [(x - cx)(w(p - e_y) - w(p + e_y)) - (y - cy)(w(p - e_x) - w(p + e_x))] / 2``,
    and for ``w = r^2`` or ``r^4`` the differences are ``-4 (y - cy) s`` and ``-4 (x - cx) s`` times the
    same ``s`` (1 or ``2(r^2 + 1)``), so ``K = 0``: every moment, hence the MLP, has zero derivative. For
    a translation only ``m_0`` has (the central differences telescope). On an image whose edge pixels
    are not zero, the boundary terms break this: the images below have a zero frame."""

    def __init__(self, c=2, orders=(0, 1, 2)):
        super().__init__()
        self.orders = orders
        self.fc1 = nn.Linear(c * len(orders), 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / h**2
        m = torch.cat([(x * r2**k).mean(dim=(-2, -1)) for k in self.orders], dim=1)
        return self.fc2(torch.tanh(self.fc1(m)))


def _images(c, h, w, n=6, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_zero_for_a_model_invariant_to_fourier_translations():
    torch.manual_seed(0)
    net = SpectrumNet()
    x = _images(2, 15, 16)
    out = lie_derivative(net, x, layers=["fc1", "output"], generators=GENERATORS[:2], method="fourier")
    for layer in ("fc1", "output"):
        assert out["geometry"][layer]["measures"] == "invariance"
        for g in GENERATORS[:2]:
            assert out[layer][g]["rel"] < TOL32 and out[layer][g]["abs"] < TOL32, (layer, g, out[layer][g])
    control = lie_derivative(net, x, layers=["output"], generators=["translate_x"], method="bilinear")
    assert control["output"]["translate_x"]["rel"] > 1e-3


def test_zero_for_a_model_invariant_to_rotation():
    torch.manual_seed(0)
    x = torch.zeros(6, 2, 20, 20)
    x[..., 1:-1, 1:-1] = _images(2, 18, 18)
    net = MomentNet()
    out = lie_derivative(net, x, layers=["fc1", "output"])
    for layer in ("fc1", "output"):
        assert out[layer]["rotate"]["rel"] < TOL32, out[layer]
        assert out[layer]["translate_x"]["rel"] > 1e-4  # r^2 moments move with a translation
    mean_only = lie_derivative(MomentNet(orders=(0,)), x, layers=["output"])
    for g in GENERATORS:  # the mean is invariant to all three
        assert mean_only["output"][g]["rel"] < TOL32, (g, mean_only["output"][g])
    framed = lie_derivative(net, _images(2, 20, 20), layers=["output"], generators=["rotate"])
    assert framed["output"]["rotate"]["rel"] > 1e-3  # non-zero edge pixels: boundary terms


def test_circular_conv_is_equivariant_to_fourier_translations_at_stride_1_only():
    """A stride-1 circular convolution commutes with every circular (Fourier) shift; at stride 2 the map
    is a subsampled one, and a sub-pixel shift of the input is no shift of it (aliasing)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 5, padding=2, padding_mode="circular")
    strided = nn.Conv2d(2, 4, 5, stride=2, padding=2, padding_mode="circular")
    strided.load_state_dict(conv.state_dict())
    x = _images(2, 28, 28)
    one = lie_derivative(nn.Sequential(conv), x, layers=["0"], generators=GENERATORS[:2], method="fourier")
    two = lie_derivative(nn.Sequential(strided), x, layers=["0"], generators=GENERATORS[:2], method="fourier")
    assert one["geometry"]["0"] == {"kind": "spatial", "measures": "equivariance", "stride": [1, 1], "note": None}
    assert two["geometry"]["0"]["stride"] == [2, 2]
    for g in GENERATORS[:2]:
        assert one["0"][g]["rel"] < TOL32, one["0"][g]
        assert two["0"][g]["rel"] > 1e-2, two["0"][g]


def test_lab_conv1_is_equivariant_to_bilinear_translations_away_from_the_border():
    """A valid convolution commutes with central differences wherever the image is zero around the
    border (5 px: the kernel plus one), the map's edge then being its bias (border fill). conv2 sees
    the input through a stride-2 pool: not equivariant to sub-pixel shifts."""
    torch.manual_seed(0)
    net = LabCNN()
    x = torch.zeros(4, 1, 28, 28)
    x[..., 5:23, 5:23] = torch.rand(4, 1, 18, 18, generator=torch.Generator().manual_seed(0))
    out = lie_derivative(net, x, layers=["conv1", "conv2"], generators=GENERATORS[:2])
    for g in GENERATORS[:2]:
        assert out["conv1"][g]["rel"] < TOL32, out["conv1"][g]
        assert out["conv2"][g]["rel"] > 1e-2, out["conv2"][g]


# -- the interface --------------------------------------------------------------------------------
def test_any_model_uint8_tuple_output_training_mode_and_batches():
    torch.manual_seed(0)
    net = LabCNN().train()
    x = (torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    out = lie_derivative(net, x, layers=["conv1", "output"], generators=["rotate", "translate_y"], batch_size=2)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert out["layers"] == ["conv1", "output"] and out["generators"] == ["rotate", "translate_y"]
    assert out["units"] == {"rotate": "per radian", "translate_y": "per input pixel"}
    assert out["n_images"] == 5 and "RMS" in out["norm"] and out["seconds"] > 0
    assert set(out["output"]["rotate"]) == {"rel", "rel_se", "abs", "abs_se"}
    one_batch = lie_derivative(net, x, layers=["conv1", "output"], generators=["rotate", "translate_y"])
    for layer in ("conv1", "output"):
        for g in ("rotate", "translate_y"):
            for key in ("rel", "abs", "rel_se"):
                assert out[layer][g][key] == pytest.approx(one_batch[layer][g][key], rel=1e-5)
    single = lie_derivative(net, x[:1], layers=["output"], generators=["rotate"])
    assert single["output"]["rotate"]["rel_se"] is None and single["output"]["rotate"]["rel"] > 0


def test_a_map_without_a_stride_gets_none_with_a_note():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32, 3))
    out = lie_derivative(net, _images(1, 16, 16, n=3), layers=["1", "3"], generators=["translate_x", "rotate"])
    assert out["1"] == {"translate_x": None, "rotate": None}
    assert "stride" in out["geometry"]["1"]["note"]
    assert out["3"]["rotate"]["rel"] > 0 and out["geometry"]["3"]["note"] is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"generators": ["shear"]}, ["'shear'", "translate_x", "translate_y", "rotate"]),
        ({"generators": "scale"}, ["'scale'", "rotate"]),
        ({"method": "nearest"}, ["'nearest'", "bilinear", "fourier"]),
        ({"method": "fourier"}, ["fourier", "rotate", "method='bilinear'"]),
    ],
)
def test_bad_generator_or_method_is_refused(kwargs, words):
    with pytest.raises(ValueError) as err:
        lie_derivative(LabCNN(), torch.rand(2, 28, 28), **kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_docstring_example_runs():
    from shiftprobe.probe import lie_derivative as module

    assert shiftprobe.lie_derivative is lie_derivative
    assert doctest.testmod(module).failed == 0
