"""``shiftprobe.lie_derivative``: zero where theory says so, and equal to an independent finite difference.

The finite-difference reference (``tests/lie_reference.py``) writes its own warps (``grid_sample`` of the
exact flows, a DFT phase ramp, the saturation blend) and its own norm; it imports nothing from
``shiftprobe``.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from lie_reference import AREA_PRESERVING, FLOWS, GEOMETRIC, rms_norms, strokes, warp
from torch import nn

import shiftprobe
from shiftprobe import lie_derivative
from shiftprobe.models import LabCNN

TOL32 = 1e-5  # float32 round-off, relative (the engine's exact tolerance for float32)
GENERATORS = ("translate_x", "translate_y", "rotate")


# -- the reference's conventions ------------------------------------------------------------------
def test_reference_warp_conventions():
    """The reference's own conventions, pinned to plain pixel operations."""
    x = torch.rand(2, 1, 7, 7, dtype=torch.float64)
    assert torch.allclose(warp(x, "rotate", math.pi / 2), torch.rot90(x, 1, dims=(-2, -1)))
    right = torch.zeros_like(x)
    right[..., 1:] = x[..., :-1]
    assert torch.allclose(warp(x, "translate_x", 1.0), right)
    assert torch.allclose(warp(x, "translate_y", 2.0, "fourier"), torch.roll(x, 2, dims=-2))
    # shear by 1: row r (u_y = r - 3) moves right by u_y pixels, so lower rows move right
    sheared = torch.zeros_like(x)
    for r in range(7):
        k = r - 3
        for c in range(7):
            if 0 <= c - k < 7:
                sheared[..., r, c] = x[..., r, c - k]
    assert torch.allclose(warp(x, "shear", 1.0), sheared)
    # scale by ln 2 doubles the content about the centre (3, 3): output u reads the input at u / 2
    grown, stretched = warp(x, "scale", math.log(2)), warp(x, "stretch", math.log(2))
    for k in (-1, 0, 1):
        for j in (-1, 0, 1):
            assert torch.allclose(grown[..., 3 + 2 * k, 3 + 2 * j], x[..., 3 + k, 3 + j])
            # stretch by ln 2: twice as wide, half as high: output u reads the input at (u_x / 2, 2 u_y)
            assert torch.allclose(stretched[..., 3 + k, 3 + 2 * j], x[..., 3 + 2 * k, 3 + j])
    # hyperbolic_rotate's flow is stretch's turned by 45 degrees
    turn = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64) / math.sqrt(2)
    stretch = torch.tensor(FLOWS["stretch"][0], dtype=torch.float64)
    assert torch.allclose(
        turn @ stretch @ turn.T, torch.tensor(FLOWS["hyperbolic_rotate"][0], dtype=torch.float64)
    )


def finite_difference(probe, x, layer, generator, method, stride, t):
    """Per-image ``(abs, rel)`` of the central difference of ``T'_{-t} f(T_t x)`` (maps of ``stride`` r,
    the flow in map coordinates) or ``f(T_t x)`` (vectors, ``stride`` None; every layer for saturate)."""

    def moved(sign):
        out = probe(warp(x, generator, sign * t, method))[layer]
        if stride is not None and generator != "saturate":
            out = warp(out, generator, -sign * t, method, padding="border", stride=stride)
        return out

    d = (moved(1) - moved(-1)) / (2 * t)
    return rms_norms(d, probe(x)[layer])


def _check_against(out, probe, x, strides, generators, method, t, floor=1e-3):
    with torch.no_grad():
        for layer, stride in strides.items():
            assert out["geometry"][layer]["stride"] == (None if stride is None else [stride, stride])
            for g in generators:
                ab, rel = finite_difference(probe, x, layer, g, method, stride, t)
                got = out[layer][g]
                assert got["abs"] == pytest.approx(float(ab.mean()), rel=1e-4), (layer, g)
                assert got["rel"] == pytest.approx(float(rel.mean()), rel=1e-4), (layer, g)
                assert got["rel_se"] == pytest.approx(float(rel.std() / math.sqrt(len(x))), rel=1e-3), (
                    layer,
                    g,
                )
                assert got["rel"] > floor  # not trivially zero: the agreement means something


