"""reporting/verdicts.py: reading a schema-3 results dict and the verdicts as data."""

from __future__ import annotations

from results_factory import GEOMETRY, make_fake_results, translation

from shiftprobe.reporting import verdicts as v


def test_conv_layers_and_strides_come_from_the_geometry():
    t = translation(make_fake_results(engine_keys=True))
    assert v.strides(t) == {"conv1": 1, "conv2": 2} and v.conv_layers(t) == ["conv1", "conv2"]
    t["geometry"]["conv2"] = {**GEOMETRY["conv2"], "stride": [1, 2]}
    assert v.strides(t)["conv2"] == [1, 2] and v.stride_of(t, "conv2") == (1, 2)
    t["geometry"]["conv1"] = {**GEOMETRY["conv1"], "stride": None}  # a map without an exact test
    assert not v.is_conv(t, "conv1") and v.is_spatial(t, "conv1") and v.key_metric(t, "conv1") == "invariance_score"
    assert v.vector_layers(t) == ["fc1", "logits"]


def test_sections_of_a_results_dict():
    res = make_fake_results()
    lie = {"family": "lie_derivative", "kind": "lie_derivative", "layers": [], "groups": {"param": []}, "summary": {}}
    rot = {"family": "rot90", "kind": "transform", "layers": [], "groups": {"param": []}, "summary": {}}
    res["families"].update(lie_derivative=lie, rot90=rot)
    assert v.translation(res) is res["families"]["translation"]
    assert list(v.transform_families(res)) == ["rot90"] and v.lie_section(res) is lie
    t = translation(res)
    assert [name for name, _ in v.networks(t)] == ["trained", "untrained"] and v.networks(None) == []
    assert v.block(t, "parity", "even")["param"] == "even" and v.block(t, "radius", 7) is None
    assert v.radii(t) == [0, 1, 2] and len(v.nonzero_shifts(t)) == 24


def test_exactness_words_and_tolerance():
    t = translation(make_fake_results(engine_keys=True, dtype="float64"))
    assert v.exact_tol(t) == 1e-9 and v.exact_tol({}) == 1e-5
    assert [v.exactness(x, 1e-5) for x in (None, 9e-6, 1e-5)] == ["n/a", "exact", "not exact"]


def test_conv_exactness_counts_from_the_shift_blocks():
    t = translation(make_fake_results(max_shift=2, conv2_aligned=2e-7))
    ex = v.conv_exactness(t, "conv2")
    # 24 non-zero shifts, 8 with both components even (stride 2 divides them), all exact
    assert (ex["kind"], ex["n_shifts"], ex["n_alignable"], ex["n_exact"]) == ("stride", 24, 8, 8)
    assert ex["stride"] == 2 and ex["max_aligned"] == 2e-7 and v.alignable_block(t, ex)["param"] == "even"
    t["groups"]["param"][0]["conv2"]["aligned_rel"] = 0.5  # (-2, -2): even, now far from exact
    ex = v.conv_exactness(t, "conv2")
    assert ex["kind"] == "partial" and ex["worst_shift"] == (-2, -2) and ex["max_aligned"] == 0.5


def test_training_effect_needs_more_than_same_score_and_the_intervals():
    a = {"fc1": {"invariance_score": 0.6, "invariance_score_ci": [0.58, 0.62], "rel": 0.2}}
    b = {"fc1": {"invariance_score": 0.5, "invariance_score_ci": [0.48, 0.52], "rel": 0.3}}
    assert v.training_effect(a, b, "fc1") == (1, -1)  # 0.1 apart: beyond SAME_SCORE (0.05) and 0.02 + 0.02
    b["fc1"]["invariance_score_ci"] = [0.4, 0.6]  # half-widths 0.02 + 0.1: the difference is within them
    assert v.training_effect(a, b, "fc1")[0] == 0


def test_interval_compare():
    a = {"fc1": {"invariance_score": 0.9, "invariance_score_ci": [0.88, 0.92]}}
    b = {"fc1": {"invariance_score": 0.4, "invariance_score_ci": [0.38, 0.42]}}
    assert v.interval_compare(a, b, "fc1") == (1, "") and v.interval_compare(b, a, "fc1") == (-1, "")
    assert v.interval_compare(a, a, "fc1") == (0, "the 95 % intervals overlap")
    near = {"fc1": {"invariance_score": 0.87, "invariance_score_ci": [0.869, 0.871]}}
    assert v.interval_compare(a, near, "fc1") == (0, "they differ by less than 0.05")
    assert v.interval_compare(a, {"fc1": {"invariance_score": 0.4}}, "fc1")[0] is None


def test_layerwise_reading():
    section = {"layerwise": {"layerwise": {"conv1": {"rotate": {"contribution": {"rel": 0.0}}}}}}
    assert list(v.layerwise(section, "layerwise")) == ["conv1"] and v.layerwise(section, "layerwise_total") == {}
    entry = v.layerwise(section, "layerwise", "conv1")
    assert not v.has_contribution(entry, ["rotate"])
    entry["rotate"]["contribution"]["rel"] = 1e-3
    assert v.has_contribution(entry, ["rotate"]) and v.layerwise(None, "layerwise") == {}
