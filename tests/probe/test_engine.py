"""The measurement engine's bookkeeping: pooling, counts, scores, controls, batching, the fast path,
the DDP rank split, determinism and the shift patterns.

Figure-by-figure agreement with an independent float64 implementation of the definitions is
``test_reference_agreement.py`` (against ``tests/reference.py``); exactness on many networks is
``test_geometry.py``; issue 8's defects are ``test_engine_truth.py``. Here the lab CNN in float32.
"""

import math
import warnings

import pytest
import torch
from tolerances import approx, assert_same_figures, tol

import shiftprobe.probe.engine as engine
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.accumulator import PairMetricAccumulator, layer_metrics
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.engine import control_offset, measure, measure_network
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.metrics import pair_metrics, sort_channels, sorted_rel
from shiftprobe.probe.plan import ShiftPlan
from shiftprobe.probe.results import Results
from shiftprobe.probe.section import build_results
from shiftprobe.probe.transforms import Translation, shift_images

N = 16
LAYERS = ("conv1", "conv2", "fc1", "logits")
SPATIAL = ("conv1", "conv2")


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


def _pixels(images):
    return images.unsqueeze(1).float() / 255


def _compare(a, b):
    """Every figure of two float32 measurements, to float32 precision (tests/tolerances.py): the two
    computations differ in batch composition or kernel, so they agree to the dtype, not bit for bit."""
    assert_same_figures(a, b, torch.float32, skip=("seconds", "fast_path"))


