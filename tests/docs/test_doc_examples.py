"""The Python examples of the README and docs/api.md run as written (in a fresh process, in a temp dir);
the README's other checks: tests/docs/test_readme.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_api_doc_example_runs(tmp_path):
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert blocks, "docs/api.md has no python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0], encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results.json").is_file()
    assert "invariance_score" in proc.stdout


@pytest.mark.parametrize("index", [0])
def test_readme_python_example_runs(tmp_path, index):
    blocks = [b for b in python_blocks(ROOT / "README.md") if "shiftprobe.measure" in b]
    assert blocks, "the README has no shiftprobe.measure example"
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[index], encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results.json").is_file()
    assert proc.stdout.splitlines()[0] == "[2, 2]"  # the stride it prints first, inferred from the network
