"""probe/results.py: the ``Results`` object over results.json (schema 3), its frame, and its files."""

from __future__ import annotations

import gzip
import json
import math
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from results_factory import make_fake_results, shift, translation

import shiftprobe
from shiftprobe.probe.migrate import migrate
from shiftprobe.probe.results import Results, load_results, to_jsonable

DATA = Path(__file__).parents[1] / "reporting" / "data"


def old_file(name: str) -> dict:
    """A results.json written by shiftprobe 0.2 (tests/reporting/data)."""
    return json.loads(gzip.decompress((DATA / f"{name}.json.gz").read_bytes()))


def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra's jsonschema validates results.json")
    return jsonschema.Draft202012Validator(json.loads(files("shiftprobe.probe").joinpath("results.schema.json").read_text()))


def test_summary_families_untrained_and_the_primary_fallback():
    res = Results(migrate(old_file("families_lab")))
    assert res["primary"] == "translation" and list(res.families) == ["translation", "rot90", "flip", "rotation",
                                                                       "subpixel", "subpixel_fourier"]
    t = res["families"]["translation"]
    assert res.summary is t["summary"] and res.families["rot90"].summary is res["families"]["rot90"]["summary"]
    assert res.untrained.summary is t["untrained"]["summary"] and res.families["flip"].untrained is not None
    assert res["geometry"] is t["geometry"] and res.get("layers") == ["conv1", "conv2", "fc1", "logits"]
    assert "geometry" in res and "nope" not in res
    with pytest.raises(KeyError):
        res["nope"]
    assert repr(res) == "Results(layers=[conv1, conv2, fc1, logits], n_images=400, untrained=True)"
    # primary is the first family measured, whichever it is
    rot = Results(migrate(old_file("rot_pool_lie")))
    assert rot["primary"] == "rot90" and rot.summary is rot["families"]["rot90"]["summary"]
    assert Results({"families": {}}).summary == {} and Results({"families": {}}).untrained is None


def test_results_of_a_0_2_dict_read_the_same():
    """An in-memory dict of the old shape (the engine before schema 3) answers the same questions."""
    old = old_file("families_lab")
    res = Results(old)
    assert res.summary is old["summary"] and res.untrained.summary is old["untrained"]["summary"]
    assert res.families["rot90"].summary is old["families"]["rot90"]["summary"]
    assert Results(old_file("rot_pool_lie")).summary == old_file("rot_pool_lie")["families"]["rot90"]["summary"]


def test_to_dataframe_rows_of_every_family_group_and_network():
    res = Results(migrate(old_file("families_lab")))
    frame = res.to_dataframe()
    assert list(frame.columns) == ["network", "family", "group", "layer", "dy", "dx", "radius", "param", "metric", "value"]
    assert list(dict.fromkeys(frame.family)) == list(res.families) and set(frame.network) == {"trained", "untrained"}
    t = res["families"]["translation"]
    trained = frame[frame.network == "trained"]
    shifts = trained[(trained.family == "translation") & (trained.group == "shift")]
    assert len(shifts) == sum(len(b[layer]) for b in t["groups"]["param"] for layer in t["layers"])
    row = shifts[(shifts.dy == -1) & (shifts.dx == 1) & (shifts.layer == "fc1") & (shifts.metric == "invariance_score")]
    assert row.radius.item() == 1 and row.value.item() == shift(t, -1, 1)["fc1"]["invariance_score"]
    radius = trained[(trained.group == "radius") & (trained.metric == "rel") & (trained.layer == "fc1")]
    assert list(radius.radius) == [0, 1] and radius.value.tolist() == [b["fc1"]["rel"] for b in t["groups"]["radius"]]
    parity = trained[(trained.group == "parity") & (trained.layer == "conv2") & (trained.metric == "aligned_rel")]
    assert set(parity.param) == {"even", "odd"}
    rot = trained[(trained.family == "rot90") & (trained.group == "param")]
    assert sorted(set(rot.param)) == [1, 2, 3] and rot.dy.isna().all()
    k2 = rot[(rot.param == 2) & (rot.layer == "fc1") & (rot.metric == "invariance_score")]
    assert k2.value.item() == res["families"]["rot90"]["groups"]["param"][1]["fc1"]["invariance_score"]
    assert set(trained[(trained.family == "subpixel") & (trained.group == "param")].param) == {
        f"{axis}:{offset}" for axis in "xy" for offset in (0.25, 0.5, 0.75, 1.0)}
    summary = trained[(trained.family == "flip") & (trained.group == "summary") & (trained.layer == "logits")]
    assert summary[summary.metric == "consistency"].value.item() == res["families"]["flip"]["summary"]["logits"]["consistency"]
    ci = trained[trained.metric == "invariance_score_ci"]
    assert len(ci) and ci.value.isna().all()  # an interval is not one number


