"""ShiftProbeCallback with ``transforms``: every family is measured (trained and untrained) by one call of
``shiftprobe.measure`` into results.json ``families``, results.md and ``<family>.png``; the translation's
figures do not depend on the other families."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from test_callbacks import TinyData, TinyModule

import shiftprobe.probe.measure as measure_module
from shiftprobe.lit.callbacks import ShiftProbeCallback

#: what differs between two runs of the same measurement: the clock
TIMING = ("seconds", "seconds_total")


def run(tmp_path, name: str, **kwargs) -> tuple[dict, str, ShiftProbeCallback]:
    out = tmp_path / name
    cb = ShiftProbeCallback(max_shift=1, batch_size=16, output_dir=str(out), progress=False, **kwargs)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name=name), callbacks=[cb],
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    module = TinyModule()
    with torch.no_grad():
        module.net.conv1.weight.mul_(1.5)
    trainer.test(module, datamodule=TinyData(n=24))
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text(), cb


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def test_translation_alone_is_unchanged_and_rot90_is_added(tmp_path):
    plain, plain_md, _ = run(tmp_path, "plain", figures=False)
    both, both_md, _ = run(tmp_path, "both", figures=True, transforms={"translation": {}, "rot90": {}})
    assert list(plain["families"]) == ["translation"] and list(both["families"]) == ["translation", "rot90"]
    # every translation figure identical
    assert without_timing(both["families"]["translation"]) == without_timing(plain["families"]["translation"])
    rot = both["families"]["rot90"]
    blocks = rot["groups"]["param"]
    assert rot["family"] == "rot90" and [e["param"] for e in blocks] == [1, 2, 3]
    assert rot["n_images"] == 24 and rot["seconds"] > 0 and rot["untrained"]["n_images"] == 24
    assert "invariance_score_ci" in blocks[0]["fc1"] and "equivariance_score" in blocks[0]["conv1"]
    # the untrained section measures the initial weights, not the trained (modified) ones
    assert rot["untrained"]["groups"]["param"][0]["conv1"] != blocks[0]["conv1"]
    # results.md: today's report, then the rot90 table (one row per quarter turn and one over all)
    head = plain_md.split("- **Measurement time**")[0]
    assert both_md.startswith(head) and "## Rotations by 90° (`rot90`)" in both_md
    table = both_md.split("## Rotations by 90° (`rot90`)")[1]
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == [
        "k=1 (90°)", "k=2 (180°)", "k=3 (270°)", "**all**",
    ]
    out = tmp_path / "both"
    for name in ("heatmaps.png", "radial.png", "rot90.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = (tmp_path / "both" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "probe_rot90/fc1/invariance_score" in metrics and "probe_rot90/untrained/fc1/invariance_score" in metrics


def test_without_translation_only_the_families(tmp_path):
    res, md, _ = run(tmp_path, "flip", figures=True, transforms=["flip"])
    assert list(res["families"]) == ["flip"] and res["primary"] == "flip"
    assert res["subset"]["n_images"] == 24 and res["seconds_total"] > 0
    flip = res["families"]["flip"]
    assert [e["param"] for e in flip["groups"]["param"]] == ["horizontal", "vertical"] and "untrained" in flip
    assert md.startswith("# shiftprobe: how invariant / equivariant is each layer?") and "## Flips (`flip`)" in md
    assert sorted(p.name for p in (tmp_path / "flip").glob("*.png")) == ["flip.png"]


def test_family_settings_reach_the_engine_with_the_rank(tmp_path, monkeypatch):
    """Each family is built from its settings and measured with this process's rank and world size
    (the engine splits the images and reduces the sums across ranks, as for translation)."""
    calls = []
    real = measure_module.measure_section

    def spy(model, images, family, feed, **kwargs):
        calls.append((family, kwargs))
        return real(model, images, family, feed, **kwargs)

    monkeypatch.setattr(measure_module, "measure_section", spy)
    res, _, cb = run(tmp_path, "spy", figures=False, untrained=False,
                     transforms={"rotation": {"max_angle": 20.0, "step": 10.0}})
    assert [c[0].params() for c in calls] == [[-20.0, -10.0, 10.0, 20.0]]  # no untrained: one call
    kwargs = calls[0][1]
    assert kwargs["rank"] == 0 and kwargs["world_size"] == 1
    assert kwargs["control_seed"] == cb.seed and kwargs["batch_size"] == 16
    assert "untrained" not in res["families"]["rotation"]


def test_bad_family_settings_fail_when_the_callback_is_built():
    with pytest.raises(ValueError, match="transform.rotation"):
        ShiftProbeCallback(transforms={"rotation": {"step": -1.0}})
    with pytest.raises(ValueError, match="measures nothing"):
        ShiftProbeCallback(transforms=[])
