"""``Translation`` (``shiftprobe.probe.translation``): the shift sets of each pattern, seeded random shifts,
argument checks, the transform itself and its plan: which shifts pair with which images, the groups
(every shift, radius, parity, the summary) and the two-shift consistency draws."""

import pytest
import torch

from shiftprobe.probe.resample import shift_images, shift_images_per_sample
from shiftprobe.probe.translation import Translation, check_max_shift, random_shifts, shift_grid

N = 24


def test_grid_and_axis_patterns():
    assert len(shift_grid(4)) == 81 and (0, 0) in shift_grid(4)
    assert shift_grid(2, "axis") == [(0, dx) for dx in range(-2, 3)]


def test_random_shifts_seeded_nonzero_and_in_range():
    a = random_shifts(2000, 3, seed=5)
    assert torch.equal(a, random_shifts(2000, 3, seed=5))
    assert not torch.equal(a, random_shifts(2000, 3, seed=6))
    assert a.abs().max() <= 3 and not ((a[:, 0] == 0) & (a[:, 1] == 0)).any()
    # every non-zero cell is reachable
    assert len({tuple(v) for v in a.tolist()}) == 48


@pytest.mark.parametrize("bad", [-1, 28, 100, 2.5, True])
def test_out_of_range_shifts_are_refused(bad):
    with pytest.raises(ValueError, match="max_shift"):
        check_max_shift(bad)


def test_random_shifts_axis_pattern_and_zero_allowed():
    a = random_shifts(2000, 2, seed=1, pattern="axis")
    assert (a[:, 0] == 0).all() and set(a[:, 1].tolist()) == {-2, -1, 1, 2}
    z = random_shifts(2000, 1, seed=1, nonzero=False)
    assert len({tuple(v) for v in z.tolist()}) == 9  # (0, 0) included
    with pytest.raises(ValueError, match="max_shift"):
        random_shifts(5, 0, seed=0)


def test_random_is_not_a_fixed_shift_set():
    with pytest.raises(ValueError, match="random_shifts"):
        shift_grid(2, "random")
    with pytest.raises(ValueError, match="spiral"):
        shift_grid(2, "spiral")


@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_translation_transform(mode):
    t = Translation(max_shift=2, mode=mode)
    assert t.params() == shift_grid(2) and Translation(max_shift=1, pattern="axis").params() == [(0, -1), (0, 0), (0, 1)]
    x = torch.rand(3, 1, 10, 10)
    s = torch.tensor([[1, -2], [0, 0], [-2, 2]])
    assert torch.equal(t.apply(x, s.view(3, 1, 2))[:, 0], shift_images_per_sample(x, s, mode))
    both = t.apply(x, [(1, -2), (0, 0)])  # the same shifts for every image
    assert both.shape == (3, 2, 1, 10, 10) and torch.equal(both[:, 0], shift_images(x, 1, -2, mode))
    assert torch.equal(t.act(x, (1, -2)), shift_images(x, 1, -2, mode))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"max_shift": -1}, "max_shift"), ({"max_shift": 1.5}, "max_shift"), ({"mode": "wrap"}, "crop"),
     ({"pattern": "spiral"}, "pattern"), ({"pattern": "random", "max_shift": 0}, "max_shift")],
)
def test_translation_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Translation(**kwargs)


def test_grid_and_axis_plans():
    grid = Translation(2).plan(N, (28, 28))
    assert list(grid.params) == shift_grid(2) and grid.uniform and grid.params_per_image == 25
    assert grid.pairs == tuple(range(25))
    axis = Translation(2, "roll", "axis").plan(N, (28, 28))
    # the ids span the whole grid for every pattern; the axis pattern pairs each image with its row
    assert list(axis.params) == shift_grid(2) and [axis.params[j] for j in axis.pairs] == shift_grid(2, "axis")
    ids = grid.ids_of(torch.tensor([3, 5]))
    assert ids.shape == (2, 25) and [grid.params[j] for j in ids[1].tolist()] == shift_grid(2)


