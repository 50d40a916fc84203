"""The example pairs (``shiftprobe.probe.examples``): computed while measuring, stored in the translation
section as plain lists, the aligned difference 0 where the layer is exact and NaN outside the certified
positions; none where the stride does not divide the shift."""

from __future__ import annotations

import json
import math

import torch

import shiftprobe
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.resample import shift_images


def test_example_pairs_are_stored_in_the_translation_section():
    torch.manual_seed(0)
    net = LabCNN().eval()
    images = torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(1))
    res = shiftprobe.measure(net, images, layers=["conv1", "conv2", "fc1"], transform=shiftprobe.Translation(2))
    ex = res["families"]["translation"]["examples"]
    json.dumps(ex)  # plain lists and numbers (NaN where no position is compared)
    assert ex["layer"] == "conv2" and ex["mode"] == "crop" and ex["stride"] == [2, 2] and len(ex["channels"]) == 3
    assert [(p["image"], p["shift"]) for p in ex["pairs"]] == [(i, [s, s]) for i in range(3) for s in (1, 2)]
    x = images[:3].unsqueeze(1)
    with torch.no_grad():
        conv2 = net.probe(x)["conv2"][:, ex["channels"]]
        moved = net.probe(shift_images(x, 2, 2))["conv2"][:, ex["channels"]]
    for pair in ex["pairs"]:
        i = pair["image"]
        assert torch.equal(torch.tensor(pair["x"]), images[i]) and len(pair["f_x"]) == 3
        torch.testing.assert_close(torch.tensor(pair["f_x"]), conv2[i])
        if pair["shift"] == [1, 1]:  # the stride does not divide the shift: no exact alignment
            assert pair["aligned_diff"] is None
            continue
        torch.testing.assert_close(torch.tensor(pair["f_t"]), moved[i])
        diff = torch.tensor(pair["aligned_diff"])
        certified = diff[:, 1:, 1:]  # the lab's conv2 is certified everywhere; the offset (1, 1) moves it
        assert certified.abs().max() < 1e-5 and torch.isnan(diff[:, 0, :]).all()
    assert not math.isnan(ex["pairs"][1]["aligned_diff"][0][4][4])


def test_no_examples_without_a_layer_of_inferred_stride_or_when_not_asked():
    torch.manual_seed(0)
    net = LabCNN().eval()
    images = torch.rand(4, 28, 28)
    assert shiftprobe.measure(net, images, layers=["fc1"], transform=shiftprobe.Translation(1))[
        "families"]["translation"]["examples"] is None
    res = shiftprobe.measure(net, images, layers=["conv1"], transform=shiftprobe.Translation(1), examples=False)
    assert "examples" not in res["families"]["translation"]
