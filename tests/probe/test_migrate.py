"""probe/migrate.py: results.json of shiftprobe 0.2 (and before) -> schema 3, every number unchanged.

The 0.2 files are the reference runs of tests/reporting/data (see test_markdown_golden.py). The checks
here read the 0.2 shape directly (shifts, radial, parity, entries, the Lie derivative's dict) and look
each figure up where schema 3 keeps it: an independent statement of the mapping."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from shiftprobe.probe.migrate import SCHEMA_VERSION, migrate, schema_version

DATA = Path(__file__).parents[1] / "reporting" / "data"
NAMES = sorted(p.name[: -len(".json.gz")] for p in DATA.glob("*.json.gz"))


def old_file(name: str) -> dict:
    return json.loads(gzip.decompress((DATA / f"{name}.json.gz").read_bytes()))


def _by_param(blocks: list[dict]) -> dict:
    return {json.dumps(b["param"]): b for b in blocks}


def _same_translation(old: dict, section: dict) -> None:
    assert section["family"] == "translation" and section["kind"] == "transform"
    assert section["config"]["max_shift"] == old["max_shift"] and section["config"]["mode"] == old["shift_mode"]
    assert section["config"]["pattern"] == old["shift_pattern"]
    for key in ("accuracy", "accuracy_se", "n_images", "layers", "classifier", "geometry", "control", "summary",
                "precision", "predictions", "seconds", "untrained_inits"):
        assert section.get(key) == old.get(key), key
    params = _by_param(section["groups"]["param"])
    assert len(params) == len(old["shifts"])
    for entry in old["shifts"]:
        block = params[json.dumps([entry["dy"], entry["dx"]])]
        assert {k: v for k, v in entry.items() if k not in ("dy", "dx")} == {k: v for k, v in block.items() if k != "param"}
    radius = _by_param(section["groups"]["radius"])
    for row in old["radial"]:
        assert {k: v for k, v in row.items() if k != "radius"} == {k: v for k, v in radius[str(row["radius"])].items()
                                                                     if k != "param"}
    parity = _by_param(section["groups"]["parity"])
    for name, group in old["parity"].items():
        assert group == {k: v for k, v in parity[json.dumps(name)].items() if k != "param"}
    if "untrained" in old:
        _same_translation(old["untrained"], section["untrained"])


def _same_lie(old: dict, section: dict) -> None:
    assert section["kind"] == "lie_derivative" and section["layers"] == old["layers"]
    assert section["config"]["generators"] == old["generators"] and section["config"]["units"] == old["units"]
    blocks = _by_param(section["groups"]["param"])
    for layer in old["layers"]:
        for g in old["generators"]:
            assert (old[layer] or {}).get(g) == blocks[json.dumps(g)].get(layer)
    for key in (k for k in old if k.startswith("layerwise")):
        assert section["layerwise"][key] == old[key]


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_of_a_0_2_file_is_where_schema_3_keeps_it(name):
    old = old_file(name)
    new = migrate(copy.deepcopy(old))
    assert new["schema_version"] == SCHEMA_VERSION and schema_version(old) == 2 and new["migrated_from"] == "0.2"
    assert new["primary"] == next(iter(new["families"]))
    for key in ("subset", "seconds_total", "untrained_origin"):
        assert new.get(key) == old.get(key)
    if "shifts" in old:
        assert list(new["families"])[0] == "translation"
        _same_translation(old, new["families"]["translation"])
    for family, section in (old.get("families") or {}).items():
        if family == "translation":
            continue  # 0.2's copy of the top level: stored once now
        got = new["families"][family]
        assert {k: v for k, v in section.items() if k not in ("entries", "untrained")} == \
            {k: v for k, v in got.items() if k not in ("groups", "untrained", "kind")}
        assert got["groups"]["param"] == section["entries"]
    if "lie_derivative" in old:
        _same_lie(old["lie_derivative"], new["families"]["lie_derivative"])
        if "lie_derivative" in old.get("untrained", {}):
            _same_lie(old["untrained"]["lie_derivative"], new["families"]["lie_derivative"]["untrained"])


def test_translation_gets_the_exact_test_of_the_other_families():
    old = old_file("lab_grid")
    exact = migrate(old)["families"]["translation"]["exact"]
    tol = old["precision"]["exact_tol"]
    for layer in ("conv1", "conv2"):
        worst = {(e["dy"], e["dx"]): (e[layer] or {}).get("aligned_rel_max") for e in old["shifts"]}
        hits = [[dy, dx] for (dy, dx), w in worst.items() if w is not None and w <= tol]
        assert exact[layer] == {"exact_params": hits, "all": len(hits) == len(worst)}
    assert "fc1" not in exact  # no aligned_rel: no exact test


def test_schema_3_is_returned_as_it_is():
    new = migrate(old_file("families_lab"))
    assert migrate(new) == new and migrate(new) is not new


def test_a_file_from_before_0_2_gets_its_geometry_from_the_strides():
    old = old_file("lab_grid")
    for net in (old, old["untrained"]):
        for key in ("geometry", "classifier", "precision"):
            del net[key]
    old["strides"] = {"conv1": 1, "conv2": [2, 2]}
    t = migrate(old)["families"]["translation"]
    assert t["geometry"]["conv1"] == {"name": "conv1", "kind": "spatial", "stride": [1, 1]}
    assert t["geometry"]["conv2"]["stride"] == [2, 2] and t["geometry"]["fc1"]["kind"] == "vector"
    assert t["classifier"] == "logits" and t["untrained"]["classifier"] == "logits"  # the last probe point
    del old["strides"]
    assert "classifier" not in migrate(old)["families"]["translation"]  # not a file of that version: no guess


def test_every_migrated_file_is_valid_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra's jsonschema validates results.json")
    from importlib.resources import files

    schema = json.loads(files("shiftprobe.probe").joinpath("results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in NAMES:
        assert not list(validator.iter_errors(migrate(old_file(name)))), name
    assert list(validator.iter_errors(old_file("lab_grid")))  # a 0.2 file as it is: not schema 3


def test_a_later_schema_is_refused_in_one_line_not_read_as_schema_3(tmp_path):
    """Its figures may mean other things under the same keys: say so instead of reading them as schema 3's."""
    from shiftprobe import load_results

    newer = {"schema_version": SCHEMA_VERSION + 1, "families": {"translation": {"summary": {}}}}
    with pytest.raises(ValueError, match=rf"schema_version {SCHEMA_VERSION + 1} come from a newer shiftprobe"):
        migrate(newer)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="newer shiftprobe"):
        load_results(path)
