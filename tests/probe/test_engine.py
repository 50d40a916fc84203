"""The measurement engine against an independent, loop-by-loop implementation of the definitions."""

import math

import pytest
import torch

from shiftprobe.accumulator import ShiftMetricAccumulator
from shiftprobe.measure import control_offset, measure, measure_results, two_shift_plan
from shiftprobe.metrics import pair_metrics, sort_channels, sorted_rel
from shiftprobe.models.lab import LabCNN
from shiftprobe.data.paired import PairedShiftDataset, ShiftPlan
from shiftprobe.results import build_results
from shiftprobe.shifts import shift_images

N = 24
LAYERS = ("conv1", "conv2", "fc1", "logits")


def _digits(n, seed=0):
    """uint8 28x28 'digits': bright random strokes in the middle, black borders like MNIST."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 28, 28)
    img[:, 6:22, 6:22] = torch.rand(n, 16, 16, generator=g)
    img = (img > 0.6).float() * torch.rand(n, 28, 28, generator=g)
    return (img * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def data():
    return _digits(N)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return LabCNN().eval()


def _brute_force(net, images, labels, plan, seed):
    """Per image, per shift, with plain loops, torch.sort and shift_images: the definitions as written."""
    x = images.unsqueeze(1).float() / 255
    n = len(x)
    k = control_offset(n, seed)
    with torch.no_grad():
        base = net.probe(x)
        ctrl = net.probe(x[(torch.arange(n) + k) % n])
        out = {"control": {}, "shifts": {}}
        for layer in LAYERS:
            f, c = base[layer].flatten(1).double(), ctrl[layer].flatten(1).double()
            out["control"][layer] = {"dist": (c - f).norm(dim=1).mean().item()}
            if layer in net.probe_strides:
                sf = torch.sort(base[layer].flatten(2), -1).values.double()
                sc = torch.sort(ctrl[layer].flatten(2), -1).values.double()
                out["control"][layer]["sorted_rel"] = ((sc - sf).flatten(1).norm(dim=1) / sf.flatten(1).norm(dim=1)).mean().item()
        for dy, dx in plan.shifts:
            shifted = net.probe(shift_images(x, dy, dx, plan.mode))
            entry = {}
            for layer in LAYERS:
                f, t = base[layer].flatten(1).double(), shifted[layer].flatten(1).double()
                d = (t - f).norm(dim=1)
                m = {
                    "cos": torch.nn.functional.cosine_similarity(f, t).mean().item(),
                    "dist": d.mean().item(),
                    "rel": (d / f.norm(dim=1)).mean().item(),
                }
                if layer in net.probe_strides:
                    r = net.probe_strides[layer]
                    sf = torch.sort(base[layer].flatten(2), -1).values.double().flatten(1)
                    st = torch.sort(shifted[layer].flatten(2), -1).values.double().flatten(1)
                    m["sorted_rel"] = ((st - sf).norm(dim=1) / sf.norm(dim=1)).mean().item()
                    if dy % r == 0 and dx % r == 0:
                        vals = []
                        for i in range(n):
                            fm, tm = base[layer][i].double(), shifted[layer][i].double()
                            h, w = fm.shape[-2:]
                            my, mx = dy // r, dx // r
                            diffs, refs = [], []
                            for a in range(h):
                                for b in range(w):
                                    sa, sb = a - my, b - mx  # source position of the shifted map
                                    if plan.mode == "roll":
                                        sa, sb = sa % h, sb % w
                                    elif not (0 <= sa < h and 0 <= sb < w):
                                        continue
                                    diffs.append(tm[:, a, b] - fm[:, sa, sb])
                                    refs.append(fm[:, sa, sb])
                            vals.append((torch.cat(diffs).norm() / torch.cat(refs).norm()).item())
                        m["aligned_rel"] = sum(vals) / n
                    else:
                        m["aligned_rel"] = None
                if layer == "logits":
                    p0, p1 = base[layer].argmax(1), shifted[layer].argmax(1)
                    m["consistency"] = (p0 == p1).double().mean().item()
                    m["shifted_acc"] = (p1 == labels).double().mean().item()
                entry[layer] = m
            out["shifts"][dy, dx] = entry
        a, b = two_shift_plan(n, plan.max_shift, plan.seed)
        la = torch.stack([net.probe(shift_images(x[i : i + 1], *a[i].tolist(), plan.mode))["logits"][0] for i in range(n)])
        lb = torch.stack([net.probe(shift_images(x[i : i + 1], *b[i].tolist(), plan.mode))["logits"][0] for i in range(n)])
        out["two_shift"] = (la.argmax(1) == lb.argmax(1)).double().mean().item()
        out["accuracy"] = (base["logits"].argmax(1) == labels).double().mean().item()
    return out


@pytest.mark.parametrize("mode,fast", [("crop", True), ("crop", False), ("roll", False)])
def test_engine_matches_definitions(net, data, mode, fast):
    images, labels = data
    plan = ShiftPlan.build(2, mode, "grid", seed=3, n_images=N)
    res = measure_results(net, images, labels, plan, control_seed=3, batch_size=10, pairs_per_chunk=30, fast_path=fast)
    ref = _brute_force(net, images, labels, plan, seed=3)
    assert res["accuracy"] == pytest.approx(ref["accuracy"])
    assert res["summary"]["logits"]["consistency_two_shifts"] == pytest.approx(ref["two_shift"])
    for layer in LAYERS:
        for key, value in ref["control"][layer].items():
            assert res["control"][layer][key] == pytest.approx(value, rel=1e-5, abs=1e-7)
    got = {(e["dy"], e["dx"]): e for e in res["shifts"]}
    assert set(got) == set(plan.shifts) and all(e["count"] == N for e in got.values())
    for s, entry in ref["shifts"].items():
        for layer, metrics in entry.items():
            for key, value in metrics.items():
                if value is None:
                    assert got[s][layer][key] is None
                else:
                    assert got[s][layer][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (s, layer, key)
            ctrl = ref["control"][layer]
            assert got[s][layer]["invariance_score"] == pytest.approx(1 - metrics["dist"] / ctrl["dist"], abs=1e-5)
            if "sorted_rel" in metrics:
                assert got[s][layer]["equivariance_score"] == pytest.approx(
                    1 - metrics["sorted_rel"] / ctrl["sorted_rel"], abs=1e-5
                )
    # crop mode: conv2 exact at even shifts, no alignment makes it exact at odd ones (random weights)
    for (dy, dx), entry in got.items() if mode == "crop" else ():
        conv2 = entry["conv2"]
        if dy % 2 == 0 and dx % 2 == 0:
            assert conv2["aligned_rel"] < 1e-5 and conv2["nearest_aligned_rel"] == conv2["aligned_rel"]
        else:
            assert conv2["aligned_rel"] is None and conv2["nearest_aligned_rel"] > 1e-2
        assert entry["conv1"]["aligned_rel"] < 1e-5
    # radial: pooled over the shifts of each radius
    for ring in res["radial"]:
        members = [s for s in plan.shifts if max(map(abs, s)) == ring["radius"]]
        assert ring["count"] == N * len(members)
        mean_dist = sum(ref["shifts"][s]["fc1"]["dist"] for s in members) / len(members)
        assert ring["fc1"]["dist"] == pytest.approx(mean_dist, rel=1e-5, abs=1e-6)


def test_fast_path_equals_generic_path(net, data):
    images, labels = data
    plan = ShiftPlan.build(3, "crop", "grid", seed=0, n_images=N)
    fast = measure_results(net, images, labels, plan, batch_size=7, fast_path=True)
    slow = measure_results(net, images, labels, plan, batch_size=16, fast_path=False)

    def compare(a, b, path=""):
        if isinstance(a, dict):
            for key in a:
                if key != "seconds":
                    compare(a[key], b[key], f"{path}/{key}")
        elif isinstance(a, list):
            for u, v in zip(a, b, strict=True):
                compare(u, v, path)
        elif isinstance(a, float):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-6), path
        else:
            assert a == b, path

    compare(fast, slow)


def test_zero_shift_gives_cos_one_rel_zero_scores_one(net, data):
    images, labels = data
    res = measure_results(net, images, labels, ShiftPlan.build(1, "crop", "grid", 0, N))
    zero = next(e for e in res["shifts"] if (e["dy"], e["dx"]) == (0, 0))
    for layer in LAYERS:
        assert zero[layer]["cos"] == pytest.approx(1, abs=1e-6)
        assert zero[layer]["rel"] == pytest.approx(0, abs=1e-6)
        assert zero[layer]["invariance_score"] == pytest.approx(1, abs=1e-6)
    for layer in ("conv1", "conv2"):
        assert zero[layer]["equivariance_score"] == pytest.approx(1, abs=1e-6)
        assert zero[layer]["aligned_rel"] == pytest.approx(0, abs=1e-6)
    assert zero["logits"]["consistency"] == 1.0


def test_control_as_pair_gives_score_zero(net, data):
    """Feeding the control pairs (x_i, x_{i+k}) in place of (x_i, T x_i) must score exactly 0."""
    images, _ = data
    x = images.unsqueeze(1).float() / 255
    k = control_offset(N, 0)
    xc = x[(torch.arange(N) + k) % N]
    with torch.no_grad():
        f, c = net.probe(x), net.probe(xc)
    acc = ShiftMetricAccumulator(9, LAYERS, ("conv1", "conv2"))
    control, pairs = {}, {}
    for layer in LAYERS:
        m = pair_metrics(f[layer].flatten(1), c[layer].flatten(1))
        for key in ("cos", "dist", "rel"):
            control[layer, key] = pairs[layer, key] = m[key]
        if layer in ("conv1", "conv2"):
            control[layer, "sorted_rel"] = pairs[layer, "sorted_rel"] = sorted_rel(sort_channels(f[layer]), sort_channels(c[layer]))
            pairs[layer, "aligned_rel"] = torch.full((N,), float("nan"))
    agree = (f["logits"].argmax(1) == c["logits"].argmax(1)).double()
    control["logits", "consistency"] = pairs["logits", "consistency"] = agree
    pairs["logits", "shifted_correct"] = agree
    acc.update(control=control, correct=torch.ones(N, dtype=torch.bool))
    acc.update(shift_ids=torch.full((N,), 8), pairs=pairs)  # shift (1, 1) in a max_shift=1 plan
    res = build_results(acc.compute(), ShiftPlan.build(1, "crop", "grid", 0, N), LAYERS, {"conv1": 1, "conv2": 2}, k)
    entry = res["shifts"][0]
    assert (entry["dy"], entry["dx"]) == (1, 1)
    for layer in LAYERS:
        assert entry[layer]["invariance_score"] == pytest.approx(0, abs=1e-12)
    for layer in ("conv1", "conv2"):
        assert entry[layer]["equivariance_score"] == pytest.approx(0, abs=1e-12)
        assert entry[layer]["aligned_rel"] is None


def test_rank_split_sums_to_single_process(net, data):
    """What DDP does: each rank measures its share, the sum-states add up to the single-process ones."""
    images, labels = data
    plan = ShiftPlan.build(2, "crop", "grid", 0, N)
    whole = measure(net, images, labels, plan, batch_size=5).compute()
    parts = [measure(net, images, labels, plan, batch_size=5, rank=r, world_size=3).compute() for r in range(3)]
    for key, value in whole.items():
        total = sum(p[key] for p in parts)
        assert torch.allclose(total, value, rtol=1e-6, atol=1e-5), key  # float32 features: batch-dependent rounding


def test_measurement_is_deterministic(net, data):
    images, labels = data
    plan = ShiftPlan.build(2, "crop", "random", 7, N)
    a = measure_results(net, images, labels, plan, control_seed=7)
    b = measure_results(net, images, labels, plan, control_seed=7)
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_random_pattern(net, data):
    images, labels = data
    plan = ShiftPlan.build(3, "crop", "random", 1, N)
    res = measure_results(net, images, labels, plan)
    assert sum(e["count"] for e in res["shifts"]) == N
    assert all((e["dy"], e["dx"]) != (0, 0) for e in res["shifts"])
    assert res["summary"]["count"] == N


def test_axis_pattern(net, data):
    images, labels = data
    res = measure_results(net, images, labels, ShiftPlan.build(2, "roll", "axis", 1, N))
    assert [(e["dy"], e["dx"]) for e in res["shifts"]] == [(0, dx) for dx in range(-2, 3)]
    assert res["shift_mode"] == "roll"
    assert "odd" in res["parity"] and "even" in res["parity"]
    assert math.isfinite(res["summary"]["fc1"]["invariance_score"])


def test_paired_dataset_items_are_translated_pairs(data):
    images, labels = data
    plan = ShiftPlan.build(2, "crop", "grid", 0, N)
    ds = PairedShiftDataset(images, labels, plan)
    assert len(ds) == N * 25
    x, tx, y, s = ds[3 * 25 + 7]
    assert tuple(s.tolist()) == plan.shifts[7] and y == labels[3]
    assert torch.equal(x, images[3].unsqueeze(0).float() / 255)
    assert torch.equal(tx, shift_images(x, *s.tolist()))
    rnd = PairedShiftDataset(images, labels, ShiftPlan.build(2, "roll", "random", 4, N))
    again = PairedShiftDataset(images, labels, ShiftPlan.build(2, "roll", "random", 4, N))
    assert len(rnd) == N
    for i in range(N):
        assert torch.equal(rnd[i][3], again[i][3]) and rnd[i][3].abs().sum() > 0
        assert torch.equal(rnd[i][1], shift_images(rnd[i][0], *rnd[i][3].tolist(), "roll"))