@pytest.mark.parametrize("mode,fast", [("crop", True), ("crop", False), ("roll", False)])
def test_counts_pooling_scores_and_exactness(net, data, mode, fast):
    """What the reference comparison does not cover: every shift of the plan counted once per image,
    radial / parity / summary groups pooled over their shifts, scores against the control, accuracy,
    two-shift consistency, the exact test's pattern (conv2 exact at even shifts only) and the shift
    (0, 0) (cos 1, rel 0, scores 1)."""
    images, labels = data
    plan = ShiftPlan.build(2, mode, "grid", seed=3, n_images=N)
    res = measure_network(net, images, labels, plan, control_seed=3, batch_size=10, pairs_per_chunk=30, fast_path=fast)
    assert res["fast_path"] is fast and res["classifier"] == "logits" and res["strides"] == {"conv1": 1, "conv2": 2}
    x = _pixels(images)
    k = control_offset(N, 3)
    assert res["control"]["offset"] == k
    a, b = plan.two_shift_draws()
    with torch.no_grad():
        base = net.probe(x)
        ctrl = net.probe(x[(torch.arange(N) + k) % N])
        # each image shifted on its own with shift_images, then one forward for all of them
        la = net.probe(torch.cat([shift_images(x[i : i + 1], *a[i].tolist(), mode) for i in range(N)]))["logits"]
        lb = net.probe(torch.cat([shift_images(x[i : i + 1], *b[i].tolist(), mode) for i in range(N)]))["logits"]
        fc1_t = net.probe(torch.cat([shift_images(x, dy, dx, mode) for dy, dx in plan.shifts]))["fc1"].view(len(plan.shifts), N, -1)
    assert res["accuracy"] == pytest.approx((base["logits"].argmax(1) == labels).double().mean().item())
    assert res["summary"]["logits"]["consistency_two_shifts"] == pytest.approx((la.argmax(1) == lb.argmax(1)).double().mean().item())
    for layer in LAYERS:
        dist = (ctrl[layer] - base[layer]).flatten(1).double().norm(dim=1).mean().item()
        assert res["control"][layer]["dist"] == pytest.approx(dist, rel=1e-5)
    for layer in SPATIAL:
        expected = sorted_rel(sort_channels(base[layer]), sort_channels(ctrl[layer])).mean().item()
        assert res["control"][layer]["sorted_rel"] == pytest.approx(expected, rel=1e-5)

    got = {(e["dy"], e["dx"]): e for e in res["shifts"]}
    assert list(got) == list(plan.shifts) and all(e["count"] == N for e in got.values())
    for j, s in enumerate(plan.shifts):
        expected = (fc1_t[j] - base["fc1"]).double().norm(dim=1).mean().item()
        assert got[s]["fc1"]["dist"] == approx(expected, torch.float32), s
        for layer in LAYERS:
            ctrl_block = res["control"][layer]
            assert got[s][layer]["invariance_score"] == pytest.approx(1 - got[s][layer]["dist"] / ctrl_block["dist"], abs=1e-12)
            if layer in SPATIAL:
                assert got[s][layer]["equivariance_score"] == pytest.approx(
                    1 - got[s][layer]["sorted_rel"] / ctrl_block["sorted_rel"], abs=1e-12
                )
            else:
                assert "aligned_rel" not in got[s][layer] and "equivariance_score" not in got[s][layer]
    # the exact test on the certified region (the whole map for the lab net, in crop and roll mode):
    # conv1 exact at every shift, conv2 at even shifts; no alignment makes conv2 exact at odd ones
    for (dy, dx), entry in got.items():
        conv2 = entry["conv2"]
        if dy % 2 == 0 and dx % 2 == 0:
            assert conv2["aligned_rel_max"] < 1e-5 and conv2["nearest_aligned_rel"] == conv2["aligned_rel"]
        else:
            assert conv2["aligned_rel"] is None and "aligned_rel_max" not in conv2
            assert conv2["nearest_aligned_rel"] > 1e-2
        assert entry["conv1"]["aligned_rel_max"] < 1e-5
        assert "aligned_rel_no_overlap" not in conv2  # every shift up to 2 leaves certified positions

    # shift (0, 0): cos 1, rel 0, scores 1, aligned_rel 0, predictions unchanged. To float32 precision,
    # not bit for bit: the shifted batch (B S images, or the padded pass of the fast path) may take
    # other kernels than the unshifted one and round differently (a score of 0.9999988 on some CPUs)
    zero = got[0, 0]
    for layer in LAYERS:
        assert zero[layer]["cos"] == approx(1, torch.float32, unit=True)
        assert zero[layer]["rel"] == approx(0, torch.float32, unit=True)
        assert zero[layer]["invariance_score"] == approx(1, torch.float32, unit=True)
    for layer in SPATIAL:
        assert zero[layer]["equivariance_score"] == approx(1, torch.float32, unit=True)
        assert zero[layer]["aligned_rel"] == approx(0, torch.float32, unit=True)
    assert zero["logits"]["consistency"] == 1.0  # an arg-max: unchanged unless two logits tie to 1e-7

    def pooled(members, layer, metric):
        return sum(got[s][layer][metric] for s in members) / len(members)  # equal counts: plain means

    # radial, parity and summary: pooled over the pairs of their shifts
    for ring in res["radial"]:
        members = [s for s in plan.shifts if max(map(abs, s)) == ring["radius"]]
        assert ring["count"] == N * len(members)
        assert ring["fc1"]["dist"] == pytest.approx(pooled(members, "fc1", "dist"), rel=1e-9)
        assert ring["logits"]["consistency"] == pytest.approx(pooled(members, "logits", "consistency"), rel=1e-9)
    assert [r["radius"] for r in res["radial"]] == [0, 1, 2]
    nonzero = [s for s in plan.shifts if s != (0, 0)]  # the summary and parity groups leave (0, 0) out
    even = [s for s in nonzero if s[0] % 2 == 0 and s[1] % 2 == 0]
    odd = [s for s in nonzero if s not in even]
    for group, members in ((res["summary"], nonzero), (res["parity"]["even"], even), (res["parity"]["odd"], odd)):
        assert group["count"] == N * len(members)
        for layer in LAYERS:
            assert group[layer]["rel"] == pytest.approx(pooled(members, layer, "rel"), rel=1e-9)
        assert group["conv2"]["nearest_aligned_rel"] == pytest.approx(pooled(members, "conv2", "nearest_aligned_rel"), rel=1e-9)
        assert group["logits"]["shifted_acc"] == pytest.approx(pooled(members, "logits", "shifted_acc"), rel=1e-9)
    assert res["summary"]["conv2"]["aligned_rel"] == pytest.approx(pooled(even, "conv2", "aligned_rel"), rel=1e-9)
    assert res["parity"]["odd"]["conv2"]["aligned_rel"] is None
    assert res["summary"]["conv2"]["aligned_rel_max"] == max(got[s]["conv2"]["aligned_rel_max"] for s in even)