def test_to_dataframe_has_the_lie_derivative_generators_and_a_section_alone():
    res = Results(migrate(old_file("rot_pool_lie")))
    lie = res.to_dataframe().query("family == 'lie_derivative'")
    assert set(lie.group) == {"param", "summary"} and set(lie[lie.group == "param"].param) == {
        "translate_x", "translate_y", "rotate"}
    assert set(lie.metric) >= {"abs", "rel", "abs_se", "rel_se"}
    alone = res.families["rot90"].to_dataframe()  # a section's Results
    assert set(alone.family) == {"rot90"} and len(alone) == len(res.to_dataframe().query("family == 'rot90'"))


def test_save_is_json_with_null_for_nan_valid_against_the_schema(tmp_path):
    res = make_fake_results()
    t = translation(res)
    t["accuracy"] = float("nan")
    t["summary"]["fc1"]["rel"] = float("inf")
    path = Results(res).save(tmp_path / "out" / "results.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.startswith('{\n  "schema_version": 3')  # indent 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # written in place, nothing left over
    back = load_results(path)
    assert back["families"]["translation"]["accuracy"] is None and back.summary["fc1"]["rel"] is None
    assert shift(back["families"]["translation"], 1, 0)["conv2"]["aligned_rel"] is None
    assert shift(back["families"]["translation"], 1, 0)["conv1"]["aligned_rel"] == pytest.approx(3e-7)
    # everything else survives unchanged
    assert back.to_dict() == json.loads(json.dumps(res, allow_nan=True).replace("NaN", "null").replace("Infinity", "null"))
    assert not list(validator().iter_errors(json.loads(text)))


def test_load_results_migrates_a_0_2_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old_file("lab_grid")))
    res = load_results(path)
    assert res["schema_version"] == 3 and res["migrated_from"] == "0.2" and list(res.families) == ["translation"]
    assert res.summary == old_file("lab_grid")["summary"]
    again = res.save(tmp_path / "again.json")
    assert load_results(again).to_dict() == res.to_dict() and not list(validator().iter_errors(res.to_dict()))


@pytest.mark.parametrize(("text", "why"), [("not json", "not JSON"), ("", "not JSON"), ("[1, 2]", "not a JSON object"),
                                         ('{"foo": 1}', "no measured family")])
def test_load_results_refuses_a_file_that_is_not_a_results_file(tmp_path, text, why):
    """Another JSON file (a config, Lightning's metrics) read as an empty measurement, or a traceback."""
    path = tmp_path / "other.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{path} is not a shiftprobe results.json: {why}"):
        load_results(path)


def test_to_jsonable_takes_tensors_tuples_and_results():
    back = to_jsonable({"a": torch.tensor(0.5), "b": (1, 2), "c": torch.tensor([float("nan"), 1.0]), "d": Results({"x": 1})})
    assert back == {"a": 0.5, "b": [1, 2], "c": [None, 1.0], "d": {"x": 1}}
    with pytest.raises(TypeError, match="cannot write object"):
        to_jsonable(object())


def test_a_measurement_through_the_api_is_valid_schema_3():
    """What ``shiftprobe.measure`` returns (migrated, should it be of an older shape) validates, frames and
    renders."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(300, 4))
    families = [shiftprobe.Translation(max_shift=1), shiftprobe.Rotation90()]
    res = shiftprobe.measure(net, torch.rand(4, 12, 12), layers=["0", "3"], transform=families)
    data = migrate(res.to_dict())
    assert not list(validator().iter_errors(data))
    assert set(res.to_dataframe().family) == {"translation", "rot90"}
    assert "## Rotations by 90° (`rot90`)" in res.markdown() and math.isfinite(res.summary["3"]["invariance_score"])
