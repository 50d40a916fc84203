"""``trainer.precision=bf16-mixed`` / ``bf16-true`` train, test and measure on the CPU (issue 8, item 12):
the measurement runs in the network's dtype with a dtype-aware 'exact'."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config, test_overrides

from shiftprobe.app.train import train


@pytest.mark.slow
@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", "float32"), ("bf16-true", "bfloat16")])
def test_bf16_runs_end_to_end(mnist_root, tmp_path, precision, dtype):
    callbacks = "callbacks=[model_checkpoint,shift_probe]"
    overrides = [o if not o.startswith("callbacks=") else callbacks for o in test_overrides(mnist_root, tmp_path)]
    cfg = compose_config(
        "train",
        [*overrides, f"trainer.precision={precision}", "+trainer.limit_train_batches=3", "shift=small",
         "callbacks.shift_probe.figures=false", "callbacks.shift_probe.progress=false",
         "callbacks.shift_probe.max_images=24"],
        tmp_path,
    )
    metrics = train(cfg)
    assert "test/acc" in metrics
    results = json.loads((tmp_path / "results.json").read_text())["families"]["translation"]
    assert results["precision"]["dtype"] == dtype
    tol = results["precision"]["exact_tol"]
    assert all(e["conv1"]["aligned_rel_max"] < tol for e in results["groups"]["param"]) and results["exact"]["conv1"]["all"]
    assert "exactly equivariant at every measured shift" in (tmp_path / "results.md").read_text()
