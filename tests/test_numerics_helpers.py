"""The tests' numerics helpers: ``tests/kernel_jitter.py`` behaves like another CPU's kernels (same bits
for the same call, other bits for another batch shape, a few ulps at most) and ``tests/tolerances.py``
accepts round-off but not a wrong figure."""

import pytest
import torch
import torch.nn.functional as F
from kernel_jitter import ULPS, kernel_jitter
from tolerances import approx, assert_same_figures, tol


def test_kernel_jitter_is_deterministic_per_shape_and_a_few_ulps():
    g = torch.Generator().manual_seed(0)
    x, w, m = torch.rand(3, 2, 9, 9, generator=g), torch.randn(4, 2, 3, 3, generator=g), torch.randn(5, 162, generator=g)
    plain, plain_linear = F.conv2d(x, w), F.linear(x.flatten(1), m)
    with kernel_jitter():
        once, again = F.conv2d(x, w), F.conv2d(x, w)
        in_a_larger_batch = F.conv2d(torch.cat([x, x]), w)[:3]
        linear = F.linear(x.flatten(1), m)
    assert torch.equal(once, again)  # a kernel is deterministic
    assert not torch.equal(once, plain) and not torch.equal(once, in_a_larger_batch)
    assert not torch.equal(linear, plain_linear)
    eps = torch.finfo(torch.float32).eps
    assert ((once - plain).abs() <= (ULPS + 1) * eps * plain.abs()).all()  # k ulps, then rounded
    assert torch.equal(F.conv2d(x, w), plain) and torch.equal(F.linear(x.flatten(1), m), plain_linear)  # restored


def _results(score: float, dist: float) -> dict:
    return {"control": {"conv1": {"dist": 30.0}}, "shifts": [{"conv1": {"dist": dist, "invariance_score": score}}],
            "seconds": 1.0, "n": 3, "note": None}


def test_same_figures_accepts_round_off_and_refuses_a_wrong_figure():
    base = _results(0.99999, 0.0)
    assert_same_figures(base, _results(0.99999 + 3e-7, 2e-5))  # a zero distance within 1e-5 of the control's
    for wrong in (_results(0.999, 0.0), _results(0.99999, 1e-3)):
        with pytest.raises(AssertionError):
            assert_same_figures(base, wrong)
    with pytest.raises(AssertionError):
        assert_same_figures(base, {**base, "n": 4})  # integers exactly


def test_tolerances_follow_the_dtype():
    assert tol(torch.float32) == {"rtol": 1e-5, "atol": 1e-6} and tol(torch.float64)["rtol"] == 1e-9
    assert 0.9999988 == approx(1, torch.float32, unit=True) and 0.9999988 != approx(1, torch.float64, unit=True)
