"""Issue 8's measurement defects, each a test that failed before the engine redesign.

Roll mode on a non-circular network, NaN at shifts with no overlap, the two-shift draws of the axis
pattern, a seeded random subset, half precision on the CPU, TF32 restored.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.engine import exact_float32, subset_indices
from shiftprobe.probe.measure import measure, measure_family
from shiftprobe.probe.metrics import sum_dtype
from shiftprobe.probe.translation import Translation


def _images(n=12, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, size, size, generator=g) * 255).to(torch.uint8)


@pytest.fixture(scope="module")
def lab():
    torch.manual_seed(0)
    return LabCNN().eval()


def test_roll_mode_on_the_lab_net_is_exact_where_certified(lab):
    """Item 1: valid convolutions under roll are exact on the overlap region (not the whole map)."""
    res = measure_family(lab, _images(), None, Translation(4, "roll"), layers=["conv1", "conv2", "fc1"])
    assert not res["geometry"]["conv1"]["circular"]
    for entry in res["groups"]["param"]:
        dy, dx = entry["param"]
        assert entry["conv1"]["aligned_rel_max"] < 1e-5, entry
        if dy % 2 == 0 and dx % 2 == 0:
            assert entry["conv2"]["aligned_rel_max"] < 1e-5, entry
        else:
            assert entry["conv2"]["aligned_rel"] is None
    assert res["exact"]["conv1"]["all"] and len(res["exact"]["conv2"]["exact_params"]) == 25


def test_large_axis_shifts_leave_no_nan_and_count_no_overlap(lab):
    """Item 2: shifts that push every certified position out are counted, not averaged as NaN."""
    res = measure_family(lab, _images(6), None, Translation(17, "crop", "axis"), layers=["conv2", "fc1"])
    summary = res["summary"]["conv2"]
    assert summary["nearest_aligned_rel"] is not None and math.isfinite(summary["nearest_aligned_rel"])
    assert summary["aligned_rel"] is not None and math.isfinite(summary["aligned_rel"])
    far = [e for e in res["groups"]["param"] if abs(e["param"][1]) >= 16]
    assert far and all(e["conv2"].get("nearest_aligned_rel_no_overlap") == 6 for e in far)
    assert all(e["conv2"]["nearest_aligned_rel"] is None for e in far)
    # "the stride does not divide the shift" stays distinct: null without a no-overlap count
    odd = next(e for e in res["groups"]["param"] if e["param"][1] == 1)
    assert odd["conv2"]["aligned_rel"] is None and "aligned_rel_no_overlap" not in odd["conv2"]


def test_axis_pattern_draws_two_shifts_from_the_axis():
    """Item 3: the two-shift consistency draws follow the pattern (dy = 0 for axis)."""
    def draws(pattern):
        plan = Translation(4, "crop", pattern, 3).plan(500, (28, 28))
        return (plan.param_values(d) for d in plan.draws)

    a, b = draws("axis")
    assert (a[:, 0] == 0).all() and (b[:, 0] == 0).all()
    assert a[:, 1].abs().max() == 4 and len(set(a[:, 1].tolist())) == 9
    ga, _ = draws("grid")
    assert (ga[:, 0] != 0).any()
    ra, rb = draws("random")
    assert ((ra != 0).any(dim=1)).all() and ((rb != 0).any(dim=1)).all()


def test_max_images_is_a_seeded_random_subset():
    """Item 5: not the first N images (MNIST's halves come from different writers)."""
    idx = subset_indices(10000, 100, seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert idx.max() >= 5000 and idx.min() < 5000
    assert torch.equal(idx, subset_indices(10000, 100, seed=0))
    assert not torch.equal(idx, subset_indices(10000, 100, seed=1))
    assert subset_indices(50, 100, seed=0) is None


def test_measure_states_its_subset(lab):
    images = _images(20)
    res = measure(lab, images, layers=["fc1"], transform=Translation(max_shift=1), max_images=8)
    assert res["subset"] == {"n_images": 8, "of": 20, "seed": 0, "how": "seeded random subset"}
    assert res["families"]["translation"]["n_images"] == 8


def test_sums_are_float32_only_where_float64_is_missing():
    """Item 11: MPS has no float64; everything else sums in float64."""
    assert sum_dtype("cpu") == torch.float64
    assert sum_dtype("mps") == torch.float32
    assert sum_dtype("cuda") == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_networks_are_measured_with_a_wider_tolerance(lab, dtype):
    """Item 12: a bf16 / fp16 network is measured in its own dtype, with a dtype-aware 'exact'."""
    import copy

    net = copy.deepcopy(lab).to(dtype)
    res = measure_family(net, _images(6), torch.zeros(6, dtype=torch.long), Translation(2))
    assert res["precision"]["dtype"] == str(dtype).replace("torch.", "")
    tol = res["precision"]["exact_tol"]
    assert tol > 1e-5
    for entry in res["groups"]["param"]:
        assert entry["conv1"]["aligned_rel_max"] < tol
    assert res["exact"]["conv1"]["all"]


def test_tf32_is_off_while_measuring_and_restored_after(lab):
    """Item 13: TF32 would make 'exact' meaningless; the user's settings come back afterwards."""
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                         torch.get_float32_matmul_precision()))
            return x

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        net = nn.Sequential(Spy(), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 10 * 10, 3))
        measure(net, _images(4, 12), layers=["1", "3"], transform=Translation(max_shift=1))
        assert seen and all(s == (False, False, "highest") for s in seen)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError), exact_float32():
            raise RuntimeError("restored even on error")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_exact_on_cuda_with_tf32_requested(lab):
    import copy

    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    net = copy.deepcopy(lab).cuda()
    res = measure_family(net, _images(32), None, Translation(4), fast_path=False)
    assert all(e["conv1"]["aligned_rel_max"] < 1e-5 for e in res["groups"]["param"])


def test_geometry_is_inferred_inside_inference_mode(lab):
    """Lightning tests under torch.inference_mode(): the exact test must not silently vanish there."""
    with torch.inference_mode():
        res = measure_family(lab, _images(4), None, Translation(2), layers=["conv1", "conv2"])
    assert [res["geometry"][n]["stride"] for n in ("conv1", "conv2")] == [[1, 1], [2, 2]]
    assert res["summary"]["conv2"]["aligned_rel"] is not None


def test_the_estimate_counts_the_batches_that_run_at_once():
    from shiftprobe.probe.engine import estimated_seconds

    assert estimated_seconds(0.5, 157, 1) == pytest.approx(78.5)
    assert estimated_seconds(0.5, 157, 2) == pytest.approx(0.5 * 79)  # two batches per round
    assert estimated_seconds(2.0, 3, 8) == pytest.approx(2.0)  # fewer batches than threads: one round


def test_a_long_measurement_announces_its_estimated_time(lab, caplog, monkeypatch):
    """Item 2: a grid that will take long says so in one line, from the first batch's time."""
    import shiftprobe.probe.engine as engine

    monkeypatch.setattr(engine, "ANNOUNCE_AFTER_S", 0.0)
    with caplog.at_level("INFO", logger="shiftprobe.probe.engine"):
        measure_family(lab, _images(8), None, Translation(3), layers=["fc1"], batch_size=4, desc="probe")
    lines = [r.getMessage() for r in caplog.records if "estimated from the first batch" in r.getMessage()]
    assert len(lines) == 1 and "8 images x 49 parameters = 392 pairs" in lines[0]
