"""Where the engine relies on bit-identity, and what it does when that does not hold (issue 18).

* The crop fast path (``PairComputer.window_layers``) claims exact zeros (``aligned_rel``, ``dist`` at the zero
  shift) for a window layer only when the zero shift's window of the padded pass is ``f(x)`` bit for bit.
  Otherwise (another kernel for the padded canvas, a perturbed map) that layer's figures come from the
  shifted maps themselves, as on the plain path: equal to the plain path to float32 precision, and no
  exactness claimed that the numbers do not have (the exact verdict then comes from the tolerance).
* ``certified_sorted`` skips the sorting of a pair whose certified maps are identical to the bit
  (``aligned_rel == 0``: sorting is a contraction, so its sorted value is 0 too); a pair that differs by
  one ulp is sorted, and its value is at most its ``aligned_rel``.
* ``pair_metrics`` sets ``cos`` to exactly 1 where ``dist == 0``; two maps one ulp apart get the computed
  cosine, within float32 of 1 and never above it.

Positive controls are exact by construction on every CPU: dyadic pixels and weights (every partial sum
of a convolution is representable, so any summation order gives the same bits), a 1x1 convolution by
weights 1 and 1/2. They are skipped under ``SHIFTPROBE_KERNEL_JITTER=1``, which perturbs exact sums too.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from kernel_jitter import ENV as KERNEL_JITTER_ENV
from kernel_jitter import kernel_jitter
from tolerances import approx, assert_same_figures
from torch import nn

import shiftprobe.probe.pairs as pairs
from shiftprobe.models.crop_windows import CropWindows
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.metrics import pair_metrics
from shiftprobe.probe.thresholds import exact_tolerance
from shiftprobe.probe.translation import Translation

N = 6
EXACT_TOL = exact_tolerance(torch.float32)
exact_arithmetic = pytest.mark.skipif(
    os.environ.get(KERNEL_JITTER_ENV) == "1", reason="the kernel jitter perturbs exact (dyadic) sums too"
)


def _dyadic_images(n: int = N, seed: int = 0) -> torch.Tensor:
    """Float pixels k / 256 in [0, 1) (8 bits), a blank border as in MNIST."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 256
    x[..., :4, :] = 0
    return x


def _dyadic_lab() -> LabCNN:
    """The lab CNN with conv1's weights and bias rounded to sixteenths: every partial sum of conv1 on
    dyadic pixels is an exact float32, whatever the kernel's order."""
    torch.manual_seed(0)
    net = LabCNN().eval()
    with torch.no_grad():
        net.conv1.weight.copy_(torch.round(net.conv1.weight * 16) / 16)
        net.conv1.bias.copy_(torch.round(net.conv1.bias * 16) / 16)
    return net


def _spy_window_layers(monkeypatch) -> list[set]:
    """Records the set ``PairComputer.window_layers`` returns for every batch."""
    chosen, real = [], pairs.PairComputer.window_layers

    def spy(self, base, basis):
        chosen.append(real(self, base, basis))
        return chosen[-1]

    monkeypatch.setattr(pairs.PairComputer, "window_layers", spy)
    return chosen


def _perturb_windows(monkeypatch, net, off) -> None:
    """The network's crop windows with every window ``w`` replaced by ``off(w)``."""
    real = net.crop_windows()

    class Off(CropWindows):
        def window(self, *args):
            return off(super().window(*args))

    monkeypatch.setattr(net, "crop_windows", lambda: Off(**{k: getattr(real, k) for k in real.__dataclass_fields__}))


def _by_shift(res: dict) -> dict:
    return {tuple(e["param"]): e for e in res["groups"]["param"]}


@exact_arithmetic
def test_window_path_claims_exact_zeros_where_the_window_is_f_x_bit_for_bit(monkeypatch):
    """The positive control: conv1's window of the padded pass is f(x) bit for bit (dyadic sums), so the
    fast path takes it, and its zeros are exact; the plain path agrees."""
    chosen = _spy_window_layers(monkeypatch)
    net, x = _dyadic_lab(), _dyadic_images()
    plan = Translation(2)
    fast = measure_family(net, x, None, plan, layers=["conv1"], batch_size=4, workers=1)
    assert fast["fast_path"] is True and chosen == [{"conv1"}, {"conv1"}]
    for shift, entry in _by_shift(fast).items():
        assert entry["conv1"]["aligned_rel"] == 0.0 and entry["conv1"]["aligned_rel_max"] == 0.0, shift
    zero = _by_shift(fast)[0, 0]["conv1"]
    assert zero["dist"] == 0.0 and zero["rel"] == 0.0 and zero["cos"] == 1.0
    plain = measure_family(net, x, None, plan, layers=["conv1"], batch_size=4, workers=1, fast_path=False)
    assert_same_figures(plain, fast, torch.float32, skip=("seconds", "fast_path"))


