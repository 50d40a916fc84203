"""``shiftprobe.testing.assert_equivariant``: positive controls pass and negative controls fail, in float32
and float64, on the certified positions only; the tolerance follows the dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shiftprobe
from shiftprobe.testing import assert_equivariant

DTYPES = [torch.float32, torch.float64]


def _conv(dtype, symmetric: bool = False) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3).to(dtype)
    if symmetric:  # the average of the four quarter turns of the kernel (exactly: dyadic weights)
        with torch.no_grad():
            w = torch.round(conv.weight * 64) / 64
            conv.weight.copy_(sum(torch.rot90(w, k, dims=(-2, -1)) for k in range(4)) / 4)
    return nn.Sequential(conv)


class Positional(nn.Module):
    """A convolution times a fixed position-dependent map: equivariant to no shift."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.register_buffer("where", 1 + torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1)))
        self.out = nn.Identity()

    def forward(self, x):
        f = self.conv(x)
        return self.out(f * self.where[:, : f.shape[-2], : f.shape[-1]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_valid_convolution_is_equivariant_to_crop_shifts_on_its_certified_region(dtype):
    worst = assert_equivariant(_conv(dtype), shiftprobe.Translation(max_shift=2), "0", image_shape=(1, 12, 12))
    assert len(worst) == 25 and max(worst.values()) < (1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_position_dependent_layer_fails(dtype):
    net = Positional().to(dtype)
    with pytest.raises(AssertionError, match=r"layer 'out' is not equivariant to translation \[.*max \|difference\|"):
        assert_equivariant(net, shiftprobe.Translation(max_shift=1), "out", image_shape=(1, 12, 12))
    assert_equivariant(net, shiftprobe.Translation(max_shift=1), "out", atol=10.0, image_shape=(1, 12, 12))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rot90_positive_and_negative_controls(dtype):
    assert_equivariant(_conv(dtype, symmetric=True), shiftprobe.Rotation90(), "0", image_shape=(1, 12, 12))
    with pytest.raises(AssertionError, match=r"rot90 \d: max \|difference\| 0\."):
        assert_equivariant(_conv(dtype), shiftprobe.Rotation90(), "0", image_shape=(1, 12, 12))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_vector_layer_is_checked_for_invariance(dtype):
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten()).to(dtype)
    assert_equivariant(pooled, shiftprobe.Translation(max_shift=2, mode="roll"), "2", image_shape=(1, 10, 10))
    flat = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten()).to(dtype)
    with pytest.raises(AssertionError):
        assert_equivariant(flat, shiftprobe.Translation(max_shift=1, mode="roll"), "1", image_shape=(1, 10, 10))


def test_only_parameters_with_a_map_action_are_checked():
    """A stride-2 layer: the odd shifts have no map action (the stride does not divide them), so only the
    even ones are checked; a flip on an asymmetric sampling grid has none at all: refused with the reason."""
    torch.manual_seed(0)
    strided = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1))
    worst = assert_equivariant(strided, shiftprobe.Translation(max_shift=2), "0", image_shape=(1, 12, 12))
    assert sorted(worst) == sorted(str([dy, dx]) for dy in (-2, 0, 2) for dx in (-2, 0, 2))
    with pytest.raises(ValueError, match="not symmetric about the image centre"):
        assert_equivariant(strided, "flip", "0", image_shape=(1, 12, 12))


def test_the_tolerance_follows_the_dtype():
    """One ulp of float32 noise on top of an exact layer: within float32's tolerance, far outside float64's."""
    torch.manual_seed(0)
    conv = _conv(torch.float64)

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = conv, nn.Identity()

        def forward(self, x):
            f = self.conv(x)
            return self.out(f + 1e-7 * torch.randn(f.shape, dtype=f.dtype, generator=torch.Generator().manual_seed(9)))

    with pytest.raises(AssertionError):
        assert_equivariant(Noisy(), shiftprobe.Translation(max_shift=1), "out", image_shape=(1, 8, 8))
    assert_equivariant(Noisy(), shiftprobe.Translation(max_shift=1), "out", atol=1e-5, image_shape=(1, 8, 8))