@pytest.mark.parametrize(
    "method, generators, images",
    [
        ("bilinear", GEOMETRIC, "random"),
        ("bilinear", GEOMETRIC, "strokes"),
        ("fourier", GENERATORS[:2], "random"),
    ],
)
def test_agrees_with_finite_differences_on_the_lab_net(method, generators, images):
    """Every generator, on maps of stride 1 and 2 and on a vector, in float64: the exact warp's central
    difference at a tiny t (bilinear has a kink at t = 0; the curved paths of rotate, scale, stretch and
    hyperbolic_rotate add O(t); the ReLUs and max pools have kinks nearby)."""
    torch.manual_seed(0)
    net = LabCNN().double().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    floor = 1e-3
    if images == "strokes":  # conv1 is nearly equivariant to translations of these: a lower floor
        x, floor = strokes(3, seed=1), 1e-5
    strides = {"conv1": 1, "conv2": 2, "fc1": None}  # the lab CNN's (docs/measurement.md)
    out = lie_derivative(net, x, layers=list(strides), generators=generators, method=method)
    assert out["n_images"] == 3 and out["method"] == method
    _check_against(out, net.probe, x, strides, generators, method, t=1e-6, floor=floor)


class RGBNet(nn.Module):
    """A small colour CNN with a probe(): conv (stride 1), conv (stride 2), a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def probe(self, x):
        conv1 = self.conv1(x)
        conv2 = self.conv2(torch.relu(conv1))
        return {"conv1": conv1, "conv2": conv2, "fc": self.fc(torch.relu(conv2).flatten(1))}

    def forward(self, x):
        return self.probe(x)["fc"]


def test_saturate_agrees_with_finite_differences_and_torchvision():
    """saturate scores every layer for invariance (a colour change does not move a map); the reference
    is the saturation blend itself, and torchvision's adjust_saturation (grey weights 0.2989, 0.587,
    0.114 against BT.601's 0.299, 0.587, 0.114) agrees to 1e-3."""
    from torchvision.transforms.functional import adjust_saturation

    torch.manual_seed(0)
    net = RGBNet().double().eval()
    x = 0.1 + 0.8 * torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = lie_derivative(net, x, layers=["conv1", "conv2", "fc"], generators=["saturate", "rotate"])
    assert out["units"]["saturate"] == "per unit of saturation"
    for layer in ("conv1", "conv2", "fc"):
        with torch.no_grad():
            ab, rel = finite_difference(net.probe, x, layer, "saturate", "bilinear", None, 1e-6)
        assert out[layer]["saturate"]["rel"] == pytest.approx(float(rel.mean()), rel=1e-6), layer
        assert out[layer]["saturate"]["abs"] == pytest.approx(float(ab.mean()), rel=1e-6), layer
        with torch.no_grad():
            t = 1e-4
            d = (
                net.probe(adjust_saturation(x, 1 + t))[layer] - net.probe(adjust_saturation(x, 1 - t))[layer]
            ) / (2 * t)
        assert out[layer]["saturate"]["abs"] == pytest.approx(float(rms_norms(d, d)[0].mean()), rel=1e-3), (
            layer
        )
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # R = G = B: saturation does nothing
    still = lie_derivative(net, grey, layers=["conv1", "fc"], generators=["saturate"])
    assert still["conv1"]["saturate"]["abs"] < 1e-12 and still["fc"]["saturate"]["abs"] < 1e-12
    with pytest.raises(ValueError, match="saturate.*RGB.*C = 1.*drop 'saturate'"):
        lie_derivative(LabCNN(), torch.rand(2, 28, 28), generators=["rotate", "saturate"])


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
    assert one["geometry"]["0"] == {
        "kind": "spatial",
        "measures": "equivariance",
        "stride": [1, 1],
        "note": None,
    }
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