def test_fast_path_equals_generic_path(net, data):
    images, labels = data
    plan = ShiftPlan.build(3, "crop", "grid", seed=0, n_images=N)
    fast = measure_network(net, images, labels, plan, batch_size=7, fast_path=True)
    slow = measure_network(net, images, labels, plan, batch_size=16, fast_path=False)
    assert fast["fast_path"] is True and slow["fast_path"] is False
    _compare(fast, slow)


def test_batches_and_chunks_accumulate_to_one_pass(net, data):
    """Images in small batches, shifts in small chunks, several worker threads: the one-pass figures."""
    images, labels = data
    plan = ShiftPlan.build(2, "roll", "grid", seed=1, n_images=N)
    one = measure_network(net, images, labels, plan, batch_size=N, pairs_per_chunk=10**6, workers=1, fast_path=False)
    many = measure_network(net, images, labels, plan, batch_size=5, pairs_per_chunk=7, workers=2, fast_path=False)
    _compare(one, many)


def test_control_as_pair_gives_score_zero(net, data):
    """Feeding the control pairs (x_i, x_{i+k}) in place of (x_i, T x_i) must score exactly 0."""
    images, _ = data
    x = _pixels(images)
    k = control_offset(N, 0)
    xc = x[(torch.arange(N) + k) % N]
    with torch.no_grad():
        f, c = net.probe(x), net.probe(xc)
    geometry = infer_geometry(net, resolve_layers(net, LAYERS), (1, 28, 28))
    acc = PairMetricAccumulator(9, {layer: layer_metrics(geometry[layer], layer == "logits") for layer in LAYERS})
    control, pairs = {}, {}
    for layer in LAYERS:
        m = pair_metrics(f[layer].flatten(1), c[layer].flatten(1))
        for key in ("cos", "dist", "rel"):
            control[layer, key] = pairs[layer, key] = m[key]
        if layer in SPATIAL:
            control[layer, "sorted_rel"] = pairs[layer, "sorted_rel"] = sorted_rel(sort_channels(f[layer]), sort_channels(c[layer]))
            # shift (1, 1): conv1 could align, but an unrelated image has no aligned counterpart; leave it undefined
            pairs[layer, "aligned_rel"] = pairs[layer, "nearest_aligned_rel"] = torch.full((N,), float("nan"))
    agree = (f["logits"].argmax(1) == c["logits"].argmax(1)).double()
    control["logits", "consistency"] = pairs["logits", "consistency"] = agree
    pairs["logits", "shifted_correct"] = agree
    acc.update(control=control, n_images=N, correct=torch.ones(N, dtype=torch.bool))
    acc.update(shift_ids=torch.full((N,), 8), pairs=pairs)  # shift (1, 1) in a max_shift=1 plan
    res = build_results(acc.compute(), ShiftPlan.build(1, "crop", "grid", 0, N), LAYERS, geometry, k, "logits")
    assert res["accuracy"] == 1.0 and res["control"]["offset"] == k
    entry = res["shifts"][0]
    assert len(res["shifts"]) == 1 and (entry["dy"], entry["dx"]) == (1, 1) and entry["count"] == N
    for layer in LAYERS:
        assert entry[layer]["invariance_score"] == pytest.approx(0, abs=1e-12)
        assert res["summary"][layer]["invariance_score"] == pytest.approx(0, abs=1e-12)
    for layer in SPATIAL:
        assert entry[layer]["equivariance_score"] == pytest.approx(0, abs=1e-12)
        assert entry[layer]["aligned_rel"] is None and entry[layer]["nearest_aligned_rel"] is None
        assert "aligned_rel_max" not in entry[layer] and "aligned_rel_no_overlap" not in entry[layer]
    assert entry["logits"]["consistency"] == pytest.approx(res["control"]["logits"]["consistency"], abs=1e-12)


def _merge_raw(parts: list[dict]) -> dict:
    """What the accumulator's DDP reduction does: every state summed, the ``*_max`` ones maximised."""
    out = {}
    for key in parts[0]:
        values = torch.stack([p[key] for p in parts])
        out[key] = values.amax(0) if isinstance(key, tuple) and key[2].endswith("_max") else values.sum(0)
    return out


