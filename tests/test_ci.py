"""The CI script runs the linter configured in pyproject.toml, and the code base passes it."""

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT, TESTS, pytest_collection_modifyitems


def commands(script: str) -> list[str]:
    """The script's command lines (comments and blank lines left out)."""
    return [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_ruff_before_pytest():
    lines = commands((ROOT / ".ci" / "run").read_text())
    ruff = [i for i, line in enumerate(lines) if line.startswith("ruff check")]
    tests = [i for i, line in enumerate(lines) if "-m pytest" in line]
    assert ruff and tests, lines
    assert ruff[0] < tests[0]  # lint findings fail fast, before the slow suite


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_check_passes():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", ".", "--output-format", "concise"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_ci_starts_the_slurm_cluster_before_pytest_and_stops_it_at_exit():
    lines = commands((ROOT / ".ci" / "run").read_text())
    start = [i for i, line in enumerate(lines) if "slurm_single_node.sh start" in line]
    tests = [i for i, line in enumerate(lines) if "-m pytest" in line]
    assert start and tests and start[0] < tests[0], lines
    assert any("slurm_single_node.sh stop" in line for line in lines)
    assert "trap cleanup EXIT" in lines and any("stop_slurm" in line for line in lines if "cleanup" not in line)


def test_ci_removes_its_virtual_environment_at_exit():
    """A local run of .ci/run must not leave a 6 GB virtual environment behind in /tmp."""
    lines = commands((ROOT / ".ci" / "run").read_text())
    assert 'venv_dir="$(mktemp -d)"' in lines and 'venv="$venv_dir/venv"' in lines
    assert 'rm -rf "$venv_dir"' in lines and "trap cleanup EXIT" in lines


def test_ci_runs_the_numerics_tests_again_on_the_scalar_kernels_under_the_kernel_jitter():
    """After the whole suite, the tests marked numerics run again with ATEN_CPU_CAPABILITY=default and
    SHIFTPROBE_KERNEL_JITTER=1 (tests/kernel_jitter.py): an assumption of bit-identical floats shows up in CI."""
    lines = commands((ROOT / ".ci" / "run").read_text())
    whole = [i for i, line in enumerate(lines) if line.startswith("run_pytest ||")]
    again = [i for i, line in enumerate(lines) if "run_pytest -m numerics" in line]
    assert whole and again and whole[0] < again[0], lines
    assert "ATEN_CPU_CAPABILITY=default" in lines[again[0]] and "SHIFTPROBE_KERNEL_JITTER=1" in lines[again[0]]
    assert lines[-1] == 'exit "$status"' and "|| status=$?" in lines[again[0]]  # a failure of either fails CI


def test_the_numerics_marker_is_on_the_probe_and_models_tests():
    class Item:
        def __init__(self, path):
            self.path, self.markers = path, []

        def add_marker(self, marker):
            self.markers.append(marker.name)

    items = [Item(TESTS / "probe" / "test_translation.py"), Item(TESTS / "models" / "test_lab.py"),
             Item(TESTS / "data" / "test_augment.py"), Item(TESTS / "test_ci.py")]
    pytest_collection_modifyitems(None, items)
    assert [item.markers for item in items] == [["numerics"], ["numerics"], [], []]
