"""DDP on the CPU with ``transform=[translation,rot90]``: each rank measures its share of the images
for every family, the sums are reduced across ranks, and results.json (families included) equals one
process's on the same weights to 1e-6."""

import json

import pytest
from conftest import test_overrides, write_synthetic_mnist
from test_ddp import assert_same_numbers, run_cli, single_run_dir


@pytest.mark.slow
def test_ddp_cpu_families_equal_one_process(tmp_path_factory, tmp_path):
    mnist_root = write_synthetic_mnist(tmp_path_factory.mktemp("mnist_odd"), n_test=101)
    base = [
        a
        for a in test_overrides(mnist_root, tmp_path)
        if not a.startswith(("paths.output_dir", "callbacks=", "+trainer.enable_progress_bar"))
    ]
    probe = ["callbacks=[model_checkpoint,shift_probe]", "callbacks.shift_probe.figures=false",
             "callbacks.shift_probe.progress=false", "shift=small", "transform=[translation,rot90]"]
    ddp_logs = tmp_path / "ddp_logs"
    run_cli("train.py", [*base, *probe, "trainer=ddp_cpu", "+trainer.limit_train_batches=3",
                         f"paths.log_dir={ddp_logs}"], cwd=tmp_path)
    ddp_run = single_run_dir(ddp_logs)
    ddp = json.loads((ddp_run / "results.json").read_text())
    # eval.py restores the run's families: its command line names none
    one_logs = tmp_path / "single_logs"
    run_cli("eval.py", [*base, *probe[:-1], "trainer=cpu", f"ckpt_path={ddp_run}/checkpoints/best.ckpt",
                        f"paths.log_dir={one_logs}"], cwd=tmp_path)
    single = json.loads((single_run_dir(one_logs) / "results.json").read_text())
    rot = ddp["families"]["rot90"]
    assert rot["n_images"] == 101 and rot["summary"]["count"] == 3 * 101 and "untrained" in rot
    assert_same_numbers(ddp, single)
