"""The measurement engine's bookkeeping (``engine.run`` with a ``PairComputer``, ``section.build_section``):
pooling, counts, scores, controls, batching, the fast path, the DDP rank split, determinism and the shift
patterns.

Figure-by-figure agreement with an independent float64 implementation of the definitions is
``test_reference_agreement.py`` (against ``tests/reference.py``); exactness on many networks is
``test_geometry.py``; issue 8's defects are ``test_engine_truth.py``. Here the lab CNN in float32.
"""

import io
import math
import sys
import threading
import warnings

import pytest
import torch
from reference import merge_sums
from tolerances import approx, assert_same_figures, tol

import shiftprobe.probe.measure as measure_module
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.accumulator import PairMetricAccumulator
from shiftprobe.probe.capture import Feed
from shiftprobe.probe.engine import control_offset, setup
from shiftprobe.probe.measure import measure, measure_family
from shiftprobe.probe.metrics import pair_metrics, sort_channels, sorted_rel
from shiftprobe.probe.pairs import layer_metrics
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.results import Results
from shiftprobe.probe.section import build_section
from shiftprobe.probe.translation import Translation

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


def _by_shift(sec: dict) -> dict:
    return {tuple(b["param"]): b for b in sec["groups"]["param"]}


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
    t = Translation(2, mode, "grid", seed=3)
    plan = t.plan(N, (28, 28))
    shifts = [plan.params[j] for j in plan.pairs]
    res = measure_family(net, images, labels, t, control_seed=3, batch_size=10, pairs_per_chunk=30, fast_path=fast)
    assert res["fast_path"] is fast and res["classifier"] == "logits" and res["config"]["mode"] == mode
    assert [res["geometry"][n]["stride"] for n in SPATIAL] == [[1, 1], [2, 2]]
    x = _pixels(images)
    k = control_offset(N, 3)
    assert res["control"]["offset"] == k
    a, b = (plan.param_values(d) for d in plan.draws)
    with torch.no_grad():
        base = net.probe(x)
        ctrl = net.probe(x[(torch.arange(N) + k) % N])
        # each image shifted on its own with shift_images, then one forward for all of them
        la = net.probe(torch.cat([shift_images(x[i : i + 1], *a[i].tolist(), mode) for i in range(N)]))["logits"]
        lb = net.probe(torch.cat([shift_images(x[i : i + 1], *b[i].tolist(), mode) for i in range(N)]))["logits"]
        fc1_t = net.probe(torch.cat([shift_images(x, dy, dx, mode) for dy, dx in shifts]))["fc1"].view(len(shifts), N, -1)
    assert res["accuracy"] == pytest.approx((base["logits"].argmax(1) == labels).double().mean().item())
    assert res["summary"]["logits"]["consistency_two_shifts"] == pytest.approx((la.argmax(1) == lb.argmax(1)).double().mean().item())
    for layer in LAYERS:
        dist = (ctrl[layer] - base[layer]).flatten(1).double().norm(dim=1).mean().item()
        assert res["control"][layer]["dist"] == pytest.approx(dist, rel=1e-5)
    for layer in SPATIAL:
        expected = sorted_rel(sort_channels(base[layer]), sort_channels(ctrl[layer])).mean().item()
        assert res["control"][layer]["sorted_rel"] == pytest.approx(expected, rel=1e-5)

    got = _by_shift(res)
    assert list(got) == shifts and all(e["count"] == N for e in got.values())
    for j, s in enumerate(shifts):
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
    for ring in res["groups"]["radius"]:
        members = [s for s in shifts if max(map(abs, s)) == ring["param"]]
        assert ring["count"] == N * len(members)
        assert ring["fc1"]["dist"] == pytest.approx(pooled(members, "fc1", "dist"), rel=1e-9)
        assert ring["logits"]["consistency"] == pytest.approx(pooled(members, "logits", "consistency"), rel=1e-9)
    assert [r["param"] for r in res["groups"]["radius"]] == [0, 1, 2]
    nonzero = [s for s in shifts if s != (0, 0)]  # the summary and parity groups leave (0, 0) out
    even = [s for s in nonzero if s[0] % 2 == 0 and s[1] % 2 == 0]
    odd = [s for s in nonzero if s not in even]
    parity = {b["param"]: b for b in res["groups"]["parity"]}
    for group, members in ((res["summary"], nonzero), (parity["even"], even), (parity["odd"], odd)):
        assert group["count"] == N * len(members)
        for layer in LAYERS:
            assert group[layer]["rel"] == pytest.approx(pooled(members, layer, "rel"), rel=1e-9)
        assert group["conv2"]["nearest_aligned_rel"] == pytest.approx(pooled(members, "conv2", "nearest_aligned_rel"), rel=1e-9)
        assert group["logits"]["shifted_acc"] == pytest.approx(pooled(members, "logits", "shifted_acc"), rel=1e-9)
    assert res["summary"]["conv2"]["aligned_rel"] == pytest.approx(pooled(even, "conv2", "aligned_rel"), rel=1e-9)
    assert parity["odd"]["conv2"]["aligned_rel"] is None
    assert res["summary"]["conv2"]["aligned_rel_max"] == max(got[s]["conv2"]["aligned_rel_max"] for s in even)
    exact = [list(s) for s in shifts if s[0] % 2 == 0 and s[1] % 2 == 0]
    assert res["exact"]["conv2"] == {"exact_params": exact, "all": False} and res["exact"]["conv1"]["all"]


