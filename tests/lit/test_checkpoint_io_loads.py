"""``AtomicCheckpointIO``'s loads: Lightning's own checkpoint loads (``fit``/``test`` with ``ckpt_path``) read
weights only, even where torch would unpickle (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), unless trusted."""

import pickle
from fractions import Fraction

import pytest
import torch
from hostile_files import pickle_payload

from shiftprobe.lit.checkpointing import AtomicCheckpointIO


@pytest.fixture
def torch_would_unpickle(monkeypatch):
    """torch.load's default becomes weights_only=False: only an explicit weights_only=True still protects."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.mark.parametrize("asked", [None, False, True])
def test_load_reads_weights_only_whatever_the_caller_asks(tmp_path, torch_would_unpickle, asked):
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "evil.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=asked)
    assert not marker.exists()


def test_trusted_loads_pickled_objects_and_plain_checkpoints_load_as_before(tmp_path, torch_would_unpickle):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "ratio": Fraction(1, 3)}, path)  # not in torch's allow-list
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    loaded = AtomicCheckpointIO(trusted=True).load_checkpoint(path)
    assert loaded["ratio"] == Fraction(1, 3)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2}, plain)
    got = AtomicCheckpointIO().load_checkpoint(plain, map_location="cpu")
    assert got["epoch"] == 2 and torch.equal(got["state_dict"]["w"], torch.arange(3.0))
