"""Within-run uncertainty (issue 11): standard errors over images, delta-method score intervals,
consistency among correctly classified images, the predicted-class histogram; issue 13's sorting test
on the certified region.

The per-image reference values are computed pair by pair with the engine's pure metric functions on
shifted images (not the engine's batching, chunking, fast path or membership matmuls); the network
runs in float64 so the comparisons hold to 1e-9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from reference import merge_sums
from tolerances import assert_close_dtype, assert_same_figures
from torch import nn

from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import control_offset
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.metrics import (
    aligned_offset,
    aligned_values,
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sorted_rel,
    sorted_rel_certified_at,
)
from shiftprobe.probe.migrate import migrate
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.results import Results
from shiftprobe.probe.section import predictions_block
from shiftprobe.probe.stats import ratio_se, score_interval
from shiftprobe.probe.translation import Translation

DATA = Path(__file__).parent / "data"
N = 12
LAYERS = ["conv1", "conv2", "fc1", "logits"]


def _images(n=N, seed=0):
    """uint8 28x28 images with random content in the middle (the fixture's recipe)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 28, 28)
    img[:, 6:22, 6:22] = torch.rand(n, 16, 16, generator=g)
    return (img * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def net64():
    torch.manual_seed(0)
    return LabCNN().double().eval()


def _half_correct_labels(net, images):
    """Labels that make exactly the even-indexed images correctly classified (unshifted)."""
    with torch.no_grad():
        pred = net.probe((images.unsqueeze(1).float() / 255).double())["logits"].argmax(1)
    return torch.where(torch.arange(len(images)) % 2 == 0, pred, (pred + 1) % 10)


# -- a pair-by-pair reference ---------------------------------------------------------------------
def _shifts_of(transform: Translation, n: int, i: int) -> list:
    """The shifts image ``i`` of ``n`` is paired with."""
    plan = transform.plan(n, (28, 28))
    return plan.param_values(plan.ids_of(torch.tensor([i]))[0]).tolist()


def _per_pair(net, images, labels, plan, layers, seed):
    """``{(layer, metric): {image: {(dy, dx): value}}}`` and the control values ``{(layer, metric): (N,)}``."""
    x = (images.unsqueeze(1).float() / 255).double()  # the engine's pixels: uint8 / 255 in float32
    n = len(x)
    resolved = resolve_layers(net, layers)
    geometry = infer_geometry(net, resolved, (1, 28, 28), seed=seed)
    k = control_offset(n, seed)
    out: dict = {}
    with torch.no_grad(), LayerCapture(net, resolved) as cap:
        base = cap.run(x)
        ctrl = cap.run(x[(torch.arange(n) + k) % n])
        control = {}
        for layer in layers:
            control[layer, "dist"] = pair_metrics(base[layer].flatten(1), ctrl[layer].flatten(1))["dist"]
            if geometry[layer].spatial:
                control[layer, "sorted_rel"] = sorted_rel(sort_channels(base[layer]), sort_channels(ctrl[layer]))
        correct = base["logits"].argmax(1) == labels if "logits" in layers else None
        for i in range(n):
            for dy, dx in _shifts_of(plan, n, i):
                t = cap.run(shift_images(x[i : i + 1], dy, dx, plan.mode))
                for layer in layers:
                    f, ft = base[layer][i : i + 1], t[layer]
                    m = pair_metrics(f.flatten(1), ft.flatten(1))
                    values = {key: m[key] for key in ("cos", "dist", "rel")}
                    geo = geometry[layer]
                    if geo.spatial:
                        values["sorted_rel"] = sorted_rel(sort_channels(f), sort_channels(ft))
                        aligned, near = aligned_values(f, ft, dy, dx, geo, plan.mode)
                        values["nearest_aligned_rel"] = near
                        if aligned is not None:
                            values["aligned_rel"] = aligned
                            values["sorted_rel_certified"] = sorted_rel_certified_at(
                                f, ft, *aligned_offset(dy, dx, geo.stride), geo, plan.mode)
                    if layer == "logits":
                        agree = prediction_agreement(f, ft)
                        values["consistency"] = agree
                        values["shifted_acc"] = (ft.argmax(1) == labels[i]).double()
                        if correct[i]:
                            values["consistency_correct"] = agree
                    for key, value in values.items():
                        v = float(value.reshape(-1)[0])
                        if not math.isnan(v):
                            out.setdefault((layer, key), {}).setdefault(i, {})[dy, dx] = v
    return out, control


def _image_means(per_pair: dict, key, in_group) -> np.ndarray:
    """Each image's mean over its pairs in the group (images without such a pair left out)."""
    means = []
    for _, by_shift in sorted(per_pair.get(key, {}).items()):
        vals = [v for s, v in by_shift.items() if in_group(*s)]
        if vals:
            means.append(np.mean(vals))
    return np.array(means)


def _groups(res, plan):
    """(block, membership predicate) for every group block of the section, written out here."""
    groups = res["groups"]
    out = [(e, lambda dy, dx, e=e: [dy, dx] == e["param"]) for e in groups["param"]]
    out += [(r, lambda dy, dx, r=r["param"]: max(abs(dy), abs(dx)) == r) for r in groups["radius"]]
    for block in groups["parity"]:
        even = block["param"] == "even"
        out.append((block, lambda dy, dx, even=even: (dy, dx) != (0, 0) and (dy % 2 == 0 and dx % 2 == 0) == even))
    out.append((res["summary"], lambda dy, dx: (dy, dx) != (0, 0)))
    return out


@pytest.fixture(scope="module", params=[("grid", "crop"), ("random", "roll")], ids=["grid-crop", "random-roll"])
def case(request, net64):
    pattern, mode = request.param
    images, _ = _images()
    labels = _half_correct_labels(net64, images)
    plan = Translation(2, mode, pattern, 3)
    res = measure_family(net64, images, labels, plan, control_seed=3, batch_size=5, pairs_per_chunk=10, workers=1)
    per_pair, control = _per_pair(net64, images, labels, plan, LAYERS, seed=3)
    return res, plan, per_pair, control


# -- item 1: standard errors ---------------------------------------------------------------------
def test_standard_errors_equal_numpy_over_images(case):
    res, plan, per_pair, _ = case
    checked = 0
    for block, in_group in _groups(res, plan):
        for layer in LAYERS:
            for metric, value in block[layer].items():
                if not metric.endswith("_se") or metric == "consistency_two_shifts_se":
                    continue
                m = _image_means(per_pair, (layer, metric[: -len("_se")]), in_group)
                if len(m) < 2:
                    assert value is None, (layer, metric)
                    continue
                expected = np.std(m, ddof=1) / np.sqrt(len(m))
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), (layer, metric, block.get("param"))
                # the pooled mean is each image's mean, averaged (every image weighs the same)
                assert block[layer][metric[: -len("_se")]] == pytest.approx(m.mean(), rel=1e-9, abs=1e-12)
                checked += 1
    assert checked > 100
    for metric in ("dist_se", "rel_se", "sorted_rel_se", "consistency_se", "consistency_correct_se", "shifted_acc_se",
                   "sorted_rel_certified_se", "aligned_rel_se", "nearest_aligned_rel_se", "cos_se"):
        layer = "logits" if "consist" in metric or "acc" in metric else "conv2"
        assert metric in res["summary"][layer], metric


def test_consistency_correct_counts_only_images_correct_before_the_shift(case):
    res, plan, per_pair, _ = case
    block = res["summary"]["logits"]
    m = _image_means(per_pair, ("logits", "consistency_correct"), lambda dy, dx: (dy, dx) != (0, 0))
    assert len(m) == N // 2  # the even-indexed images
    assert block["consistency_correct"] == pytest.approx(m.mean(), abs=1e-12)
    assert res["accuracy"] == pytest.approx(0.5)


def _stored_net() -> nn.Module:
    """The network of ``data/results_before_se.json``: ``torch.manual_seed(0); LabCNN()`` as drawn on the
    vectorised kernels (AVX2, AVX-512), stored (``data/results_before_se_weights.pt``) because the seeded
    draw itself depends on the CPU kernels: ``uniform_`` rounds differently on the scalar ones
    (``ATEN_CPU_CAPABILITY=default``), 1e-8 on a weight, 1e-10 on a float64 figure."""
    net = LabCNN()
    net.load_state_dict(torch.load(DATA / "results_before_se_weights.pt", weights_only=True))
    return net.double().eval()


def test_stored_weights_are_the_seeded_lab_cnn():
    """The stored weights are the recipe's draw, to float32 precision on any CPU."""
    torch.manual_seed(0)
    drawn = LabCNN().double().state_dict()
    for key, value in _stored_net().state_dict().items():
        assert_close_dtype(value, drawn[key], torch.float32, msg=key)


def test_figures_of_todays_results_are_unchanged():
    """The pooled means, scores, counts and maxima equal the engine's before the uncertainty sums
    (``data/results_before_se.json``, written by the engine of commit b07b363 with the recipe below, on
    the stored weights) to 1e-12 (float64; a float64 sum of float32 pixels); nothing was removed."""
    before = json.loads((DATA / "results_before_se.json").read_text())
    for name, (pattern, mode) in {"grid_crop": ("grid", "crop"), "random_roll": ("random", "roll")}.items():
        images, labels = _images(10)
        net = _stored_net()
        now = measure_family(net, images, labels, Translation(2, mode, pattern, 3), control_seed=3, batch_size=4,
                             pairs_per_chunk=8, workers=1)
        # the 0.2 file in today's schema (every number kept; its config has no seed: the recipe's was 3)
        old = migrate(before[name])["families"]["translation"]
        old["config"]["seed"] = 3
        _same_where_defined(old, Results(now).to_dict(), name)


def _same_where_defined(old, new, path):
    if isinstance(old, dict):
        for key, value in old.items():
            if key in ("seconds", "seconds_total"):
                continue
            assert key in new, f"{path}.{key} disappeared"
            _same_where_defined(value, new[key], f"{path}.{key}")
    elif isinstance(old, list):
        assert len(old) == len(new), path
        for i, (u, v) in enumerate(zip(old, new, strict=True)):
            _same_where_defined(u, v, f"{path}[{i}]")
    elif isinstance(old, float):
        assert new is not None and abs(old - new) <= 1e-12, (path, old, new)
    else:
        assert old == new, (path, old, new)


# -- item 2: score intervals ---------------------------------------------------------------------
def test_score_interval_is_the_delta_method_on_per_image_values(case):
    res, plan, per_pair, control = case
    for block, in_group in _groups(res, plan):
        for layer, metric, score, ctrl in (
            ("fc1", "dist", "invariance_score", "dist"),
            ("conv2", "dist", "invariance_score", "dist"),
            ("conv2", "sorted_rel", "equivariance_score", "sorted_rel"),
        ):
            images = sorted(i for i, s in per_pair[layer, metric].items() if any(in_group(*k) for k in s))
            a = _image_means(per_pair, (layer, metric), in_group)
            c_all = control[layer, ctrl].numpy()
            c = c_all[images]
            if len(a) < 2:
                assert block[layer][f"{score}_ci"] is None
                continue
            # the engine's formula, written out: a group may hold a subset of the images (random)
            n_a, n_c = len(a), len(c_all)
            r = a.mean() / c_all.mean()
            cov = np.cov(a, c, ddof=1)[0, 1]
            var = (a.var(ddof=1) / n_a - 2 * r * cov / n_c + r**2 * c_all.var(ddof=1) / n_c) / c_all.mean() ** 2
            lo, hi = block[layer][f"{score}_ci"]
            assert block[layer][score] == pytest.approx(1 - r, abs=1e-12)
            half = NormalDist().inv_cdf(0.975) * math.sqrt(var)
            assert lo == pytest.approx(1 - r - half, abs=1e-9) and hi == pytest.approx(1 - r + half, abs=1e-9)


def ratio_interval_from_values(a, c) -> tuple[float, list[float]] | None:
    """``(1 - R, [lo, hi])`` for paired per-image values ``a`` (pair metric) and ``c`` (control), through the
    same sums and the same ``ratio_se`` as the engine."""
    a, c = np.asarray(a, dtype=np.float64), np.asarray(c, dtype=np.float64)
    n = len(a)
    r_se = ratio_se(n, a.sum(), (a * a).sum(), (a * c).sum(), c.sum(), n, c.sum(), (c * c).sum())
    return None if r_se is None else (1.0 - r_se[0], score_interval(1.0 - r_se[0], r_se))


def test_uniform_plan_interval_is_the_issue_formula():
    """With every image in the group: Var(R) = (s_a^2 - 2 R s_ac + R^2 s_c^2) / (n c_bar^2)."""
    rng = np.random.default_rng(1)
    c = rng.gamma(4.0, 0.5, 50)
    a = 0.3 * c + rng.normal(0, 0.1, 50)
    score, (lo, hi) = ratio_interval_from_values(a, c)
    r = a.mean() / c.mean()
    s = np.cov(a, c, ddof=1)
    var = (s[0, 0] - 2 * r * s[0, 1] + r**2 * s[1, 1]) / (50 * c.mean() ** 2)
    assert score == pytest.approx(1 - r, abs=1e-12)
    assert (hi - lo) / 2 == pytest.approx(NormalDist().inv_cdf(0.975) * math.sqrt(var), rel=1e-9)


def test_score_interval_close_to_a_paired_bootstrap_over_images(net64):
    """A brute-force bootstrap over images that keeps each image's pair and control together gives
    an interval within 20 % of the delta method's width, around the same centre."""
    torch.manual_seed(1)
    net = LabCNN().double().eval()
    images, labels = _images(40, seed=2)
    plan = Translation(1)
    res = measure_family(net, images, labels, plan, control_seed=5, workers=1)
    per_pair, control = _per_pair(net, images, labels, plan, ["conv2", "fc1"], seed=5)
    rng = np.random.default_rng(0)
    for layer, metric, score, ctrl in (("fc1", "dist", "invariance_score", "dist"),
                                       ("conv2", "sorted_rel", "equivariance_score", "sorted_rel")):
        a = _image_means(per_pair, (layer, metric), lambda dy, dx: (dy, dx) != (0, 0))
        c = control[layer, ctrl].numpy()
        idx = rng.integers(0, len(a), size=(4000, len(a)))
        boot = 1 - a[idx].mean(1) / c[idx].mean(1)
        b_lo, b_hi = np.percentile(boot, [2.5, 97.5])
        lo, hi = res["summary"][layer][f"{score}_ci"]
        assert abs((hi - lo) - (b_hi - b_lo)) <= 0.2 * (b_hi - b_lo), (layer, (lo, hi), (b_lo, b_hi))
        assert abs((hi + lo) / 2 - (b_hi + b_lo) / 2) <= 0.2 * (b_hi - b_lo)


def test_score_interval_covers_the_true_ratio_at_about_95_percent():
    """200 seeded draws of 100 images with correlated pair / control values (true ratio 0.3)."""
    rng = np.random.default_rng(2024)
    true_score = 1 - 0.3
    covered = 0
    for _ in range(200):
        c = rng.gamma(4.0, 0.5, 100)  # E[c] = 2
        a = 0.3 * c * rng.lognormal(0.0, 0.3, 100) / math.exp(0.3**2 / 2)  # E[a] = 0.3 E[c], skewed
        _, (lo, hi) = ratio_interval_from_values(a, c)
        covered += lo <= true_score <= hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_interval_degenerate_cases():
    assert ratio_se(1, 1.0, 1.0, 1.0, 1.0, 5, 5.0, 6.0) is None  # one image
    assert ratio_se(3, 1.0, 1.0, 0.0, 0.0, 3, 0.0, 0.0) is None  # control mean 0
    assert score_interval(None, (0.5, 0.1)) is None
    assert score_interval(0.5, None) is None
    # an exact layer: no spread, the interval is a point
    assert ratio_interval_from_values([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]) == (1.0, [1.0, 1.0])


def test_rank_split_sums_equal_single_process(net64):
    """What DDP does: two "ranks" measure their share; their added sums give the single-process
    figures to 1e-9 (float64), standard errors and intervals to 1e-7 (``tolerances.SPREAD_ATOL``)."""
    images, _ = _images(11, seed=4)
    labels = _half_correct_labels(net64, images)
    for pattern in ("grid", "random"):
        plan = Translation(2, "crop", pattern, 1)
        kw = dict(control_seed=1, batch_size=3, pairs_per_chunk=9, workers=1)
        whole = measure_family(net64, images, labels, plan, **kw)
        parts = []
        for rank in (0, 1):
            sums: dict = {}
            measure_family(net64, images, labels, plan, rank=rank, world_size=2, sums=sums, **kw)
            parts.append(sums)
        split = parts[0]["section"](merge_sums([p["raw"] for p in parts]))
        # float64 to 1e-9; standard errors and intervals to 1e-7 (a variance from sums of squares)
        assert_same_figures(split, {k: whole[k] for k in split}, torch.float64, skip=(), path=pattern)


# -- predictions ----------------------------------------------------------------------------------
def test_predicted_class_histogram(case):
    res = case[0]
    pred = res["predictions"]
    assert sum(pred["histogram"]) == N and len(pred["histogram"]) == 10
    assert pred["max_entropy_bits"] == pytest.approx(math.log2(10))
    p = np.array(pred["histogram"]) / N
    assert pred["entropy_bits"] == pytest.approx(-(p[p > 0] * np.log2(p[p > 0])).sum())
    assert pred["top_class_share"] == pytest.approx(p.max())


def test_near_constant_predictions_are_flagged():
    uniform = predictions_block(torch.full((10,), 100.0))
    assert uniform["entropy_bits"] == pytest.approx(math.log2(10)) and not uniform["near_constant"]
    one = predictions_block(torch.tensor([0.0, 1000, 0, 0, 0, 0, 0, 0, 0, 0]))
    assert one["entropy_bits"] == 0 and one["top_class_share"] == 1 and one["near_constant"]
    # a majority class above half the images, entropy still above half of log2(K)
    major = predictions_block(torch.tensor([520.0, 60, 60, 60, 60, 60, 60, 40, 40, 40]))
    assert major["entropy_bits"] > 0.5 * math.log2(10) and major["near_constant"]
    # entropy below half of log2(K) although no class has half the images
    two = predictions_block(torch.tensor([450.0, 450, 100, 0, 0, 0, 0, 0, 0, 0]))
    assert two["top_class_share"] < 0.5 and two["near_constant"]


def test_without_labels_no_accuracy_and_no_consistency_correct(net64):
    images, _ = _images(6)
    res = measure_family(net64, images, None, Translation(1), workers=1)
    assert res["accuracy"] is None and res["accuracy_se"] is None
    assert "consistency_correct" not in res["summary"]["logits"] and "shifted_acc" not in res["summary"]["logits"]
    assert "consistency_se" in res["summary"]["logits"] and sum(res["predictions"]["histogram"]) == 6


# -- issue 13: the sorting test on the certified region -------------------------------------------
class PositionalConv(nn.Module):
    """A convolution scaled by a fixed position-dependent map: stride 1, equivariant at no shift."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3)
        self.register_buffer("where", 1 + 0.5 * torch.rand(3, 128, 128, generator=g))
        self.post = nn.Identity()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 26 * 26, 4))

    def forward(self, x):
        f = self.conv(x)
        h, w = f.shape[-2:]
        f = self.post(f * self.where[:, :h, :w])  # (geometry runs on a larger canvas)
        return self.head(f) if (h, w) == (26, 26) else f


def test_sorted_certified_is_zero_where_exact_and_never_above_aligned(case):
    res = case[0]
    for entry in res["groups"]["param"]:
        conv1 = entry["conv1"]
        assert conv1["sorted_rel_certified"] is not None and conv1["sorted_rel_certified"] < 1e-12
        assert conv1["equivariance_score_certified"] == pytest.approx(1, abs=1e-12)
        conv2 = entry["conv2"]
        if entry["param"][0] % 2 or entry["param"][1] % 2:
            assert conv2["sorted_rel_certified"] is None and conv2["equivariance_score_certified"] is None
        else:
            assert conv2["sorted_rel_certified"] <= conv2["aligned_rel"] + 1e-15
            assert conv2["equivariance_score_certified"] == pytest.approx(1, abs=1e-9)
    assert "sorted_rel_certified" not in res["summary"]["fc1"]


def test_sorted_certified_on_a_layer_that_is_not_equivariant():
    torch.manual_seed(0)
    net = PositionalConv().double().eval()
    images, _ = _images(6)
    x = (images.unsqueeze(1).float() / 255).double()
    res = measure_family(net, images, None, Translation(2), layers=["post", "head"], workers=1)
    geo = infer_geometry(net, resolve_layers(net, ["post"]), (1, 28, 28))["post"]
    assert geo.stride == (1, 1)
    with torch.no_grad(), LayerCapture(net, resolve_layers(net, ["post"])) as cap:
        f = cap.run(x)["post"]
        for entry in res["groups"]["param"]:
            dy, dx = entry["param"]
            ft = cap.run(shift_images(x, dy, dx, "crop"))["post"]
            expected = sorted_rel_certified_at(f, ft, *aligned_offset(dy, dx, geo.stride), geo, "crop").mean().item()
            block = entry["post"]
            assert block["sorted_rel_certified"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
            if (dy, dx) != (0, 0):
                assert 0 < block["sorted_rel_certified"] <= block["aligned_rel"] + 1e-15
                assert block["equivariance_score_certified"] < 1
    summary = res["summary"]["post"]
    lo, hi = summary["equivariance_score_certified_ci"]
    assert lo < summary["equivariance_score_certified"] < hi


@pytest.mark.parametrize("hist,near", [
    ([52, 48], False),  # two classes: one has more than half unless they split exactly
    ([67, 33], False),  # 0.915 bits of 1
    ([95, 5], True),  # 0.286 bits: below half of log2(2)
    ([60] + [40 // 9] * 9, True),  # ten classes, one for more than half of the images
    ([10] * 10, False),
])
def test_near_constant_predictions_two_classes_by_entropy_more_also_by_top_share(hist, near):
    """A 2-class classifier predicting 52 % / 48 % was called near-constant and its consistency meaningless."""
    from shiftprobe.probe.section import predictions_block

    assert predictions_block(torch.tensor(hist, dtype=torch.float64))["near_constant"] is near