def test_groups_are_shifts_radii_parities_and_the_summary():
    plan = Translation(2).plan(N, (28, 28))
    names = [g[0] for g in plan.groups]
    assert names == ["param"] * 25 + ["radius"] * 3 + ["parity", "parity", "summary"]
    by = {(g[0], str(g[1])): [plan.params[j] for j in g[2]] for g in plan.groups}
    assert by["radius", "0"] == [(0, 0)] and len(by["radius", "1"]) == 8 and len(by["radius", "2"]) == 16
    assert sorted(by["parity", "even"]) == [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)]
    assert len(by["parity", "odd"]) == 16 and len(by["summary", "None"]) == 24
    m = plan.membership()
    assert m.shape == (25, 31) and torch.equal(m.sum(0)[-1:], torch.tensor([24.0]))
    assert torch.equal(m[:, :25], torch.eye(25, dtype=m.dtype))


def test_random_plan_is_seeded_nonzero_and_one_shift_per_image():
    plan = Translation(3, pattern="random", seed=4).plan(N, (28, 28))
    again = Translation(3, pattern="random", seed=4).plan(N, (28, 28))
    other = Translation(3, pattern="random", seed=5).plan(N, (28, 28))
    assert not plan.uniform and plan.params_per_image == 1
    assert torch.equal(plan.pairs, again.pairs) and not torch.equal(plan.pairs, other.pairs)
    shifts = plan.param_values(plan.pairs)
    assert shifts.abs().max() <= 3 and (shifts != 0).any(dim=-1).all()
    idx = torch.tensor([2, 7])
    assert torch.equal(plan.ids_of(idx), plan.pairs[idx])
    assert torch.equal(plan.param_values(plan.ids_of(idx)).view(2, 2), random_shifts(N, 3, 4)[idx])


def test_two_shift_draws_are_seeded_and_in_range():
    plan = Translation(2, seed=7).plan(300, (28, 28))
    a, b = (plan.param_values(d) for d in plan.draws)
    a2, _ = (plan.param_values(d) for d in Translation(2, seed=7).plan(300, (28, 28)).draws)
    assert torch.equal(a, a2) and not torch.equal(a, b)
    assert torch.equal(a, random_shifts(300, 2, 8, nonzero=False))
    assert a.shape == (300, 2) and a.abs().max() <= 2 and len({tuple(v) for v in a.tolist()}) == 25
    axis = Translation(2, pattern="axis").plan(300, (28, 28))
    assert (axis.param_values(axis.draws[0])[:, 0] == 0).all()


@pytest.mark.parametrize("max_shift,size,match", [(28, 28, "max_shift=28"), (12, 12, "12x12"), (-1, 28, "max_shift")])
def test_shifts_beyond_the_image_are_refused(max_shift, size, match):
    with pytest.raises(ValueError, match=match):
        Translation(max_shift).plan(4, (size, size))
    Translation(11).plan(4, (12, 12))  # the largest shift a 12x12 image allows


def test_the_shifts_are_checked_against_the_sides_they_move_along():
    Translation(max_shift=10, pattern="axis").check_image_size(6, 20)  # columns only: 10 < 20
    with pytest.raises(ValueError, match=r"beyond what a 6x20 image allows: a shift of 6 or more .* at most 5"):
        Translation(max_shift=10).check_image_size(6, 20)
    with pytest.raises(ValueError, match=r"beyond what a 30x20 image allows: a shift of 20 or more"):
        Translation(max_shift=20, pattern="axis").check_image_size(30, 20)


@pytest.mark.parametrize("pattern", ["grid", "axis", "random"])
def test_max_shift_0_is_refused_for_every_pattern(pattern):
    """The grid and axis patterns gave an empty summary ({'count': 0}) without a word."""
    with pytest.raises(ValueError, match=r"Translation\(max_shift=0\) measures no shift: use max_shift >= 1"):
        Translation(max_shift=0, pattern=pattern)