@pytest.mark.parametrize("accelerator", [False, True], ids=["cpu", "accelerator path"])
def test_window_path_falls_back_to_the_shifted_maps_when_the_window_is_not_f_x(monkeypatch, accelerator):
    """Every window of the padded pass one ulp off f(x) (what another kernel for the padded canvas does):
    the bit check fails on every batch (on an accelerator it is made once and kept), the window layers'
    figures come from the shifted maps, equal to the plain path's to float32, and nothing is claimed
    exact that is not: aligned_rel and dist at the zero shift are the ulp, not 0; the exact verdicts
    come from the tolerance, as on the plain path."""
    chosen = _spy_window_layers(monkeypatch)
    monkeypatch.setattr(pairs, "on_accelerator", lambda device: accelerator)
    net, x = _dyadic_lab(), _dyadic_images()
    _perturb_windows(monkeypatch, net, lambda w: torch.nextafter(w, torch.tensor(math.inf)))
    plan = Translation(2)
    labels = torch.arange(N) % 10
    fast = measure_family(net, x, labels, plan, batch_size=4, workers=1)
    assert fast["fast_path"] is True and chosen == [set(), set()]
    plain = measure_family(net, x, labels, plan, batch_size=4, workers=1, fast_path=False)
    assert_same_figures(plain, fast, torch.float32, skip=("seconds", "fast_path"))
    shifts = _by_shift(fast)
    zero = shifts[0, 0]
    for layer in ("conv1", "conv2"):
        assert 0 < zero[layer]["aligned_rel"] < EXACT_TOL and 0 < zero[layer]["dist"], layer
        assert zero[layer]["cos"] == approx(1, unit=True) and zero[layer]["cos"] <= 1
    assert all(0 < shifts[s]["conv2"]["aligned_rel_max"] < EXACT_TOL for s in shifts if s[0] % 2 == s[1] % 2 == 0)
    # the exact verdicts: conv1 at every shift, conv2 at the shifts its stride divides, as on the plain path
    assert fast["exact"] == plain["exact"] and fast["exact"]["conv1"]["all"]
    assert fast["exact"]["conv2"]["exact_params"] == [list(s) for s in shifts if s[0] % 2 == s[1] % 2 == 0]


def _pointwise() -> nn.Module:
    """A 1x1 convolution by weights 1 and 1/2, no bias: an exact copy (and half) of the pixels."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1))
        net[0].bias.zero_()
    return net


def _certified(res: dict) -> list[tuple[float, float]]:
    """``(sorted_rel_certified, aligned_rel)`` of layer ``0`` at every shift."""
    return [(e["0"]["sorted_rel_certified"], e["0"]["aligned_rel"]) for e in res["groups"]["param"]]


@exact_arithmetic
def test_sorting_is_skipped_only_for_pairs_exact_to_the_bit(monkeypatch):
    """Exact copies: every certified map equals f(x)'s to the bit, every pair is skipped with 0. The same
    network one ulp off between batch sizes (``kernel_jitter``): every pair is sorted, its value is not
    0 and at most its aligned_rel; the accelerator's branch-free path (sort all, keep where not exact)
    gives the same figures."""
    x = _dyadic_images(seed=1)
    plan = Translation(2)
    exact = measure_family(_pointwise(), x, None, plan, layers=["0"], workers=1)
    assert all(s == 0.0 and a == 0.0 for s, a in _certified(exact))
    with kernel_jitter():
        cpu = measure_family(_pointwise(), x, None, plan, layers=["0"], workers=1)
        monkeypatch.setattr(pairs, "on_accelerator", lambda device: True)
        branch_free = measure_family(_pointwise(), x, None, plan, layers=["0"], workers=1)
    for s, a in _certified(cpu):
        assert 0 < s <= a * (1 + 1e-6) and a < EXACT_TOL
    assert_same_figures(branch_free, cpu, torch.float32)


def test_cosine_is_one_exactly_only_for_identical_maps():
    """``cos`` is set to 1 where ``dist == 0``; one ulp apart it is computed: within float32 of 1, never above."""
    f = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    same = pair_metrics(f, f.clone())
    assert torch.all(same["cos"] == 1) and torch.all(same["dist"] == 0)
    apart = pair_metrics(f, torch.nextafter(f, torch.full_like(f, math.inf)))
    assert torch.all(apart["dist"] > 0) and torch.all(apart["cos"] <= 1)
    assert apart["cos"].tolist() == approx([1.0] * 5, torch.float32, unit=True)


@exact_arithmetic
def test_accelerator_checks_the_window_once_per_batch_shape(monkeypatch):
    """On an accelerator the bit check (a host read) is kept for the batches of the shape it was made on,
    not for the whole measurement: the kernels are chosen by shape, so the last, smaller batch is checked
    again. Here only its windows are one ulp off: it falls back, the full batches keep the window path,
    and its images' zero shift is not claimed exact."""
    chosen = _spy_window_layers(monkeypatch)
    monkeypatch.setattr(pairs, "on_accelerator", lambda device: True)
    net, x = _dyadic_lab(), _dyadic_images()
    _perturb_windows(monkeypatch, net, lambda w: torch.nextafter(w, torch.full_like(w, math.inf)) if len(w) == 2 else w)
    res = measure_family(net, x, None, Translation(1), layers=["conv1"], batch_size=4, workers=1)
    assert chosen == [{"conv1"}, set()]
    zero = _by_shift(res)[0, 0]["conv1"]
    assert 0 < zero["dist"] and 0 < zero["aligned_rel"] < EXACT_TOL
