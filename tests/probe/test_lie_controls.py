"""Equivariant networks as positive controls for the rotation Lie derivative (issue 21, item 6).

escnn (a steerable-CNN library) does not install here: its dependency py3nj needs a Fortran compiler.
The steerable network is therefore built by hand, as escnn builds one between scalar (trivial) fields:
every kernel is a sum of isotropic Gaussians of the radius, so each layer commutes with rotations in
the continuum, and on the pixel grid exactly with quarter turns (the sampled kernel is symmetric under
them, "same" zero padding is too). After a ReLU and a global mean the output is invariant:

* to ``rot90``: exactly (the family engine's figures, float64 round-off);
* to infinitesimal rotations: approximately, to the discretisation error of the sampled kernels and of
  the central differences, which shrinks on smoother images;
* an ordinary CNN of the same shape (free kernels) is clearly not invariant (> 100 times larger), and
  ``rot_pool`` (the lab CNN averaged over the four quarter turns) is exactly rot90-invariant but not
  invariant to small rotations: averaging over a finite group does not make a network continuously
  invariant.
"""

from __future__ import annotations

import math

import pytest
import torch
from lie_reference import strokes
from torch import nn

import shiftprobe
from shiftprobe.models import RotPooledCNN
from shiftprobe.probe.families import Rotation90


def radial_kernels(c_out: int, c_in: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``(c_out, c_in, size, size)`` kernels, each a random mix of three isotropic Gaussians."""
    r = size // 2
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    widths = torch.tensor([0.6, 1.0, 1.6])
    basis = torch.exp(-(xx**2 + yy**2)[None] / (2 * widths[:, None, None] ** 2))
    mix = torch.randn(c_out, c_in, len(widths), generator=gen) / math.sqrt(c_in * len(widths))
    return torch.einsum("oib,bhw->oihw", mix, basis)


class ScalarFieldCNN(nn.Module):
    """Two 5x5 convolutions, ReLU, a global mean and a linear head (no biases). ``isotropic``: the
    kernels are radial (a steerable CNN on scalar fields); else free (an ordinary CNN)."""

    def __init__(self, isotropic: bool = True, width: int = 8, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(1, width, 5, padding=2, bias=False)
        self.conv2 = nn.Conv2d(width, width, 5, padding=2, bias=False)
        self.head = nn.Linear(width, 4, bias=False)
        with torch.no_grad():
            if isotropic:
                self.conv1.weight.copy_(radial_kernels(width, 1, 5, gen))
                self.conv2.weight.copy_(radial_kernels(width, width, 5, gen))
            else:
                self.conv1.weight.copy_(torch.randn(width, 1, 5, 5, generator=gen) / 5)
                self.conv2.weight.copy_(
                    torch.randn(width, width, 5, 5, generator=gen) / (5 * math.sqrt(width))
                )

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean(dim=(-2, -1)))


def _rotation(net, x):
    return shiftprobe.lie_derivative(net, x, layers=["output"], generators=["rotate"])["output"]["rotate"][
        "rel"
    ]


@pytest.fixture(scope="module")
def images():
    return strokes(6, size=36)  # smooth strokes, (nearly) 0 at the border


def test_a_steerable_cnn_is_exactly_rot90_invariant_and_nearly_rotation_invariant(images):
    net = ScalarFieldCNN().double().eval()
    section = shiftprobe.measure_family(net, images, None, Rotation90(), layers=["output"])
    for entry in section["groups"]["param"]:  # quarter turns 1, 2, 3
        assert entry["output"]["rel"] < 1e-12, entry["param"]
    steerable = _rotation(net, images)
    ordinary = _rotation(ScalarFieldCNN(isotropic=False).double().eval(), images)
    assert steerable < 1e-3 and ordinary > 2e-2 and ordinary > 100 * steerable
    # a discretisation error: on smoother strokes it is smaller still
    smoother = _rotation(net, strokes(6, size=36, width=2.0, length=3.0))
    assert smoother < steerable / 4


def test_rot_pool_is_rot90_exact_but_not_rotation_invariant(images):
    torch.manual_seed(0)
    net = RotPooledCNN(image_size=36).double().eval()
    section = shiftprobe.measure_family(net, images, None, Rotation90(), layers=["logits"])
    for entry in section["groups"]["param"]:
        assert entry["logits"]["rel"] < 1e-12, entry["param"]
    pooled = shiftprobe.lie_derivative(net, images, layers=["logits"], generators=["rotate"])["logits"][
        "rotate"
    ]["rel"]
    assert pooled > 100 * _rotation(ScalarFieldCNN().double().eval(), images)
