"""The transformation families (``shiftprobe.probe.families``) against independent float64 references.

Each reference below is written here, in NumPy or explicit loops, and imports nothing from
shiftprobe: the pixel permutations of quarter turns and flips, bilinear sampling with zero fill, and a
band-limited shift by the full complex DFT (the engine uses the real FFT). The symmetry condition on a
map's sampling grid is checked against the truth: a flip-symmetric convolution commutes with the flip
exactly where the condition holds, and not where it fails.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tolerances import tol
from torch import nn

from shiftprobe.probe.capture import Layer
from shiftprobe.probe.families import (
    Flip,
    Rotation,
    Rotation90,
    SubpixelTranslation,
    family_from_name,
    grid_asymmetry,
)
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.translation import Translation

#: float32 results against float64 references: round-off of a few operations on values in [0, 1]
TOL32 = 1e-5


def _images(n=3, h=9, w=9, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, h, w, generator=g)


# -- independent references (float64, no shiftprobe) ----------------------------------------------
def ref_rot90_once(a: np.ndarray) -> np.ndarray:
    """Counter-clockwise quarter turn as displayed: out[i, j] = in[j, n - 1 - i] (square, last two axes)."""
    n = a.shape[-1]
    out = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            out[..., i, j] = a[..., j, n - 1 - i]
    return out


def ref_flip(a: np.ndarray, axis: str) -> np.ndarray:
    h, w = a.shape[-2:]
    out = np.empty_like(a)
    for i in range(h):
        for j in range(w):
            src = (i, w - 1 - j) if axis == "horizontal" else (h - 1 - i, j)
            out[..., i, j] = a[..., src[0], src[1]]
    return out


def ref_sample(a: np.ndarray, r: float, c: float, wrap: bool) -> np.ndarray:
    """Bilinear value of ``a`` (..., H, W) at row ``r``, column ``c``: zero outside, or periodic."""
    h, w = a.shape[-2:]
    r0, c0 = math.floor(r), math.floor(c)
    fr, fc = r - r0, c - c0
    total = np.zeros(a.shape[:-2])
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            rr, cc = r0 + dr, c0 + dc
            if wrap:
                rr, cc = rr % h, cc % w
            elif not (0 <= rr < h and 0 <= cc < w):
                continue
            total = total + wr * wc * a[..., rr, cc]
    return total


def ref_rotate(a: np.ndarray, angle_deg: float) -> np.ndarray:
    """Counter-clockwise about the centre: a point at (x right, y up) from the centre goes to its
    rotation by the angle, so output pixel (i, j) comes from the inverse rotation of its position."""
    h, w = a.shape[-2:]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = math.radians(angle_deg)
    out = np.zeros_like(a)
    for i in range(h):
        for j in range(w):
            x, y_up = j - cx, -(i - cy)
            xs = x * math.cos(-t) - y_up * math.sin(-t)
            ys = x * math.sin(-t) + y_up * math.cos(-t)
            out[..., i, j] = ref_sample(a, cy - ys, cx + xs, wrap=False)
    return out


def ref_bilinear_shift(a: np.ndarray, oy: float, ox: float, wrap: bool) -> np.ndarray:
    """out(i, j) = in(i - oy, j - ox), bilinear."""
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    for i in range(h):
        for j in range(w):
            out[..., i, j] = ref_sample(a, i - oy, j - ox, wrap)
    return out


def ref_fourier_shift(a: np.ndarray, t: float, axis: int) -> np.ndarray:
    """Band-limited circular shift by ``t`` along ``axis`` with the full complex DFT; the Nyquist bin of
    an even length gets the mean of its two phases, cos(pi t)."""
    n = a.shape[axis]
    k = np.fft.fftfreq(n) * n
    phase = np.exp(-2j * np.pi * k * t / n)
    if n % 2 == 0:
        phase[n // 2] = np.cos(np.pi * t)
    shape = [1] * a.ndim
    shape[axis] = n
    out = np.fft.ifft(np.fft.fft(a, axis=axis) * phase.reshape(shape), axis=axis)
    assert np.abs(out.imag).max() < 1e-12  # a real image stays real
    return out.real


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


# -- the transforms -------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_is_the_pixel_permutation(k):
    x = _images()
    expected = _np(x)
    for _ in range(k):
        expected = ref_rot90_once(expected)
    out = Rotation90().act(x, k)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(_np(out), expected)


@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
def test_flip_is_the_pixel_permutation(axis):
    x = _images(h=7, w=10)
    np.testing.assert_array_equal(_np(Flip().act(x, axis)), ref_flip(_np(x), axis))


@pytest.mark.parametrize("angle", [-40.0, 17.5, 30.0])
def test_rotation_matches_a_bilinear_reference(angle):
    x = _images(h=9, w=11)
    np.testing.assert_allclose(_np(Rotation().act(x, angle)), ref_rotate(_np(x), angle), atol=TOL32)


def test_rotation_by_90_degrees_is_rot90_in_the_interior():
    x = _images(h=10, w=10)
    by_angle = _np(Rotation(max_angle=90, step=90).act(x, 90.0))
    quarter = ref_rot90_once(_np(x))
    np.testing.assert_allclose(by_angle[..., 1:-1, 1:-1], quarter[..., 1:-1, 1:-1], atol=TOL32)
    # the other way round is the inverse turn
    back = _np(Rotation(max_angle=90, step=90).act(x, -90.0))
    three = ref_rot90_once(ref_rot90_once(quarter))
    np.testing.assert_allclose(back[..., 1:-1, 1:-1], three[..., 1:-1, 1:-1], atol=TOL32)


@pytest.mark.parametrize("mode", ["crop", "roll"])
@pytest.mark.parametrize("offsets", [(0.0, 0.375), (0.625, 0.0), (-0.25, 1.5), (0.0, -2.0)])
def test_bilinear_subpixel_matches_the_reference(mode, offsets):
    x = _images(h=8, w=9)
    fam = SubpixelTranslation(max_offset=2, step=0.125, axes="both", method="bilinear", mode=mode)
    out = _np(fam.act(x, offsets))
    np.testing.assert_allclose(out, ref_bilinear_shift(_np(x), *offsets, wrap=mode == "roll"), atol=TOL32)


@pytest.mark.parametrize("n", [8, 9])  # even (a Nyquist bin) and odd lengths
@pytest.mark.parametrize("t", [0.25, 0.5, -0.75, 1.3])
def test_fourier_subpixel_matches_the_complex_dft_reference(n, t):
    x = _images(h=n, w=n + 1)
    fam = SubpixelTranslation(max_offset=2, step=0.05, method="fourier", mode="roll")
    np.testing.assert_allclose(_np(fam.act(x, ("x", t))), ref_fourier_shift(_np(x), t, axis=-1), atol=TOL32)
    np.testing.assert_allclose(_np(fam.act(x, ("y", t))), ref_fourier_shift(_np(x), t, axis=-2), atol=TOL32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offsets", [(0, 1), (2, 0), (-1, 3)])
def test_fourier_integer_offsets_equal_roll(dtype, offsets):
    x = _images(h=8, w=9).to(dtype)
    tol = TOL32 if dtype == torch.float32 else 1e-12
    fam = SubpixelTranslation(max_offset=3, step=1, axes="both", method="fourier", mode="roll")
    out = fam.act(x, tuple(float(o) for o in offsets))
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.roll(x, offsets, dims=(-2, -1)), atol=tol, rtol=0)


@pytest.mark.parametrize("n", [9, 8])
def test_fourier_half_pixel_twice_is_a_one_pixel_roll(n):
    """Odd lengths: exactly. Even lengths: up to the Nyquist component, which a half-pixel shift
    zeroes (cos(pi / 2) = 0: the price of keeping a real image real) where a roll flips its sign."""
    x = _images(h=n, w=n)
    fam = SubpixelTranslation(max_offset=1, step=0.5, method="fourier", mode="roll")
    for axis, dims, dim in (("x", (0, 1), -1), ("y", (1, 0), -2)):
        twice = _np(fam.act(fam.act(x, (axis, 0.5)), (axis, 0.5)))
        rolled = _np(torch.roll(x, dims, dims=(-2, -1)))
        if n % 2 == 0:
            sign = np.array([(-1.0) ** j for j in range(n)]).reshape([n] + [1] * (-1 - dim))
            nyquist = (rolled * sign).sum(axis=dim, keepdims=True) / n * sign
            assert np.abs(nyquist).max() > 1e-3  # the test image has a Nyquist component to lose
            rolled = rolled - nyquist
        np.testing.assert_allclose(twice, rolled, atol=TOL32)


@pytest.mark.parametrize("offsets", [(0, 1), (0, -2), (3, 0)])
def test_fourier_crop_integer_offsets_equal_the_crop_shift(offsets):
    x = _images(h=8, w=9)
    fam = SubpixelTranslation(max_offset=3, step=1, axes="both", method="fourier", mode="crop")
    out = _np(fam.act(x, tuple(float(o) for o in offsets)))
    np.testing.assert_allclose(out, ref_bilinear_shift(_np(x), *offsets, wrap=False), atol=TOL32)


def test_bilinear_roll_keeps_a_constant_image_constant():
    x = torch.full((2, 1, 7, 8), 0.3)
    fam = SubpixelTranslation(max_offset=1, step=0.125, axes="both", method="bilinear", mode="roll")
    for param in fam.params():
        torch.testing.assert_close(fam.act(x, param), x, **tol(torch.float32))  # interpolation weights sum to 1


# -- parameters, settings, errors -----------------------------------------------------------------
def test_parameters_leave_out_the_identity():
    assert Rotation90().params() == [1, 2, 3]
    assert Flip().params() == ["horizontal", "vertical"]
    assert Flip(axes=["vertical"]).params() == ["vertical"]
    assert Rotation().params() == [float(a) for a in range(-45, 50, 5) if a != 0]
    sub = SubpixelTranslation()
    assert sub.params()[:2] == [("x", 0.125), ("x", 0.25)] and len(sub.params()) == 16 and sub.dims == 1
    grid = SubpixelTranslation(max_offset=0.5, step=0.25, axes="both")
    assert grid.dims == 2 and len(grid.params()) == 24 and (0.0, 0.0) not in grid.params()
    assert SubpixelTranslation(max_offset=0.3, step=0.1).offsets() == [0.1, 0.2, 0.3]


def test_flags_and_settings_are_json():
    assert Rotation90().permutes_pixels and Flip().permutes_pixels
    assert not Rotation().permutes_pixels and not SubpixelTranslation().permutes_pixels
    assert not Rotation().exact_test
    for fam in (Rotation90(), Flip(), Rotation(), SubpixelTranslation(axes="both")):
        assert fam.name == fam.kind and fam.to_dict()["kind"] == fam.kind
        json.dumps(fam.to_dict())
        json.dumps([fam.param_to_json(p) for p in fam.params()])
    assert SubpixelTranslation().param_to_json(("y", 0.5)) == {"axis": "y", "offset": 0.5}
    assert SubpixelTranslation(axes="both").param_to_json((0.5, -0.25)) == [0.5, -0.25]
    assert Flip(axes="horizontal").axes == ("horizontal",)


def test_family_from_name_builds_every_family():
    assert family_from_name("rot90") == Rotation90()
    assert family_from_name("translation", max_shift=2) == Translation(max_shift=2)
    assert family_from_name("subpixel", method="fourier", mode="roll").method == "fourier"
    with pytest.raises(ValueError, match="'rot45'"):
        family_from_name("rot45")
    with pytest.raises(ValueError, match="'angle'"):
        family_from_name("rotation", angle=3)


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda: Rotation(max_angle=0), "max_angle=0"),
        (lambda: Rotation(max_angle=400), "max_angle=400"),
        (lambda: Rotation(step=-5), "step=-5"),
        (lambda: Rotation(max_angle=10, step=20), "step=20"),
        (lambda: Rotation(step="5"), "'5'"),
        (lambda: Flip(axes=("diagonal",)), "'diagonal'"),
        (lambda: Flip(axes=()), "axes=()"),
        (lambda: SubpixelTranslation(max_offset=-1), "max_offset=-1"),
        (lambda: SubpixelTranslation(step=0), "step=0"),
        (lambda: SubpixelTranslation(method="cubic"), "'cubic'"),
        (lambda: SubpixelTranslation(mode="wrap"), "'wrap'"),
        (lambda: SubpixelTranslation(axes="z"), "'z'"),
        (lambda: Rotation90(name=""), "name=''"),
    ],
)
def test_bad_arguments_name_the_value(make, shown):
    with pytest.raises(ValueError) as err:
        make()
    assert shown in str(err.value) and ("use" in str(err.value))


def test_image_size_checks_name_the_problem():
    with pytest.raises(ValueError, match="square"):
        Rotation90().check_image_size(8, 10)
    with pytest.raises(ValueError, match="max_offset=5"):
        SubpixelTranslation(max_offset=5, step=1).check_image_size(5, 8)
    SubpixelTranslation(max_offset=5, step=1, axes="x").check_image_size(5, 8)  # along the 8 columns only
    with pytest.raises(ValueError, match="max_offset=5.*use at most 4"):
        SubpixelTranslation(max_offset=5, step=1, axes="y").check_image_size(5, 8)
    Flip().check_image_size(8, 10)


# -- where the map action is defined: the symmetric-grid condition against the truth ---------------
def _one_conv(kernel: int, stride: int, padding: int) -> nn.Module:
    conv = nn.Conv2d(1, 3, kernel, stride=stride, padding=padding)
    with torch.no_grad():  # left-right symmetric kernels: the layer commutes with the horizontal flip
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return nn.Sequential(conv)


@pytest.mark.parametrize(
    "size, kernel, stride, padding",
    [(12, 3, 1, 0), (12, 3, 1, 1), (12, 3, 2, 1), (13, 3, 2, 1), (12, 4, 2, 1), (11, 3, 2, 0), (12, 3, 2, 0)],
)
def test_the_symmetric_grid_condition_decides_whether_a_flip_acts_on_the_map(size, kernel, stride, padding):
    torch.manual_seed(0)
    net = _one_conv(kernel, stride, padding).double()
    geo = infer_geometry(net, [Layer("0", "0")], (1, size, size))["0"]
    x = torch.rand(2, 1, size, size, dtype=torch.float64)
    truth = net(x.flip(-1))
    # the map action a flip would have if the grid were symmetric; the condition says when it is
    commutes = torch.allclose(truth, net(x).flip(-1), atol=1e-12, rtol=0)
    fam = Flip(axes=("horizontal",))
    problem = grid_asymmetry(geo, (size, size), axis=1)
    assert (problem is None) == commutes, (geo, problem)
    expected = fam.map_action(net(x), "horizontal", geo, (size, size))
    if commutes:
        assert expected.region is None  # the whole map
        torch.testing.assert_close(expected.expected, truth, atol=1e-12, rtol=0)
    else:
        assert expected is None and "not symmetric" in fam.map_action_note(geo, (size, size))
        assert f"H - 1 = {size - 1}" in problem


def test_docstring_examples_run():
    import doctest

    from shiftprobe.probe import families

    result = doctest.testmod(families)
    assert result.failed == 0 and result.attempted > 0
