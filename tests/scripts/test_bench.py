"""``scripts/bench.py --quick`` on synthetic MNIST: every figure is measured and written (not the targets)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import format_table, run_bench  # noqa: E402


def positive(x) -> bool:
    return isinstance(x, float) and x > 0


@pytest.mark.slow
def test_quick_bench_structure(mnist_root, tmp_path):
    result = run_bench(str(mnist_root), repeats=1, quick=True, workdir=tmp_path / "work", log=lambda _: None)
    t, m, e, p = (result[k] for k in ("training", "measurement", "end_to_end", "peak_memory"))
    for value in (t["project_images_per_s"], t["lab_images_per_s"], t["ratio"]):
        assert positive(value)
    for value in (m["measure_pairs_per_s"], m["forward_pairs_per_s"], m["ratio"]):
        assert positive(value)
    assert m["pairs"] == m["images"] * (2 * m["max_shift"] + 1) ** 2
    assert positive(e["wall_s"]) and 0 < e["first_step_s"] < e["wall_s"] and 0 < e["first_step_share"] < 1
    assert p["peak_rss_bytes"] > 50 * 2**20 and e["peak_rss_bytes"] > 50 * 2**20
    json.dumps(result)  # JSON-serialisable
    table = format_table(result)
    assert "training (images/s)" in table and "peak RSS" in table and "QUICK" in table


def test_bench_script_help():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--repeats" in done.stdout and "--quick" in done.stdout