def test_rank_split_sums_to_single_process(net, data, monkeypatch):
    """What DDP does: each of two ranks measures the images rank::2; their sums (torchmetrics' own
    reduction of the states, and the same by hand) equal the single-process sums and give the
    single-process figures."""
    created = []  # (accumulator, constructor arguments) of every measurement
    real = engine.new_accumulator

    def spy(*args, **kwargs):
        created.append((real(*args, **kwargs), args, kwargs))
        return created[-1][0]

    monkeypatch.setattr(engine, "new_accumulator", spy)
    images, labels = data
    plan = ShiftPlan.build(2, "crop", "grid", 0, N)
    whole = measure_network(net, images, labels, plan, batch_size=5)
    ranks = [measure_network(net, images, labels, plan, batch_size=5, rank=r, world_size=2) for r in range(2)]
    assert [r["n_images"] for r in ranks] == [N // 2, N // 2]
    raw_whole = created[0][0].compute()
    by_hand = _merge_raw([acc.compute() for acc, _, _ in created[1:]])
    assert set(by_hand) == set(raw_whole)
    for key, value in raw_whole.items():
        # float32 features: batch-dependent rounding (sums of unit-scale values and of distances)
        assert torch.allclose(by_hand[key], value, **tol(torch.float32, unit=True)), key
    _, args, kwargs = created[1]
    reduced = real(*args, **kwargs)  # a fresh accumulator: merge_state applies each state's dist_reduce_fx
    for acc, _, _ in created[1:]:
        reduced.merge_state(acc)
    with warnings.catch_warnings():  # merged, never updated: torchmetrics warns about compute before update
        warnings.simplefilter("ignore", UserWarning)
        reduced = reduced.compute()
    for key, value in by_hand.items():
        assert torch.equal(reduced[key], value), key  # the same two float64 states added (or maximised)
    geometry = infer_geometry(net, resolve_layers(net, None), (1, 28, 28))
    rebuilt = build_results(reduced, plan, LAYERS, geometry, whole["control"]["offset"], whole["classifier"])
    _compare({k: whole[k] for k in rebuilt}, rebuilt)


def test_random_pattern_and_determinism(net, data):
    images, labels = data
    plan = ShiftPlan.build(3, "crop", "random", 7, N)
    res = measure_network(net, images, labels, plan, control_seed=7)
    assert sum(e["count"] for e in res["shifts"]) == N
    assert all((e["dy"], e["dx"]) != (0, 0) for e in res["shifts"])
    assert {(e["dy"], e["dx"]) for e in res["shifts"]} == {tuple(s) for s in plan.per_image.tolist()}
    assert res["summary"]["count"] == N and res["shift_pattern"] == "random"
    assert res["fast_path"] is False  # per-image shifts: no shared crop windows
    again = measure_network(net, images, labels, ShiftPlan.build(3, "crop", "random", 7, N), control_seed=7)
    res.pop("seconds"), again.pop("seconds")
    assert res == again


def test_axis_pattern(net, data):
    images, labels = data
    res = measure_network(net, images, labels, ShiftPlan.build(2, "roll", "axis", 1, N))
    assert [(e["dy"], e["dx"]) for e in res["shifts"]] == [(0, dx) for dx in range(-2, 3)]
    assert res["shift_mode"] == "roll"
    assert "odd" in res["parity"] and "even" in res["parity"]
    assert math.isfinite(res["summary"]["fc1"]["invariance_score"])


def test_measure_returns_the_engine_figures_and_the_untrained_control(net, data):
    images, labels = data
    torch.manual_seed(5)
    net0 = LabCNN().eval()
    layers = ["conv2", "logits"]
    res = measure(net, images, labels, layers=layers, transform=Translation(max_shift=1), untrained=net0)
    plan = ShiftPlan.build(1, "crop", "grid", 0, N)
    assert isinstance(res, Results) and isinstance(res.untrained, Results)
    assert res["layers"] == layers and res["subset"] == {"n_images": N, "of": N, "how": "all images"}
    _compare(res.summary, measure_network(net, images, labels, plan, layers=layers)["summary"])
    assert res.untrained["layers"] == layers and res.untrained["accuracy"] is not None
    assert res.summary["conv2"]["dist"] != pytest.approx(res.untrained.summary["conv2"]["dist"])
    assert res["precision"] == {"dtype": "float32", "exact_tol": 1e-5}