# -- analytic cases -------------------------------------------------------------------------------
class PixelSum(nn.Module):
    """``f(x)``: the sum of all pixels, one number per image (times a parameter equal to 1, which sets the
    dtype the measurement runs in)."""

    def __init__(self, power=1):
        super().__init__()
        self.power, self.one = power, nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.one * x.pow(self.power).sum(dim=(1, 2, 3)).unsqueeze(1)


def SquareSum():  # noqa: N802 (a model class in all but name)
    """``f(x)``: the sum of the squares of all pixels, invariant to every area-preserving flow."""
    return PixelSum(power=2)


def _framed(n=5, size=20, seed=4):
    """float64 images that are 0 on their outermost pixels."""
    x = torch.zeros(n, 2, size, size, dtype=torch.float64)
    x[..., 1:-1, 1:-1] = torch.rand(
        n, 2, size - 2, size - 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return x


def test_sum_of_pixels_changes_by_the_divergence():
    """d/dt sum(T_t x) = div(v) * sum(x): +2 f for scale (content grows: more of it), 0 for every
    area-preserving flow, exactly (summation by parts, no boundary terms) on images that are 0 on their
    outer pixels; the exact warp's finite difference says the same, with the sign."""
    from shiftprobe.probe.generators import GENERATORS as DEFINED
    from shiftprobe.probe.generators import image_derivative

    x = _framed()
    f = x.sum(dim=(1, 2, 3))
    out = lie_derivative(PixelSum(), x, layers=["output"], generators=GEOMETRIC)
    assert out["output"]["scale"]["rel"] == pytest.approx(2.0, rel=1e-12)
    assert out["output"]["scale"]["abs"] == pytest.approx(2 * float(f.mean()), rel=1e-12)
    assert out["output"]["scale"]["rel_se"] < 1e-12
    for g in AREA_PRESERVING:
        assert DEFINED[g].divergence == 0
        assert out["output"][g]["rel"] < 1e-13, (g, out["output"][g])
    signed = image_derivative(x, "scale").sum(dim=(1, 2, 3))
    assert torch.allclose(signed, 2 * f, rtol=1e-12)
    h = 1e-6
    fd = (warp(x, "scale", h).sum(dim=(1, 2, 3)) - warp(x, "scale", -h).sum(dim=(1, 2, 3))) / (2 * h)
    assert torch.allclose(fd, 2 * f, rtol=1e-5)
    full = torch.rand(5, 2, 20, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    edge = lie_derivative(PixelSum(), full, layers=["output"], generators=["translate_x", "rotate"])
    assert edge["output"]["translate_x"]["rel"] > 1e-3  # pixels on the border: boundary terms
    assert edge["output"]["rotate"]["rel"] > 1e-3


def test_sum_of_squares_is_invariant_to_area_preserving_flows():
    """f = sum(x^2) is invariant (d/dt = div(v) f in the continuum). With central differences the
    derivative is M_xx S_x + M_yy S_y (S: sums of products of horizontal / vertical neighbours): exactly 0
    for the translations, rotate, shear and hyperbolic_rotate on any image; for stretch (M_xx = -M_yy = 1)
    S_x - S_y, a discretisation error that is small on smooth images."""
    rough = torch.rand(4, 2, 17, 17, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = lie_derivative(SquareSum(), rough, layers=["output"], generators=GEOMETRIC)
    for g in ("translate_x", "translate_y", "rotate", "shear", "hyperbolic_rotate"):
        assert out["output"][g]["rel"] < 1e-13, (g, out["output"][g])
    s_x = (rough[..., :, 1:] * rough[..., :, :-1]).sum(dim=(1, 2, 3))
    s_y = (rough[..., 1:, :] * rough[..., :-1, :]).sum(dim=(1, 2, 3))
    f = rough.pow(2).sum(dim=(1, 2, 3))
    assert out["output"]["stretch"]["rel"] == pytest.approx(float(((s_x - s_y).abs() / f).mean()), rel=1e-10)
    assert out["output"]["scale"]["rel"] == pytest.approx(float(((s_x + s_y) / f).mean()), rel=1e-10)
    # on smooth strokes, a discretisation error: twice as wide, about four times smaller (second order)
    fine = lie_derivative(SquareSum(), strokes(4), layers=["output"], generators=["stretch", "scale"])[
        "output"
    ]
    finer = lie_derivative(
        SquareSum(),
        strokes(4, size=40, width=2.6, length=5),
        layers=["output"],
        generators=["stretch", "scale"],
    )["output"]
    assert fine["stretch"]["rel"] < 0.05 and finer["stretch"]["rel"] < fine["stretch"]["rel"] / 2.5
    assert abs(finer["scale"]["rel"] - 2) < abs(fine["scale"]["rel"] - 2) / 2.5 < 0.1  # d/dt e^(2t) f = 2 f


class GreyNet(nn.Module):
    """An MLP on the BT.601 grey image (``channel=None``), invariant to saturation by construction; or
    on one colour channel (not invariant)."""

    def __init__(self, channel=None, size=8):
        super().__init__()
        self.channel = channel
        self.fc = nn.Sequential(nn.Linear(size * size, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, x):
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        plane = (x * w).sum(1) if self.channel is None else x[:, self.channel]
        return self.fc(plane.flatten(1))


def test_a_grey_model_is_invariant_to_saturation():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grey = lie_derivative(GreyNet().double(), x, layers=["output"], generators=["saturate"])
    red = lie_derivative(GreyNet(channel=0).double(), x, layers=["output"], generators=["saturate"])
    assert grey["output"]["saturate"]["rel"] < 1e-12
    assert red["output"]["saturate"]["rel"] > 1e-2


def test_the_flow_on_a_map_of_unequal_strides():
    """S^-1 v(S u') for S = diag(r_x, r_y), at a few map points, equals the map flow's matrix and offset;
    for equal strides a linear flow keeps its matrix."""
    from shiftprobe.probe.generators import GENERATORS as DEFINED
    from shiftprobe.probe.generators import map_flow

    ry, rx = 1, 2
    for g in GEOMETRIC:
        m, b = torch.tensor(FLOWS[g][0], dtype=torch.float64), torch.tensor(FLOWS[g][1], dtype=torch.float64)
        s = torch.diag(torch.tensor([rx, ry], dtype=torch.float64))
        matrix, offset = map_flow(DEFINED[g], (ry, rx))
        for u in ([1.0, 0.0], [0.0, 1.0], [2.0, -3.0]):
            u = torch.tensor(u, dtype=torch.float64)
            expected = torch.linalg.solve(s, m @ (s @ u) + b)
            got = torch.tensor(matrix, dtype=torch.float64) @ u + torch.tensor(offset, dtype=torch.float64)
            assert torch.allclose(got, expected), (g, u)
        same, _ = map_flow(DEFINED[g], (2, 2))
        assert torch.equal(torch.tensor(same, dtype=torch.float64), m), g


# -- the interface --------------------------------------------------------------------------------
def test_any_model_uint8_tuple_output_training_mode_and_batches():
    torch.manual_seed(0)
    net = LabCNN().train()
    x = (torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    out = lie_derivative(
        net, x, layers=["conv1", "output"], generators=["rotate", "translate_y"], batch_size=2
    )
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
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32, 3)
    )
    out = lie_derivative(
        net, _images(1, 16, 16, n=3), layers=["1", "3"], generators=["translate_x", "rotate"]
    )
    assert out["1"] == {"translate_x": None, "rotate": None}
    assert "stride" in out["geometry"]["1"]["note"]
    assert out["3"]["rotate"]["rel"] > 0 and out["geometry"]["3"]["note"] is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"generators": ["sheer"]}, ["'sheer'", "did you mean 'shear'", "translate_x", "hyperbolic_rotate"]),
        ({"generators": "zoom"}, ["'zoom'", "rotate", "saturate"]),
        ({"generators": ["rotate", "rotate"]}, ["twice"]),
        ({"method": "fourier", "generators": ["scale"]}, ["fourier", "'scale'", "method='bilinear'"]),
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
    from shiftprobe.probe import lie as module

    assert shiftprobe.lie_derivative is lie_derivative
    assert doctest.testmod(module).failed == 0
