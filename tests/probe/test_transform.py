"""The ``Transform`` protocol (``shiftprobe.probe.transform``): every family, translation included, conforms
to it, and ``Plan`` / ``MapAction`` do what the engine relies on."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from shiftprobe.probe.capture import Layer
from shiftprobe.probe.families import Flip, Rotation, Rotation90, SubpixelTranslation
from shiftprobe.probe.generators import GENERATORS
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.transform import MapAction, Plan, Transform
from shiftprobe.probe.translation import Translation

FAMILIES = [Translation(2), Translation(2, "roll", "axis"), Translation(2, pattern="random", seed=3), Rotation90(),
            Flip(), Rotation(max_angle=20, step=10), SubpixelTranslation(max_offset=0.5, step=0.25),
            SubpixelTranslation(max_offset=0.5, step=0.5, axes="both", method="fourier", mode="roll")]
IDS = ["translation", "axis", "random", "rot90", "flip", "rotation", "subpixel", "subpixel-2d"]


def _geometry():
    """A valid 3x3 convolution on 12x12 images: a symmetric sampling grid, stride 1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    return net, infer_geometry(net, [Layer("0", "0")], (1, 12, 12))["0"]


@pytest.mark.parametrize("fam", FAMILIES, ids=IDS)
def test_every_family_conforms_to_the_protocol(fam):
    assert isinstance(fam, Transform) and fam.name and fam.kind and fam.parameter and fam.dims in (1, 2)
    assert all(g in GENERATORS for g in fam.generators)
    params = fam.params()
    assert params and json.dumps([fam.param_to_json(p) for p in params]) and json.dumps(fam.to_dict())
    fam.check_image_size(12, 12)
    plan = fam.plan(6, (12, 12))
    assert isinstance(plan, Plan) and plan.groups[-1][0] == "summary"
    membership = plan.membership()
    assert membership.shape == (len(plan.params), len(plan.groups))
    ids = plan.ids_of(torch.arange(6))
    assert ids.shape == (6, plan.params_per_image) and int(ids.max()) < len(plan.params)
    # every parameter has its own group, in id order, and every paired id is in the summary or the identity
    param_groups = [g for g in plan.groups if g[0] == "param"]
    assert [g[2] for g in param_groups] == [(j,) for j in range(len(plan.params))]
    summary = set(plan.groups[-1][2])
    assert all(j in summary or plan.params[j] == (0, 0) for j in ids.flatten().tolist())
    # apply: a batch of parameters at once, each equal to acting with one
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    some = [plan.params[j] for j in ids[0].tolist()][:2]
    out = fam.apply(x, some)
    assert out.shape == (3, len(some), 1, 12, 12)
    for k, p in enumerate(some):
        torch.testing.assert_close(out[:, k], fam.act(x, p), rtol=0, atol=0)


@pytest.mark.parametrize("fam", FAMILIES, ids=IDS)
def test_the_map_action_is_defined_exactly_where_map_problem_says(fam):
    net, geo = _geometry()
    f = net(torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2)))
    for p in fam.params():
        action = fam.map_action(f, p, geo, (12, 12))
        assert (action is None) == (fam.map_problem(p, geo, (12, 12)) is not None), p
        if action is not None:
            region = action.region or (slice(None), slice(None))
            assert action.expected.shape[:2] == f.shape[:2]
            assert action.expected.shape[-2:] == f[..., region[0], region[1]].shape[-2:]
    assert fam.layer_map_metrics(geo, (12, 12)) == fam.map_metrics


def test_map_action_rel_compares_the_region_only():
    f = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    expected = f[..., 1:4, 2:5].clone()
    action = MapAction(expected, (slice(1, 4), slice(2, 5)))
    g = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    g[..., 1:4, 2:5] = f[..., 1:4, 2:5]  # equal on the region, different elsewhere
    assert torch.equal(action.rel(g), torch.zeros(2, dtype=torch.float64))
    empty = MapAction(f[..., :0, :0], (slice(0, 0), slice(0, 0)))
    assert empty.empty and torch.isnan(empty.rel(g)).all()


def test_translation_map_action_is_the_certified_offset():
    net, geo = _geometry()
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    t = Translation(2)
    f, ft = net(x), net(t.act(x, (1, -2)))
    action = t.map_action(f, (1, -2), geo, (12, 12))
    rows, cols = action.region
    torch.testing.assert_close(ft[..., rows, cols], action.expected, rtol=1e-6, atol=1e-6)
