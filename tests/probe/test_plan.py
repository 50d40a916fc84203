"""``ShiftPlan`` (which shifts pair with which images) and ``PairedShiftDataset``, its item-by-item view."""

import pytest
import torch

from shiftprobe.data.paired import PairedShiftDataset
from shiftprobe.probe.plan import ShiftPlan
from shiftprobe.probe.transforms import Translation, shift_grid, shift_images

N = 24


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(N, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (N,), generator=g)


def test_grid_and_axis_plans():
    grid = ShiftPlan.build(2, "crop", "grid", 0, N)
    assert list(grid.shifts) == shift_grid(2) and grid.uniform and grid.shifts_per_image == 25
    assert grid.n_pairs == N * 25 and grid.side == 5 and grid.n_shift_ids == 25
    axis = ShiftPlan.build(2, "roll", "axis", 0, N)
    assert list(axis.shifts) == [(0, dx) for dx in range(-2, 3)] and axis.n_pairs == N * 5
    s = grid.shifts_of(torch.tensor([3, 5]))
    assert s.shape == (2, 25, 2) and [tuple(v) for v in s[1].tolist()] == list(grid.shifts)


def test_shift_ids_cover_the_grid_once():
    plan = ShiftPlan.build(3, "crop", "grid", 0, 1)
    ids = [plan.shift_id(dy, dx) for dy, dx in plan.shifts]
    assert sorted(ids) == list(range(plan.n_shift_ids))
    assert all(plan.id_to_shift(plan.shift_id(dy, dx)) == (dy, dx) for dy, dx in plan.shifts)
    t = torch.tensor(plan.shifts)
    assert plan.shift_id(t[:, 0], t[:, 1]).tolist() == ids  # tensors too


def test_random_plan_is_seeded_nonzero_and_one_shift_per_image():
    plan = ShiftPlan.build(3, "crop", "random", 4, N)
    again = ShiftPlan.build(3, "crop", "random", 4, N)
    other = ShiftPlan.build(3, "crop", "random", 5, N)
    assert not plan.uniform and plan.shifts is None and plan.shifts_per_image == 1 and plan.n_pairs == N
    assert torch.equal(plan.per_image, again.per_image) and not torch.equal(plan.per_image, other.per_image)
    assert plan.per_image.abs().max() <= 3 and (plan.per_image != 0).any(dim=1).all()
    idx = torch.tensor([2, 7])
    assert torch.equal(plan.shifts_of(idx), plan.per_image[idx].view(2, 1, 2))


def test_plan_from_transform_equals_build():
    t = Translation(max_shift=2, mode="roll", pattern="axis", seed=3)
    assert ShiftPlan.from_transform(t, N) == ShiftPlan.build(2, "roll", "axis", 3, N)


def test_two_shift_draws_are_seeded_and_in_range():
    a, b = ShiftPlan.build(2, "crop", "grid", 7, 300).two_shift_draws()
    a2, b2 = ShiftPlan.build(2, "crop", "grid", 7, 300).two_shift_draws()
    assert torch.equal(a, a2) and torch.equal(b, b2) and not torch.equal(a, b)
    assert a.shape == (300, 2) and a.abs().max() <= 2 and len({tuple(v) for v in a.tolist()}) == 25


@pytest.mark.parametrize(
    "args,kwargs,match",
    [((28,), {}, "max_shift"), ((12,), {"image_size": 12}, "12x12"), ((2, "wrap"), {}, "crop"),
     ((2, "crop", "spiral"), {}, "pattern"), ((-1,), {}, "max_shift")],
)
def test_bad_plans_are_refused(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShiftPlan.build(*args, **kwargs)
    ShiftPlan.build(11, image_size=12)  # the largest shift a 12x12 image allows


def test_paired_dataset_items_are_translated_pairs(data):
    images, labels = data
    plan = ShiftPlan.build(2, "crop", "grid", 0, N)
    ds = PairedShiftDataset(images, labels, plan)
    assert len(ds) == N * 25
    x, tx, y, s = ds[3 * 25 + 7]
    assert tuple(s.tolist()) == plan.shifts[7] and y == labels[3]
    assert torch.equal(x, images[3].unsqueeze(0).float() / 255)
    assert torch.equal(tx, shift_images(x, *s.tolist()))
    rnd = PairedShiftDataset(images, labels, ShiftPlan.build(2, "roll", "random", 4, N))
    again = PairedShiftDataset(images, labels, ShiftPlan.build(2, "roll", "random", 4, N))
    assert len(rnd) == N
    for i in range(N):
        assert torch.equal(rnd[i][3], again[i][3]) and rnd[i][3].abs().sum() > 0
        assert torch.equal(rnd[i][1], shift_images(rnd[i][0], *rnd[i][3].tolist(), "roll"))


def test_paired_dataset_refuses_a_plan_for_other_images(data):
    images, labels = data
    with pytest.raises(ValueError, match="plan"):
        PairedShiftDataset(images, labels, ShiftPlan.build(2, "crop", "grid", 0, N + 1))
    with pytest.raises(ValueError, match="uint8"):
        PairedShiftDataset(images.float(), labels, ShiftPlan.build(2, "crop", "grid", 0, N))