def test_fast_path_equals_generic_path(net, data):
    images, labels = data
    t = Translation(3, "crop", "grid", seed=0)
    fast = measure_family(net, images, labels, t, batch_size=7, fast_path=True)
    slow = measure_family(net, images, labels, t, batch_size=16, fast_path=False)
    assert fast["fast_path"] is True and slow["fast_path"] is False
    _compare(fast, slow)


def test_batches_and_chunks_accumulate_to_one_pass(net, data):
    """Images in small batches, shifts in small chunks, several worker threads: the one-pass figures."""
    images, labels = data
    t = Translation(2, "roll", "grid", seed=1)
    one = measure_family(net, images, labels, t, batch_size=N, pairs_per_chunk=10**6, workers=1, fast_path=False)
    many = measure_family(net, images, labels, t, batch_size=5, pairs_per_chunk=7, workers=2, fast_path=False)
    _compare(one, many)


def test_control_as_pair_gives_score_zero(net, data):
    """Feeding the control pairs (x_i, x_{i+k}) in place of (x_i, T x_i) must score exactly 0."""
    images, _ = data
    x = _pixels(images)
    k = control_offset(N, 0)
    xc = x[(torch.arange(N) + k) % N]
    with torch.no_grad():
        f, c = net.probe(x), net.probe(xc)
    t = Translation(1)
    network = setup(net, x, LAYERS, Feed())
    geometry = network.geometry
    metrics = {layer: layer_metrics(t, geometry[layer], (28, 28), layer == "logits", True) for layer in LAYERS}
    acc = PairMetricAccumulator(9, metrics)
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
    undefined = torch.full((N,), float("nan"), dtype=torch.float64)  # the metrics not set here: undefined
    values = torch.stack([pairs.get(key, undefined) for key in acc.image_keys])
    acc.update(shift_ids=torch.full((N,), 8), pair_values=values)  # shift (1, 1) in a max_shift=1 plan
    res = build_section(acc.compute(), t, t.plan(N, (28, 28)), network, k, metrics, (28, 28))
    assert res["accuracy"] == 1.0 and res["control"]["offset"] == k
    entry = res["groups"]["param"][0]
    assert len(res["groups"]["param"]) == 1 and entry["param"] == [1, 1] and entry["count"] == N
    for layer in LAYERS:
        assert entry[layer]["invariance_score"] == pytest.approx(0, abs=1e-12)
        assert res["summary"][layer]["invariance_score"] == pytest.approx(0, abs=1e-12)
    for layer in SPATIAL:
        assert entry[layer]["equivariance_score"] == pytest.approx(0, abs=1e-12)
        assert entry[layer]["aligned_rel"] is None and entry[layer]["nearest_aligned_rel"] is None
        assert "aligned_rel_max" not in entry[layer] and "aligned_rel_no_overlap" not in entry[layer]
    assert entry["logits"]["consistency"] == pytest.approx(res["control"]["logits"]["consistency"], abs=1e-12)


