"""The pixel operations (``shiftprobe.probe.resample``): integer shifts against their definition pixel by
pixel, per-sample shifts, and the layout a convolution sees. The sub-pixel shifts and rotations are checked
against independent references in tests/probe/test_families.py."""

import pytest
import torch

from shiftprobe.probe.resample import shift_images, shift_images_per_sample


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


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="crop"):
        shift_images(torch.zeros(1, 1, 4, 4), 1, 1, "wrap")
