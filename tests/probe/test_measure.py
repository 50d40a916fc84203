"""The measurement of every family (``shiftprobe.probe.measure``: ``measure_section``, ``measure_family``) and
``measure(transform=[...])``.

* Exactness by construction: logits averaged over the 4 quarter-turns (over the flips) are invariant,
  the first convolution inside is not equivariant; a stride-1 circular convolution is equivariant to
  Fourier sub-pixel shifts under roll, a stride-2 one is not (aliasing).
* Two independent computations: per-parameter figures, standard errors, the aligned and sorted tests
  and the invariance score against a brute-force float64 loop over the pairs written here.
* ``measure`` with a list keeps today's translation figures; ``Results.families``; the rank split.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from reference import merge_sums
from tolerances import TOLERANCES, assert_same_figures
from torch import nn

from shiftprobe.probe.families import Flip, Rotation, Rotation90, SubpixelTranslation
from shiftprobe.probe.measure import measure, measure_family, reinitialised_copy
from shiftprobe.probe.results import Results
from shiftprobe.probe.translation import Translation

#: float32 figures against float64 references: float32's relative tolerance (tests/tolerances.py)
TOL = TOLERANCES[torch.float32][0]


def _images(n=8, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


class TinyCNN(nn.Module):
    """Valid 3x3 conv (symmetric sampling grid on 12x12), ReLU, stride-2 3x3 conv (not symmetric), head."""

    layer_aliases = {"logits": "fc"}

    def __init__(self, size=12, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        side = (size - 2 - 3) // 2 + 1
        self.fc = nn.Linear(6 * side * side, classes)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        return self.fc(torch.relu(self.conv2(h)).flatten(1))


class GroupPooled(nn.Module):
    """``TinyCNN`` on every transformed copy of the input, logits averaged (``logits``: the mean)."""

    def __init__(self, group):
        super().__init__()
        self.net, self.group, self.logits = TinyCNN(), group, nn.Identity()

    def forward(self, x):
        return self.logits(torch.stack([self.net(g(x)) for g in self.group]).mean(0))


ROTATIONS = [lambda x, k=k: torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
FLIPS = [lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.flip(-2, -1)]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyCNN().eval()


# -- exactness by construction --------------------------------------------------------------------
@pytest.mark.parametrize("group, family", [(ROTATIONS, Rotation90()), (FLIPS, Flip())], ids=["rot90", "flip"])
def test_pooled_logits_are_invariant_and_the_conv_inside_is_not_equivariant(group, family):
    torch.manual_seed(1)
    model = GroupPooled(group).eval()
    x, y = _images()
    sec = measure_family(model, x, y, family, layers=["logits"])
    assert sec["classifier"] == "logits"
    for entry in sec["groups"]["param"]:
        block = entry["logits"]
        assert block["cos"] > 1 - 1e-6 and block["rel"] < 1e-5 and block["invariance_score"] > 1 - 1e-5
        assert block["consistency"] == 1.0
    inner = measure_family(model.net, x, y, family, layers=["conv1"])
    assert inner["map_action"]["conv1"] == {"defined": True, "note": None}
    for entry in inner["groups"]["param"]:
        assert entry["conv1"]["aligned_rel"] > 1e-2, entry["param"]
    assert inner["exact"]["conv1"] == {"exact_params": [], "all": False}


def _circular_conv(stride):
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=stride, padding=1, padding_mode="circular")).eval()


def test_fourier_roll_subpixel_is_exact_for_a_stride_1_circular_conv_and_aliases_at_stride_2():
    x, _ = _images(n=6, size=16)
    fam = SubpixelTranslation(max_offset=1, step=0.25, method="fourier", mode="roll")
    sec = measure_family(_circular_conv(1), x, None, fam, layers=["0"])
    assert sec["geometry"]["0"]["circular"]
    assert all(e["0"]["aligned_rel_max"] < 1e-5 for e in sec["groups"]["param"])
    assert sec["exact"]["0"]["all"] and len(sec["exact"]["0"]["exact_params"]) == 8
    strided = measure_family(_circular_conv(2), x, None, fam, layers=["0"])
    assert strided["geometry"]["0"]["circular"] and strided["geometry"]["0"]["stride"] == [2, 2]
    half = [e for e in strided["groups"]["param"] if e["param"]["offset"] == 0.5]
    assert len(half) == 2 and all(e["0"]["aligned_rel"] > 1e-3 for e in half)
    assert not strided["exact"]["0"]["all"]


# -- two independent computations -----------------------------------------------------------------
def _reference(net, x, y, transforms, offset):
    """Brute force in float64: per pair (image i, transform t) then averaged over images; the control
    pairs image i with image (i + offset) mod n."""
    net = copy.deepcopy(net).double().eval()
    x = x.double()

    def feats(img):
        with torch.no_grad():
            c1 = net.conv1(img)
            c2 = net.conv2(torch.relu(c1))
            return {"conv1": c1[0].numpy(), "conv2": c2[0].numpy(), "logits": net(img)[0].numpy()}

    def sort(m):
        return np.sort(m.reshape(m.shape[0], -1), axis=1)

    n = len(x)
    base = [feats(x[i : i + 1]) for i in range(n)]
    out = {"control": {}, "entries": []}
    for layer in ("conv1", "conv2", "logits"):
        ctrl = [np.linalg.norm(base[(i + offset) % n][layer] - base[i][layer]) for i in range(n)]
        out["control"][layer] = np.mean(ctrl)
        if layer != "logits":
            out["control"][layer + "_sorted"] = np.mean(
                [np.linalg.norm(sort(base[(i + offset) % n][layer]) - sort(base[i][layer])) / np.linalg.norm(sort(base[i][layer])) for i in range(n)]
            )
    for transform, map_action in transforms:
        entry = {}
        rows = [feats(transform(x[i : i + 1])) for i in range(n)]
        for layer in ("conv1", "conv2", "logits"):
            a, b = [base[i][layer].ravel() for i in range(n)], [rows[i][layer].ravel() for i in range(n)]
            cos = np.array([u @ v / np.linalg.norm(u) / np.linalg.norm(v) for u, v in zip(a, b, strict=True)])
            dist = np.array([np.linalg.norm(v - u) for u, v in zip(a, b, strict=True)])
            rel = dist / np.array([np.linalg.norm(u) for u in a])
            entry[layer] = {"cos": cos, "dist": dist, "rel": rel}
            if layer != "logits":
                entry[layer]["sorted_rel"] = np.array(
                    [np.linalg.norm(sort(rows[i][layer]) - sort(base[i][layer])) / np.linalg.norm(sort(base[i][layer])) for i in range(n)]
                )
        # conv1's grid is symmetric: the map action is the same transform of the map
        expected = [map_action(torch.from_numpy(base[i]["conv1"])).numpy() for i in range(n)]
        entry["conv1"]["aligned_rel"] = np.array(
            [np.linalg.norm(rows[i]["conv1"] - expected[i]) / np.linalg.norm(expected[i]) for i in range(n)]
        )
        entry["logits"]["consistency"] = np.array([rows[i]["logits"].argmax() == base[i]["logits"].argmax() for i in range(n)], float)
        entry["logits"]["shifted_acc"] = np.array([rows[i]["logits"].argmax() == int(y[i]) for i in range(n)], float)
        out["entries"].append(entry)
    return out


def test_rot90_figures_equal_a_brute_force_float64_loop(net):
    x, y = _images(n=9)
    sec = measure_family(net, x, y, Rotation90(), layers=["conv1", "conv2", "logits"], control_seed=3, batch_size=4)
    k = sec["control"]["offset"]
    # the control pairing, independently: the seeded offset in [1, n), image i against (i + k) mod n
    assert 1 <= k < 9
    transforms = [(lambda t, k=q: torch.rot90(t, k, dims=(-2, -1)),) * 2 for q in (1, 2, 3)]
    ref = _reference(net, x, y, transforms, k)
    for layer in ("conv1", "conv2", "logits"):
        assert sec["control"][layer]["dist"] == pytest.approx(ref["control"][layer], rel=TOL)
    assert [e["param"] for e in sec["groups"]["param"]] == [1, 2, 3]
    per_image = {}
    for entry, expect in zip(sec["groups"]["param"], ref["entries"], strict=True):
        assert entry["count"] == 9
        for layer, metrics in expect.items():
            for metric, values in metrics.items():
                assert entry[layer][metric] == pytest.approx(values.mean(), rel=TOL, abs=1e-9), (layer, metric)
                assert entry[layer][f"{metric}_se"] == pytest.approx(values.std(ddof=1) / 3, rel=1e-4, abs=1e-9)
                per_image.setdefault((layer, metric), []).append(values)
        for layer in ("conv1", "conv2", "logits"):
            ratio = expect[layer]["dist"].mean() / ref["control"][layer]  # score = 1 - ratio
            assert 1 - entry[layer]["invariance_score"] == pytest.approx(ratio, rel=TOL)
        for layer in ("conv1", "conv2"):
            ratio = expect[layer]["sorted_rel"].mean() / ref["control"][layer + "_sorted"]
            assert 1 - entry[layer]["equivariance_score"] == pytest.approx(ratio, rel=TOL)
        assert entry["conv1"]["aligned_rel_max"] == pytest.approx(expect["conv1"]["aligned_rel"].max(), rel=TOL)
    # the summary: every image's mean over the three quarter-turns, then over images
    for (layer, metric), values in per_image.items():
        means = np.mean(values, axis=0)
        assert sec["summary"][layer][metric] == pytest.approx(means.mean(), rel=TOL, abs=1e-9)
        assert sec["summary"][layer][f"{metric}_se"] == pytest.approx(means.std(ddof=1) / 3, rel=1e-4, abs=1e-9)
    assert sec["summary"]["count"] == 27


def test_sections_follow_the_schema(net):
    x, y = _images(n=6)
    layers = ["conv1", "conv2", "logits"]
    for fam in (Rotation90(), Flip(), Rotation(max_angle=10, step=10), SubpixelTranslation(max_offset=0.5, step=0.5)):
        sec = measure_family(net, x, y, fam, layers=layers)
        json.dumps(Results(sec).to_dict(), allow_nan=False)
        assert sec["family"] == fam.name and sec["config"] == fam.to_dict() and sec["parameter"] == fam.parameter
        assert sec["dims"] == 1 and sec["n_images"] == 6 and sec["layers"] == layers
        assert sec["precision"] == {"dtype": "float32", "exact_tol": 1e-5}
        assert sec["kind"] == "transform" and list(sec["groups"]) == ["param"]
        assert len(sec["groups"]["param"]) == len(fam.params()) and sec["summary"]["count"] == 6 * len(fam.params())
        for block in [e for e in sec["groups"]["param"]] + [sec["summary"]]:
            for layer in ("conv1", "conv2"):
                # the sorting test only where the family permutes pixels
                assert ("sorted_rel" in block[layer]) == fam.permutes_pixels
                assert ("equivariance_score" in block[layer]) == fam.permutes_pixels
            assert "invariance_score_ci" in block["logits"] and "shifted_acc" in block["logits"]
        # conv2's sampling grid (stride 2 on 12 pixels) is not symmetric: no map action for the symmetric
        # families, a note instead; a sub-pixel shift acts on any strided map
        symmetric = fam.kind != "subpixel"
        assert ("aligned_rel" in sec["groups"]["param"][0]["conv2"]) != symmetric
        assert (sec["map_action"]["conv2"]["note"] is not None) == symmetric
        assert "aligned_rel" in sec["groups"]["param"][0]["conv1"] and sec["map_action"]["conv1"]["defined"]
        assert ("conv1" in sec["exact"]) == fam.exact_test


def test_a_2d_subpixel_grid_reports_its_offsets(net):
    x, _ = _images(n=4)
    fam = SubpixelTranslation(max_offset=0.5, step=0.5, axes="both", method="fourier", mode="roll")
    sec = measure_family(net, x, None, fam, layers=["conv1", "conv2"])
    assert sec["dims"] == 2 and sec["parameter"] == "offset_px" and sec["classifier"] is None
    blocks = sec["groups"]["param"]
    assert [e["param"] for e in blocks] == [[oy, ox] for oy, ox in fam.params()] and len(blocks) == 8
    assert sec["accuracy"] is None and sec["predictions"] is None and "consistency" not in sec["summary"]["conv2"]


def test_threads_give_the_same_sums_as_one_thread(net):
    """Two worker threads sum the batches in the same order as one; each runs torch at one thread (one
    worker: torch's own threads), so a kernel may split its work apart: float32 precision."""
    x, y = _images(n=8)
    one = measure_family(net, x, y, Rotation90(), layers=["conv1", "logits"], batch_size=2, workers=1)
    two = measure_family(net, x, y, Rotation90(), layers=["conv1", "logits"], batch_size=2, workers=2)
    assert_same_figures(one, two, torch.float32)


def test_two_rank_split_sums_to_the_single_process_section(net):
    x, y = _images(n=7)
    fam = Flip()
    whole = measure_family(net, x, y, fam, layers=["conv1", "logits"])
    parts = []
    for rank in (0, 1):
        sums = {}
        measure_family(net, x, y, fam, layers=["conv1", "logits"], rank=rank, world_size=2, sums=sums)
        parts.append(sums)
    merged = parts[0]["section"](merge_sums([q["raw"] for q in parts]))
    # each rank runs its own batches (another composition, maybe other kernels): float32 precision
    assert_same_figures(merged, {k: v for k, v in whole.items() if k not in ("seconds", "fast_path")}, torch.float32)


# -- measure(transform=[...]) ---------------------------------------------------------------------
def _without_timing(d):
    if isinstance(d, dict):
        return {k: _without_timing(v) for k, v in d.items() if k not in ("seconds", "seconds_total", "families")}
    if isinstance(d, list):
        return [_without_timing(v) for v in d]
    return d


def test_measure_with_a_list_keeps_the_translation_figures(net):
    x, y = _images(n=6)
    layers = ["conv1", "conv2", "logits"]
    alone = measure(net, x, y, layers=layers, transform=Translation(max_shift=1))
    both = measure(net, x, y, layers=layers, transform=[Translation(max_shift=1), Rotation90()])
    assert list(alone["families"]) == ["translation"] and list(both["families"]) == ["translation", "rot90"]
    assert alone["primary"] == both["primary"] == "translation" and alone["schema_version"] == 3
    # the same translation measurement (same batches, same kernels) as alone: to float64's tolerance
    assert_same_figures(_without_timing(both.families["translation"].to_dict()),
                        _without_timing(alone.families["translation"].to_dict()), torch.float64)
    assert alone.summary == alone["families"]["translation"]["summary"]
    assert [e["param"] for e in both.families["rot90"]["groups"]["param"]] == [1, 2, 3]


def test_measure_a_family_alone_with_its_untrained_control(net):
    x, y = _images(n=6)
    torch.manual_seed(5)
    untrained = TinyCNN().eval()
    res = measure(net, x, y, layers=["conv1", "logits"], transform="flip", untrained=untrained)
    assert set(res.families) == {"flip"} and res["primary"] == "flip"
    assert res.summary == res.families["flip"].summary and res.summary["count"] == 12
    un = res.families["flip"].untrained
    assert un is not None and un["family"] == "flip" and un.summary["conv1"]["cos"] != res.summary["conv1"]["cos"]
    with pytest.raises(ValueError, match="'flip' twice"):
        measure(net, x, y, transform=[Flip(), Flip(axes=["vertical"])])
    with pytest.raises(ValueError, match="square"):
        measure(net, torch.rand(4, 12, 14), transform=[Translation(max_shift=1), Rotation90()])
    with pytest.raises(TypeError, match="transform=3"):
        measure(net, x, transform=3)


# -- untrained initialisations and the Lie derivative through measure() -----------------------------
def test_untrained_inits_are_the_untrained_network_and_seeded_copies(net):
    x, y = _images(n=6)
    torch.manual_seed(5)
    untrained = TinyCNN().eval()
    res = measure(net, x, y, layers=["conv1", "logits"], transform=[Translation(max_shift=1), Rotation90()],
                  untrained=untrained, untrained_inits=3, control_seed=2)
    for name in ("translation", "rot90"):
        section = res["families"][name]
        inits = section["untrained_inits"]
        assert inits["k"] == 3
        family = Translation(max_shift=1) if name == "translation" else Rotation90()
        nets = [untrained] + [reinitialised_copy(untrained, 2 + k) for k in (1, 2)]
        values = [measure_family(n, x, y, family, layers=["conv1", "logits"], control_seed=2)["summary"]["logits"]
                  ["invariance_score"] for n in nets]
        assert values[0] == section["untrained"]["summary"]["logits"]["invariance_score"]
        stats = inits["summary"]["logits"]["invariance_score"]
        assert stats["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert stats["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    with pytest.raises(ValueError, match="untrained_inits=2 needs untrained="):
        measure(net, x, transform=Translation(max_shift=1), untrained_inits=2)
    with pytest.raises(ValueError, match="untrained_inits=0"):
        measure(net, x, transform=Translation(max_shift=1), untrained=untrained, untrained_inits=0)


def test_reinitialised_copy_draws_as_a_fresh_network_and_keeps_the_global_state():
    torch.manual_seed(7)
    fresh = TinyCNN()
    other = TinyCNN()
    state = torch.random.get_rng_state()
    copy_ = reinitialised_copy(other, 7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(copy_.state_dict().values(), fresh.state_dict().values(), strict=True))


def test_the_lie_derivative_is_a_section_of_the_same_engine(net):
    """measure(lie_derivative=...) gives lie_derivative()'s numbers (the same images: the seeded subset of the
    measured ones), in one section with a control block, the untrained network and the primary key."""
    from shiftprobe.probe.engine import subset_indices
    from shiftprobe.probe.lie import lie_derivative, lie_result

    x, _ = _images(n=8)
    torch.manual_seed(5)
    untrained = TinyCNN().eval()
    res = measure(net, x, layers=["conv1", "logits"], transform=[], lie_derivative=["translate_x", "rotate"],
                  lie_derivative_images=5, untrained=untrained, control_seed=1)
    assert list(res["families"]) == ["lie_derivative"] and res["primary"] == "lie_derivative"
    section = res["families"]["lie_derivative"]
    assert section["kind"] == "lie_derivative" and section["n_images"] == 5 and "dist" in section["control"]["logits"]
    assert [b["param"] for b in section["groups"]["param"]] == ["translate_x", "rotate"]
    direct = lie_derivative(net, x[subset_indices(8, 5, 1)], layers=["conv1", "logits"], generators=["translate_x", "rotate"])
    got = lie_result(section)
    for layer in ("conv1", "logits"):
        for g in ("translate_x", "rotate"):
            for metric in ("rel", "rel_se", "abs", "abs_se"):
                assert got[layer][g][metric] == pytest.approx(direct[layer][g][metric], rel=1e-9), (layer, g, metric)
    assert section["untrained"]["groups"]["param"][0]["conv1"]["abs"] != section["groups"]["param"][0]["conv1"]["abs"]
    with pytest.raises(ValueError, match="measures nothing"):
        measure(net, x, transform=[])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lie_derivative_images": 0}, r"^lie_derivative_images=0: .* at least 1 image"),
    ({"lie_derivative_images": 2.5}, r"^lie_derivative_images=2.5: .* at least 1 image"),
    ({"max_images": 2.5}, r"^max_images=2.5: .* at least 2 images"),
])
def test_subset_sizes_are_checked_before_any_family_is_measured(net, monkeypatch, kwargs, match):
    """lie_derivative_images=1 was refused as 'max_images=1' after every family had been measured."""
    import shiftprobe.probe.measure as m

    x, _ = _images(n=8)
    one = measure(net, x, layers=["conv1"], transform=[], lie_derivative=["translate_x"], lie_derivative_images=1)
    assert one["families"]["lie_derivative"]["n_images"] == 1  # as lie_derivative() takes one image
    monkeypatch.setattr(m, "measure_section", lambda *a, **k: pytest.fail("measured before the check"))
    with pytest.raises(ValueError, match=match):
        measure(net, x, layers=["conv1"], transform=Translation(1), lie_derivative=["translate_x"], **kwargs)