def test_rank_split_sums_to_single_process(net, data, monkeypatch):
    """What DDP does: each of two ranks measures the images rank::2; their sums (torchmetrics' own reduction
    of the states, and ``merge_sums``) equal the single-process sums and give the single-process figures."""
    created = []  # (accumulator, constructor arguments) of every measurement
    real = measure_module.new_accumulator

    def spy(*args, **kwargs):
        created.append((real(*args, **kwargs), args, kwargs))
        return created[-1][0]

    monkeypatch.setattr(measure_module, "new_accumulator", spy)
    images, labels = data
    t = Translation(2)
    parts = [{}, {}]
    whole = measure_family(net, images, labels, t, batch_size=5)
    ranks = [measure_family(net, images, labels, t, batch_size=5, rank=r, world_size=2, sums=parts[r]) for r in range(2)]
    assert [r["n_images"] for r in ranks] == [N // 2, N // 2]
    raw_whole = created[0][0].compute()
    by_hand = merge_sums([p["raw"] for p in parts])
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
    rebuilt = parts[0]["section"](reduced)
    _compare({k: whole[k] for k in rebuilt}, rebuilt)


def test_random_pattern_and_determinism(net, data):
    images, labels = data
    t = Translation(3, "crop", "random", 7)
    res = measure_family(net, images, labels, t, control_seed=7)
    blocks = res["groups"]["param"]
    assert sum(e["count"] for e in blocks) == N and all(e["param"] != [0, 0] for e in blocks)
    plan = t.plan(N, (28, 28))
    assert {tuple(e["param"]) for e in blocks} == {tuple(s) for s in plan.param_values(plan.pairs).view(N, 2).tolist()}
    assert res["summary"]["count"] == N and res["config"]["pattern"] == "random"
    assert res["fast_path"] is False  # per-image shifts: no shared crop windows
    again = measure_family(net, images, labels, t, control_seed=7)
    res.pop("seconds"), again.pop("seconds")
    assert res == again


def test_axis_pattern(net, data):
    images, labels = data
    res = measure_family(net, images, labels, Translation(2, "roll", "axis", 1))
    assert [tuple(e["param"]) for e in res["groups"]["param"]] == [(0, dx) for dx in range(-2, 3)]
    assert res["config"]["mode"] == "roll"
    assert [b["param"] for b in res["groups"]["parity"]] == ["even", "odd"]
    assert math.isfinite(res["summary"]["fc1"]["invariance_score"])


def test_measure_returns_the_engine_figures_and_the_untrained_control(net, data):
    images, labels = data
    torch.manual_seed(5)
    net0 = LabCNN().eval()
    layers = ["conv2", "logits"]
    res = measure(net, images, labels, layers=layers, transform=Translation(max_shift=1), untrained=net0)
    sec = res.families["translation"]
    assert isinstance(res, Results) and isinstance(sec.untrained, Results)
    assert sec["layers"] == layers and res["subset"] == {"n_images": N, "of": N, "how": "all images"}
    _compare(res.summary, measure_family(net, images, labels, Translation(1), layers=layers)["summary"])
    assert sec.untrained["layers"] == layers and sec.untrained["accuracy"] is not None
    assert res.summary["conv2"]["dist"] != pytest.approx(sec.untrained.summary["conv2"]["dist"])
    assert sec["precision"] == {"dtype": "float32", "exact_tol": 1e-5}


class _ClosedPipe(io.TextIOBase):
    """stderr after ``2>&1 | tee`` lost its tee."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_progress_bar_on_a_closed_pipe_costs_neither_the_figures_nor_tqdms_lock(monkeypatch):
    """tqdm keeps its lock after a failed write: the measurement failed with BrokenPipeError, and with several
    threads every one of them waited on that lock for good (SIGTERM could not end the run)."""
    from tqdm import tqdm

    torch.manual_seed(0)
    net, x = LabCNN().eval(), torch.rand(16, 1, 28, 28)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one measuring thread: the old failure raised
    quiet = measure(net, x, transform=Translation(1), batch_size=4, progress=False)
    monkeypatch.setattr(sys, "stderr", _ClosedPipe())
    shown = measure(net, x, transform=Translation(1), batch_size=4, progress=True)
    assert shown.summary == quiet.summary
    free = []
    for lock in tqdm.get_lock().locks:  # taken from another thread: nobody holds it
        probe = threading.Thread(target=lambda lk=lock: free.append(lk.acquire(blocking=False) and lk.release() is None))
        probe.start()
        probe.join()
    assert free and all(free)
