"""``shiftprobe.probe.pairs``: which metrics a layer gets under each transform, and each image's group
means from per-pair values (the matmul against the membership rows), against plain loops."""

from __future__ import annotations

import numpy as np
import torch

from shiftprobe.probe.families import Flip, Rotation, SubpixelTranslation
from shiftprobe.probe.geometry import LayerGeometry
from shiftprobe.probe.pairs import image_update, layer_metrics
from shiftprobe.probe.translation import Translation

MAP = LayerGeometry("m", "spatial", (4, 10, 10), stride=(1, 1), receptive_field=(0, 2, 0, 2), interior=(0, 9, 0, 9))
VECTOR = LayerGeometry("v", "vector", (5,))


def test_layer_metrics_follow_the_transform_and_the_geometry():
    pair, control = layer_metrics(Translation(1), MAP, (12, 12), classifier=False, labels=True)
    assert pair == ("cos", "dist", "rel", "sorted_rel", "aligned_rel", "nearest_aligned_rel", "sorted_rel_certified")
    assert control == ("cos", "dist", "rel", "sorted_rel")
    assert layer_metrics(Flip(), MAP, (12, 12), False, True)[0] == ("cos", "dist", "rel", "sorted_rel", "aligned_rel")
    assert layer_metrics(Rotation(max_angle=10, step=10), MAP, (12, 12), False, True)[0] == ("cos", "dist", "rel", "aligned_rel")
    assert layer_metrics(SubpixelTranslation(), VECTOR, (12, 12), True, False) == (
        ("cos", "dist", "rel", "consistency"), ("cos", "dist", "rel", "consistency"))
    assert layer_metrics(Translation(1), VECTOR, (12, 12), True, True)[0][-2:] == ("shifted_correct", "consistency_correct")


def test_image_means_per_group_equal_a_loop():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(2, 3, 4, generator=g, dtype=torch.float64)  # K metrics x B images x S pairs
    values[0, 1, 2] = float("nan")  # an undefined pair: left out of that image's mean
    rows = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.float64)  # S x G
    control = {("a", "dist"): torch.arange(3, dtype=torch.float64), ("a", "cos"): torch.zeros(3, dtype=torch.float64)}
    out = image_update(values, rows, (("a", "dist"), ("a", "cos")), control)
    for k in range(2):
        for b in range(3):
            for group in range(3):
                members = [s for s in range(4) if rows[s, group] and not np.isnan(values[k, b, s].item())]
                expected = np.mean([values[k, b, s].item() for s in members])
                assert out["image_means"][k, b, group].item() == expected or np.isclose(out["image_means"][k, b, group].item(), expected, rtol=1e-15)
    assert torch.equal(out["image_control"][0], control["a", "dist"]) and torch.equal(out["image_control"][1], torch.zeros(3, dtype=torch.float64))
    per_image = image_update(values, rows.expand(3, -1, -1), (("a", "dist"), ("a", "cos")), control)["image_means"]
    torch.testing.assert_close(per_image, out["image_means"], rtol=1e-15, atol=0)
