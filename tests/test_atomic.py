"""``shiftprobe.atomic``: a file is complete or not there; a full disk or a read-only folder is one line.

The full disk is simulated (no tmpfs needed): ``disk_faults.FullDisk`` replaces the ``io.FileIO`` the
module writes through.
"""

from __future__ import annotations

import ast
import errno
import io
import json
import logging
from pathlib import Path

import disk_faults
import numpy as np
import pytest
import torch

from shiftprobe import atomic
from shiftprobe.atomic import all_or_none, atomic_write, save_figure, write_text
from shiftprobe.errors import ShiftProbeError, WriteError

full_disk = disk_faults.full_disk  # the fixture


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_text(path, "old")
    write_text(path, '{"a": 1}\n')
    assert json.loads(path.read_text()) == {"a": 1}
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("capacity", [0, 10, 5000])
def test_full_disk_keeps_the_old_file_whole_and_says_one_line(tmp_path, full_disk, capacity):
    path = tmp_path / "results.json"
    write_text(path, "the old, complete file\n")
    full_disk(capacity)
    with pytest.raises(WriteError) as info, atomic_write(path) as fh:
        fh.write(b"x" * 100_000)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "no space left" in message
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert isinstance(info.value, ShiftProbeError)  # the entry points print it as one error line
    assert path.read_text() == "the old, complete file\n"
    assert leftovers(tmp_path) == []


def test_torch_save_on_a_full_disk_is_a_write_error(tmp_path, full_disk):
    """torch.save reports a failed write as a RuntimeError of its own; it still becomes the one line."""
    path = tmp_path / "best.ckpt"
    good = {"w": torch.arange(10.0)}
    with atomic_write(path) as fh:
        torch.save(good, fh)
    full_disk(1000)
    with pytest.raises(WriteError, match="no space left to write best.ckpt"):
        with atomic_write(path) as fh:
            torch.save({"w": torch.zeros(100_000)}, fh)
    assert torch.equal(torch.load(path, weights_only=True)["w"], good["w"])
    assert leftovers(tmp_path) == []


def test_numpy_and_figures_write_atomically(tmp_path):
    from matplotlib.figure import Figure

    with atomic_write(tmp_path / "a.npz") as fh:
        np.savez(fh, x=np.arange(5))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.arange(5))
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    save_figure(fig, tmp_path / "f.png", dpi=20)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, "refused", str(args[0]))

    monkeypatch.setattr(atomic.io, "FileIO", refuse)
    with pytest.raises(WriteError) as info:
        write_text(tmp_path / "results.md", "text")
    assert str(info.value).startswith(f"cannot write results.md in {tmp_path} (")
    assert "\n" not in str(info.value) and info.value.errno == code
    assert not (tmp_path / "results.md").exists()


def test_other_errors_pass_through_and_leave_nothing(tmp_path):
    path = tmp_path / "x.txt"
    with pytest.raises(KeyError):
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write("half")
            raise KeyError("the writer's own error")
    assert not path.exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(path, "a"):
            pass


def test_all_or_none_removes_what_the_block_wrote(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with all_or_none():
            write_text(tmp_path / "results.json", "{}")
            with all_or_none():  # a group inside a group: its files belong to the outer one too
                write_text(tmp_path / "results.md", "#")
            raise KeyboardInterrupt  # Ctrl-C before the figures
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with all_or_none() as written:
        write_text(tmp_path / "a", "1")
    assert written == [tmp_path / "a"] and (tmp_path / "a").read_text() == "1"


def test_a_log_file_on_a_full_disk_drops_lines_quietly(tmp_path, capsys):
    """Hydra's train.log on a full disk printed a ``--- Logging error ---`` traceback per line."""

    class FullStream(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    logger = logging.getLogger("shiftprobe.tests.full_disk_log")
    logger.propagate = False
    handler = logging.FileHandler(tmp_path / "train.log", delay=True)
    handler.stream = FullStream()
    logger.addHandler(handler)
    try:
        logger.warning("before")  # the control: Python's own report
        assert "--- Logging error ---" in capsys.readouterr().err
        atomic.quiet_full_log_files(logger)
        logger.warning("after")
        assert capsys.readouterr().err == ""
        handler.stream = io.StringIO()
        logger.warning("%d", "not a number")  # another logging error is still reported
        assert "--- Logging error ---" in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)


# -- every writer of the package goes through shiftprobe.atomic --------------------------------------------
SAVERS = {"save", "savez", "savez_compressed", "savefig", "dump"}  # torch.save / np.save* / fig.savefig / json.dump


def _atomic_handles(tree: ast.AST) -> set[str]:
    """Names bound by ``with atomic_write(...) as name``."""
    return {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With) for item in node.items
            if isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "atomic_write"
            and isinstance(item.optional_vars, ast.Name)}


def non_atomic_writes(source: str) -> list[str]:
    """The calls in ``source`` that write a file other than through ``atomic_write``: ``Path.write_text`` /
    ``write_bytes``, ``open(..., "w")``, and a saver (``torch.save``, ``np.savez``, ``fig.savefig``,
    ``json.dump``) whose destination is not a handle of ``atomic_write``."""
    tree, found = ast.parse(source), []
    handles = _atomic_handles(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        owner = getattr(getattr(node.func, "value", None), "id", "")
        saver = name == "savefig" or name in SAVERS and owner in ("torch", "np", "numpy", "json", "pickle")
        modes = [a.value for a in [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
                 if isinstance(a, ast.Constant)]
        destination = node.args[1] if name in SAVERS - {"savefig"} and len(node.args) > 1 else (
            node.args[0] if node.args else None)
        if (name in ("write_text", "write_bytes") and isinstance(node.func, ast.Attribute)
                or name == "open" and any(isinstance(m, str) and set(m) & set("wax") for m in modes)
                or saver and not (isinstance(destination, ast.Name) and destination.id in handles)):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_checker_finds_each_kind_of_direct_write():
    assert non_atomic_writes("with atomic_write(p) as fh:\n    torch.save(x, fh)\n    fig.savefig(fh)") == []
    bad = ["p.write_text('x')", "open(p, 'w')", "open(p, mode='ab')", "torch.save(x, p)", "np.savez(p, a=1)",
           "fig.savefig(p)", "json.dump(x, fh)"]
    assert [len(non_atomic_writes(code)) for code in bad] == [1] * len(bad)
    assert non_atomic_writes("open(p)\nopen(p, 'rb')\nwrite_text(p, 'x')\nresults.save(p)") == []  # reads; atomic


def test_every_file_the_package_writes_goes_through_atomic_write():
    """results.json/.md, figures, pairs, checkpoints, summaries: a temporary name in the same folder, then
    a rename (``shiftprobe.atomic``, the one module that writes directly)."""
    src = Path(__file__).resolve().parents[1] / "src" / "shiftprobe"
    found = {str(p.relative_to(src)): non_atomic_writes(p.read_text()) for p in sorted(src.rglob("*.py"))
             if p.name != "atomic.py"}
    assert {k: v for k, v in found.items() if v} == {}
