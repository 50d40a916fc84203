"""The engine against the independent brute-force reference (``tests/reference.py``), figure by figure.

Both run in float64 (the engine on a float64 copy of the network), so every figure must agree to
1e-6: per shift, control, summary, accuracy, strides. The reference finds receptive fields by
perturbing pixels and loops over single pairs; it imports nothing from ``shiftprobe``.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import reference_measure  # noqa: E402

from shiftprobe.models import GapCNN, SmallResNet  # noqa: E402
from shiftprobe.models.lab import LabCNN  # noqa: E402
from shiftprobe.probe.measure import measure_family  # noqa: E402
from shiftprobe.probe.translation import Translation  # noqa: E402

TOL = 1e-6
METRICS = ("cos", "dist", "rel", "sorted_rel", "aligned_rel", "nearest_aligned_rel", "invariance_score",
           "equivariance_score", "consistency", "shifted_acc")


class ZeroPaddedCNN(nn.Module):
    """Zero 'same' padding throughout, biases, a stride-2 max pool."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 14 * 14, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.c2(torch.relu(self.c1(x)))))
        return self.fc(torch.relu(self.c3(x)).flatten(1))


def _close(a, b, where):
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        assert (a is None) and (b is None or math.isnan(b)), (where, a, b)
        return
    assert abs(a - b) <= TOL * max(1.0, abs(b)), (where, a, b)


CASES = {
    "zero_padded": (ZeroPaddedCNN, ["c1", "c2", "pool", "c3", "output"], "output", "crop", 4, "grid"),
    "gap": (GapCNN, ["conv1", "pool1", "conv2", "gap", "fc1", "logits"], "logits", "crop", 3, "grid"),
    "skip": (lambda: SmallResNet(width=4), ["stem", "layer1", "layer2", "layer3", "gap", "logits"], "logits", "crop", 4, "axis"),
    "lab_roll": (lambda: LabCNN(padding="circular"), ["conv1", "conv2", "fc1", "logits"], "logits", "roll", 2, "grid"),
    "lab_fast_path": (LabCNN, ["conv1", "conv2", "fc1", "logits"], "logits", "crop", 3, "grid"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_reference(case):
    make, layers, out_layer, mode, max_shift, pattern = CASES[case]
    torch.manual_seed(0)
    net = make().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    n = 5
    g = torch.Generator().manual_seed(4)
    images = (torch.rand(n, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    transform = Translation(max_shift, mode, pattern, 0)
    net64 = copy.deepcopy(net).double()
    res = measure_family(net64, images, labels, transform, layers=layers)
    assert res["fast_path"] == (case == "lab_fast_path")
    circular = [n for n in layers if res["geometry"][n]["circular"]]
    ref = reference_measure(
        net, images.unsqueeze(1).double() / 255, labels, layers, transform.params(), mode,
        res["control"]["offset"], circular=circular, output_layer=out_layer,
    )
    strides = {name: g["stride"] for name, g in res["geometry"].items() if g["stride"] is not None}
    assert {n: r[0] if r[0] == r[1] else tuple(r) for n, r in strides.items()} == ref["strides"]
    _close(res["accuracy"], ref["accuracy"], "accuracy")
    for layer in layers:
        for metric, value in ref["control"][layer].items():
            if metric in METRICS:
                _close(res["control"][layer].get(metric), value, ("control", layer, metric))
        for metric in METRICS:
            if metric in ref["summary"][layer]:
                _close(res["summary"][layer].get(metric), ref["summary"][layer][metric], ("summary", layer, metric))
    checked = 0
    for entry in res["groups"]["param"]:
        expected = ref["per_shift"][tuple(entry["param"])]
        for layer in layers:
            for metric in METRICS:
                if metric in expected[layer]:
                    _close(entry[layer].get(metric), expected[layer][metric], (entry["param"], layer, metric))
                    checked += 1
            if "no_overlap" in expected[layer]:
                assert entry[layer].get("aligned_rel_no_overlap", 0) == expected[layer]["no_overlap"]
    assert checked > 50
