"""Integer translations (``shiftprobe.probe.transforms``): the definition pixel by pixel, the shift
sets of each pattern, seeded random shifts, argument checks, and the ``Translation`` transform."""

import pytest
import torch

from shiftprobe.probe.transforms import (
    Translation,
    check_max_shift,
    overlap_slices,
    random_shifts,
    shift_grid,
    shift_images,
    shift_images_per_sample,
)


def _reference_shift(x, dy, dx, mode):
    """The definition, pixel by pixel: out[i + dy, j + dx] = in[i, j]."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            ti, tj = i + dy, j + dx
            if mode == "roll":
                out[..., ti % h, tj % w] = x[..., i, j]
            elif 0 <= ti < h and 0 <= tj < w:
                out[..., ti, tj] = x[..., i, j]
    return out


@pytest.mark.parametrize("mode", ["crop", "roll"])
@pytest.mark.parametrize("dy,dx", [(0, 0), (1, 0), (0, -1), (3, -2), (-4, 4), (7, 7)])
def test_shift_matches_definition(mode, dy, dx):
    x = torch.rand(2, 1, 9, 9)
    assert torch.equal(shift_images(x, dy, dx, mode), _reference_shift(x, dy, dx, mode))


def test_shift_moves_content_down_and_right():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10, 12] = 1.0
    y = shift_images(x, 2, -3)
    assert y[..., 12, 9].item() == 1.0 and y.sum().item() == 1.0


def test_crop_loses_content_pushed_out_and_fills_zeros():
    x = torch.ones(1, 1, 28, 28)
    y = shift_images(x, 3, 0)
    assert y[..., :3, :].abs().sum() == 0 and y[..., 3:, :].min() == 1


@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_per_sample_shift_equals_single_shifts(mode):
    x = torch.rand(5, 3, 28, 28)
    shifts = torch.tensor([[0, 0], [1, -1], [-4, 2], [8, 8], [-2, 0]])
    out = shift_images_per_sample(x, shifts, mode)
    for b, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[b], shift_images(x[b], dy, dx, mode))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["crop", "roll"])
def test_per_sample_shift_returns_the_standard_layout(mode, channels):
    """A channels-last layout (even one that counts as contiguous, C == 1) would make a convolution
    round differently from the unshifted batch: the zero shift must give f(x) bit for bit."""
    x = torch.rand(6, channels, 28, 28)
    out = shift_images_per_sample(x, torch.zeros(6, 2, dtype=torch.long), mode)
    assert out.stride() == x.stride()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 8, 5)
    with torch.no_grad():  # the same layout and values: the same kernel, bit for bit
        assert torch.equal(conv(out), conv(x))


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


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="crop"):
        shift_images(torch.zeros(1, 1, 4, 4), 1, 1, "wrap")


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 3)])
def test_overlap_slices_select_equal_values(dy, dx):
    x = torch.rand(1, 1, 10, 10)
    y = shift_images(x, dy, dx)
    a, b = overlap_slices(dy, dx, 10, 10)
    assert torch.equal(y[..., a[0], a[1]], x[..., b[0], b[1]])
    assert y[..., a[0], a[1]].numel() == (10 - abs(dy)) * (10 - abs(dx))


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
    assert t.shifts() == shift_grid(2) and Translation(max_shift=1, pattern="axis").shifts() == [(0, -1), (0, 0), (0, 1)]
    x = torch.rand(3, 1, 10, 10)
    s = torch.tensor([[1, -2], [0, 0], [-2, 2]])
    assert torch.equal(t.apply(x, s), shift_images_per_sample(x, s, mode))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"max_shift": -1}, "max_shift"), ({"max_shift": 1.5}, "max_shift"), ({"mode": "wrap"}, "crop"),
     ({"pattern": "spiral"}, "pattern"), ({"pattern": "random", "max_shift": 0}, "max_shift")],
)
def test_translation_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Translation(**kwargs)
