"""End to end on synthetic MNIST: ``transform=[translation,rot90]`` through train() and eval() (a bad family
setting's one line: ``test_config_checks``, the preflight's subprocess test: ``test_preflight``)."""

from __future__ import annotations

import json

from shiftprobe.app.evaluate import evaluate
from shiftprobe.app.train import train

PROBE = [
    "callbacks=[model_checkpoint,shift_probe]",
    "callbacks.shift_probe.figures=false",
    "callbacks.shift_probe.progress=false",
    "callbacks.shift_probe.max_images=40",
    "shift=small",
    "+trainer.limit_train_batches=5",
]


def test_train_then_eval_measure_the_chosen_families(make_cfg, tmp_path):
    train(make_cfg(*PROBE, "transform=[translation,rot90]", out=tmp_path / "run"))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(res["families"]) == ["translation", "rot90"] and res["primary"] == "translation"
    rot = res["families"]["rot90"]
    assert [e["param"] for e in rot["groups"]["param"]] == [1, 2, 3] and rot["n_images"] == 40 and "untrained" in rot
    md = (tmp_path / "run" / "results.md").read_text()
    table = md.split("## Rotations by 90° (`rot90`)")[1]
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == [
        "k=1 (90°)", "k=2 (180°)", "k=3 (270°)", "**all**",
    ]
    assert "**Measurement time**" in table
    # eval.py on the checkpoint measures the run's families (its command line names none)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    evaluate(make_cfg(*PROBE[:-1], f"ckpt_path={best}", config_name="eval", out=tmp_path / "eval"))
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert list(again["families"]) == ["translation", "rot90"]
    assert again["families"]["rot90"]["summary"]["fc1"] == rot["summary"]["fc1"]

