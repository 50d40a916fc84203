"""probe/capture.py: what a probe point is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shiftprobe


class _TwoMaps(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return {"a": self.a(x), "b": self.b(x)}


class _ReadsB(nn.Module):
    def __init__(self):
        super().__init__()
        self.blk, self.head = _TwoMaps(), nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.blk(x)["b"].mean((2, 3)))


def test_a_layer_returning_a_dict_of_several_tensors_is_refused_and_its_submodules_are_measured():
    """Which entry would be 'the layer' is a guess (it was the first, silently): one line listing the keys."""
    net, x = _ReadsB().eval(), torch.rand(8, 1, 12, 12)
    with pytest.raises(ValueError, match=r"layer 'blk' returns a dict with several tensors \['a', 'b'\]"):
        shiftprobe.measure(net, x, layers=["blk"], transform=shiftprobe.Translation(max_shift=1), progress=False)
    res = shiftprobe.measure(net, x, layers=["blk.b"], transform=shiftprobe.Translation(max_shift=1), progress=False)
    assert res.summary["blk.b"]["aligned_rel"] < 1e-5  # a valid conv, exact on its certified region
