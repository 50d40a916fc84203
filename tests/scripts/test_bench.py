"""``scripts/bench.py --quick`` on synthetic MNIST: every figure is measured and written (not the targets)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import (  # noqa: E402
    TARGETS,
    VARIANTS,
    _run_child,
    _test_set,
    bare_training,
    format_table,
    gpu_bench,
    run_bench,
    targets,
    variant_speeds,
)


def positive(x) -> bool:
    return isinstance(x, float) and x > 0


@pytest.mark.slow
def test_quick_bench_structure(mnist_root, tmp_path):
    result = run_bench(str(mnist_root), repeats=1, quick=True, workdir=tmp_path / "work", log=lambda _: None)
    t, m, e, p = (result[k] for k in ("training", "measurement", "end_to_end", "peak_memory"))
    for value in (t["project_images_per_s"], t["lab_images_per_s"], t["ratio"], t["bare_images_per_s"], t["ratio_to_bare"]):
        assert positive(value)
    assert positive(m["both_networks_seconds"]) and m["both_networks_images"] == 32
    assert result["gpu"] is None or positive(result["gpu"]["epoch_seconds"])
    assert [g["key"] for g in result["targets"]] == [f"{s}.{k}" for _, _, (s, k), *_ in TARGETS]
    for value in (m["measure_pairs_per_s"], m["forward_pairs_per_s"], m["ratio"]):
        assert positive(value)
    assert m["pairs"] == m["images"] * (2 * m["max_shift"] + 1) ** 2
    assert result["variants"]["images"] == 16 and positive(result["variants"]["blurpool_ratio"])
    assert positive(e["wall_s"]) and 0 < e["first_step_s"] < e["wall_s"] and 0 < e["first_step_share"] < 1
    assert p["peak_rss_bytes"] > 50 * 2**20 and e["peak_rss_bytes"] > 50 * 2**20
    json.dumps(result)  # JSON-serialisable
    table = format_table(result)
    assert "training (images/s)" in table and "peak RSS" in table and "QUICK" in table
    assert "plain in-memory loop" in table and "| target | measured | goal | met |" in table


def fake_result(gpu=None, ratio_to_bare=0.95, seconds=20.0, blurpool_ratio=1.8) -> dict:
    """A hand-built bench result: every key format_table and targets read."""
    return {
        "training": {"project_images_per_s": 19000.0, "lab_images_per_s": 14000.0, "ratio": 19 / 14,
                     "bare_images_per_s": 19000.0 / ratio_to_bare, "ratio_to_bare": ratio_to_bare},
        "measurement": {"measure_pairs_per_s": 90000.0, "forward_pairs_per_s": 30000.0, "ratio": 3.0, "max_shift": 4,
                        "both_networks_seconds": seconds, "both_networks_images": 10000},
        "end_to_end": {"command": "python train.py trainer.max_epochs=1", "wall_s": 60.0, "first_step_s": 6.0,
                       "first_step_share": 0.1, "peak_rss_bytes": 2**30},
        "peak_memory": {"peak_rss_bytes": 3 * 2**30, "grid": "17x17", "n_images": 10000, "wall_s": 30.0},
        "variants": {
            "images": 500, "max_shift": 4, "blurpool_ratio": blurpool_ratio,
            **{name: {"seconds": 1.0 + i, "ratio_to_lab": 1.0 + i, "fast_path": i < 2} for i, name in enumerate(VARIANTS)},
        },
        "gpu": gpu,
        "machine": {"cpu_count": 2, "torch_threads": 2, "torch": "x", "lightning": "y"},
        "repeats": 3,
        "quick": False,
    }


def test_targets_say_which_are_met():
    goals = {g["key"]: g for g in targets(fake_result())}
    assert goals["training.ratio_to_bare"]["met"] and goals["training.ratio_to_bare"]["goal"] == 0.9
    assert not goals["measurement.both_networks_seconds"]["met"]  # 20 s > 12 s
    assert goals["measurement.ratio"]["met"]  # 3.0 >= 3: the bound is met
    assert not goals["peak_memory.peak_rss_bytes"]["met"]  # 3 GB > 2 GB
    assert goals["variants.blurpool_ratio"]["met"]  # 1.8 <= 2
    assert not {g["key"]: g for g in targets(fake_result(blurpool_ratio=2.1))}["variants.blurpool_ratio"]["met"]
    assert not targets(fake_result(ratio_to_bare=0.89))[0]["met"]


def test_table_states_targets_and_the_gpu_section():
    table = format_table(fake_result())
    lines = table.splitlines()
    assert lines[0] == "| target | measured | goal | met |"
    assert "| 1. training, project / plain in-memory loop | 0.95x | >= 0.90x | yes |" in lines
    assert "| 2. measurement of both networks, every test image | 20.0 s | <= 12.0 s | **no** |" in lines
    assert "| 5. peak RSS, 17x17 measurement | 3.00 GB | <= 2.00 GB | **no** |" in lines
    assert "| 3. blur-pool measurement / the lab's | 1.80x | <= 2.00x | yes |" in lines
    assert "| blurpool | 2.00 | 2.00 | yes |" in lines and "| circular | 3.00 | 3.00 | no |" in lines
    assert "| GPU | no GPU on this machine |" in lines and "QUICK" not in table
    gpu = {"device": "NVIDIA H100", "project_images_per_s": 50000.0, "bare_images_per_s": 60000.0,
           "ratio_to_bare": 50 / 60, "batches": 860, "epoch_seconds": 1.1, "both_networks_seconds": 2.5,
           "both_networks_images": 10000}
    table = format_table(fake_result(gpu=gpu))
    assert "GPU (NVIDIA H100)" in table and "| GPU: 860 training batches (one epoch) | 1.10 s |" in table


def test_variant_speeds_time_every_network_against_the_lab(mnist_root):
    images, labels = _test_set(str(mnist_root), 6)
    out = variant_speeds(images, labels, max_shift=1, repeats=1)
    json.dumps(out)
    assert out["lab"]["ratio_to_lab"] == 1.0 and out["blurpool_ratio"] == out["blurpool"]["ratio_to_lab"]
    assert all(positive(out[name]["seconds"]) for name in VARIANTS)
    # the crop fast path serves the networks with valid convolutions, not the circular or zero-padded ones
    assert {name for name in VARIANTS if out[name]["fast_path"]} == {"lab", "blurpool", "gap", "allconv"}


def test_child_peak_rss_is_the_childs_own(tmp_path):
    """A child started by the benchmark reports its own peak, not the benchmark's resident set (Linux keeps
    the high-water mark across fork and exec: without the launcher, the child would report >= 300 MB)."""
    held = bytearray(300 * 2**20)  # this process: +300 MB resident
    held[:: 4096] = b"x" * len(held[:: 4096])
    out = _run_child([sys.executable, "-c", "x = bytearray(20 * 2**20)"], tmp_path / "child.log")
    assert 20 * 2**20 < out["peak_rss_bytes"] < 250 * 2**20
    del held


def test_bare_loop_trains_the_lab_net(mnist_root):
    out = bare_training(str(mnist_root), 3, keep_net=True)
    assert out["batches"] == 3 and out["images"] == 3 * 64 and positive(out["images_per_s"])
    again = bare_training(str(mnist_root), 3, keep_net=True)  # seeded: the same weights
    for (k, a), b in zip(out["net"].state_dict().items(), again["net"].state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_gpu_section_runs_on_any_device(mnist_root, tmp_path):
    """The ``gpu`` section's code, on the CPU (``device="cpu"``), tiny: every key is a positive number."""
    out = gpu_bench(str(mnist_root), "cpu", repeats=1, quick=True, workdir=tmp_path, n_batches=2, both_images=8,
                    max_shift=1)
    json.dumps(out)
    assert out["device"] == "cpu" and out["batches"] == 2 and out["both_networks_images"] == 8
    for key in ("project_images_per_s", "bare_images_per_s", "ratio_to_bare", "epoch_seconds", "both_networks_seconds"):
        assert positive(out[key]), key


def test_bench_script_help():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--repeats" in done.stdout and "--quick" in done.stdout
