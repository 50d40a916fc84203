import pytest
import torch
from torch import nn

from shiftprobe.metrics import (
    aligned_rel,
    aligned_rel_at,
    nearest_aligned_rel,
    pair_metrics,
    sort_channels,
    sorted_rel,
)
from shiftprobe.models.lab import LabCNN
from shiftprobe.shifts import shift_images

SHIFTS_UP_TO_4 = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return LabCNN().eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 28, 28, generator=g)


def test_pair_metrics_of_identical_features():
    f = torch.randn(5, 40)
    m = pair_metrics(f, f.clone())
    assert torch.all(m["cos"] == 1) and torch.all(m["dist"] == 0) and torch.all(m["rel"] == 0)


def test_pair_metrics_match_textbook_formulas():
    a, b = torch.randn(7, 30, dtype=torch.float64), torch.randn(7, 30, dtype=torch.float64)
    m = pair_metrics(a, b)
    assert torch.allclose(m["cos"], torch.nn.functional.cosine_similarity(a, b), atol=1e-12)
    assert torch.allclose(m["dist"], (b - a).norm(dim=1), atol=1e-12)
    assert torch.allclose(m["rel"], (b - a).norm(dim=1) / a.norm(dim=1), atol=1e-12)


def test_pair_metrics_broadcast_and_batched_dot_agree():
    a, b = torch.randn(4, 1, 50), torch.randn(4, 6, 50)
    m = pair_metrics(a, b)
    ref = pair_metrics(a.expand_as(b).reshape(-1, 50), b.reshape(-1, 50))
    for k in m:
        assert torch.allclose(m[k].reshape(-1), ref[k], atol=1e-6)


def test_sort_channels_numpy_path_equals_torch_sort():
    f = torch.randn(70, 10, 24, 24)  # enough rows for the threaded NumPy path
    ref = torch.sort(f.flatten(-2), dim=-1).values
    assert torch.equal(sort_channels(f), ref)
    g = f.clone()
    assert torch.equal(sort_channels(g, inplace=True), ref)
    assert torch.equal(sort_channels(f[:1]), ref[:1])


def test_sorted_rel_is_invariant_to_permutations_within_channels():
    f = torch.randn(3, 4, 5, 5)
    perm = torch.randperm(25)
    g = f.flatten(-2)[..., perm].view_as(f)
    assert torch.all(sorted_rel(sort_channels(f), sort_channels(g)) < 1e-7)
    # ...but not to moving values between channels
    h = f[:, [1, 0, 2, 3]]
    assert torch.all(sorted_rel(sort_channels(f), sort_channels(h)) > 1e-2)


@pytest.mark.parametrize("dy,dx", SHIFTS_UP_TO_4)
def test_conv1_exactly_equivariant_crop(random_net, images, dy, dx):
    with torch.no_grad():
        f = random_net.probe(images)["conv1"]
        ft = random_net.probe(shift_images(images, dy, dx))["conv1"]
    assert aligned_rel(f, ft, dy, dx, stride=1).max() < 1e-5


@pytest.mark.parametrize("dy,dx", SHIFTS_UP_TO_4)
def test_conv2_exact_only_at_even_shifts_crop(random_net, images, dy, dx):
    with torch.no_grad():
        f = random_net.probe(images)["conv2"]
        ft = random_net.probe(shift_images(images, dy, dx))["conv2"]
    if dy % 2 == 0 and dx % 2 == 0:
        assert aligned_rel(f, ft, dy, dx, stride=2).max() < 1e-5
    else:
        assert aligned_rel(f, ft, dy, dx, stride=2) is None
        # no integer alignment of the stride-2 map reproduces an odd shift
        assert nearest_aligned_rel(f, ft, dy, dx, stride=2).min() > 1e-2


@pytest.mark.parametrize("dy,dx", [(1, 0), (-2, 3), (4, 4), (0, -5)])
def test_circular_conv_stack_exact_under_roll(dy, dx):
    """Convolutions with circular padding commute with circular shifts: exactly, on the whole map."""
    torch.manual_seed(3)
    stack = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, padding_mode="circular"),
    ).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        f, ft = stack(x), stack(shift_images(x, dy, dx, "roll"))
    assert aligned_rel(f, ft, dy, dx, stride=1, mode="roll").max() < 1e-5
    assert sorted_rel(sort_channels(f), sort_channels(ft)).max() < 1e-5


@pytest.mark.parametrize("dy,dx", [(1, 1), (2, 0), (-3, 2), (4, -4)])
def test_circular_lab_variant_exact_under_roll(dy, dx):
    torch.manual_seed(4)
    net = LabCNN(padding="circular").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        p, pt = net.probe(x), net.probe(shift_images(x, dy, dx, "roll"))
    assert aligned_rel(p["conv1"], pt["conv1"], dy, dx, 1, "roll").max() < 1e-5
    assert sorted_rel(sort_channels(p["conv1"]), sort_channels(pt["conv1"])).max() < 1e-5
    if dy % 2 == 0 and dx % 2 == 0:
        assert aligned_rel(p["conv2"], pt["conv2"], dy, dx, 2, "roll").max() < 1e-5
        assert sorted_rel(sort_channels(p["conv2"]), sort_channels(pt["conv2"])).max() < 1e-5


def test_crop_sorted_rel_not_exact_at_borders(random_net, images):
    """In crop mode content leaves the frame, so even conv1's sorted values change a little."""
    with torch.no_grad():
        f = random_net.probe(images)["conv1"]
        ft = random_net.probe(shift_images(images, 3, 3))["conv1"]
    assert sorted_rel(sort_channels(f), sort_channels(ft)).min() > 1e-4


def test_aligned_rel_at_detects_misalignment():
    f = torch.randn(2, 3, 8, 8)
    g = shift_images(f, 1, 0)
    assert aligned_rel_at(f, g, 1, 0).max() < 1e-7
    assert aligned_rel_at(f, g, 0, 1).min() > 0.1