def test_the_lie_derivative_split_over_two_ranks_sums_to_one_process(net):
    """DDP for the Lie derivative: two ranks' merged sums give the single process's section (float64)."""
    from shiftprobe.probe.inputs import check_inputs
    from shiftprobe.probe.lie import lie_section

    x, _ = _images(n=7)
    net64 = copy.deepcopy(net).double()
    pixels, _, feed = check_inputs(net64, x.double())
    kw = dict(layers=["conv1", "conv2", "logits"], batch_size=3)
    whole = lie_section(net64, pixels, feed, ["translate_x", "scale"], **kw)
    parts = []
    for rank in (0, 1):
        sums: dict = {}
        lie_section(net64, pixels, feed, ["translate_x", "scale"], rank=rank, world_size=2, sums=sums, **kw)
        parts.append(sums)
    merged = parts[0]["section"](merge_sums([p["raw"] for p in parts]))
    assert_same_figures(merged, {k: v for k, v in whole.items() if k != "seconds"}, torch.float64)


def test_a_device_other_than_the_models_is_refused_in_one_line():
    """``device`` names where to measure; a model whose weights are elsewhere failed deep in its forward with
    torch's words: refused up front, naming the fix."""
    from shiftprobe.probe.lie import lie_derivative

    torch.manual_seed(0)
    net = TinyCNN().eval()
    images, labels = _images()
    fix = r"device='meta', but the model's weights are on cpu: move the model there first \(model.to\('meta'\)\)"
    for call in (lambda: measure(net, images, labels, device="meta"), lambda: lie_derivative(net, images, device="meta")):
        with pytest.raises(ValueError, match=fix) as err:
            call()
        assert "\n" not in str(err.value)
    default = measure(net, images, labels, examples=False)
    for name in ("cpu", "cpu:0", torch.device("cpu", 0)):  # the model's own device, named (cpu:0 is the cpu)
        named = measure(net, images, labels, device=name, examples=False)
        assert_same_figures(named.families["translation"].to_dict(), default.families["translation"].to_dict())
