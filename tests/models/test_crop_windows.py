"""The crop fast path (``shiftprobe.models.crop_windows.CropWindows``) of every network that has one.

Two independent computations of the same numbers: every probe point of ``CropWindows.shifted`` (windows of
one pass over the zero-padded images) against forward hooks on the network run on each crop-shifted image
(``shift_images``); and the whole measurement with the fast path against the plain path (the shifted
images stacked and run through the network). The self-check: a network whose windows are wrong is measured
on the plain path, with the reason in the section.
"""

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_same_figures, tol
from torch import nn

from shiftprobe.models import AllConvCNN, GapCNN, LabCNN
from shiftprobe.models.crop_windows import CropWindows
from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.translation import Translation

NETWORKS = {
    "lab": lambda: LabCNN(),
    "lab normalized": lambda: LabCNN(normalize=True),
    "blurpool": lambda: LabCNN(pool="blur"),
    "blurpool 5 taps": lambda: LabCNN(pool="blur", blur_filter_size=5),
    "gap": lambda: GapCNN(),
    "gap 3 channels": lambda: GapCNN(in_channels=3),
    "allconv": lambda: AllConvCNN(),
}


def _images(channels: int, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 28, 28, generator=g)
    x[..., :3, :] = 0  # a blank border, as in MNIST: windows of the padding and of the image meet
    return x


def _map_tolerance(expected: torch.Tensor) -> float:
    """float32 to the scale of the map: its two computations (the padded pass, the network on the shifted
    image) may take other kernels and round apart, by a few ulps of the largest value."""
    return tol(torch.float32, unit=True)["atol"] * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_probe_point_equals_the_network_on_the_shifted_images(name):
    torch.manual_seed(0)
    net = NETWORKS[name]().eval()
    windows = net.crop_windows()
    x = _images(getattr(net, "in_channels", 1))
    layers = resolve_layers(net, None)
    assert {layer.name for layer in layers} <= set(windows.layers)
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    with torch.inference_mode(), LayerCapture(net, layers) as capture:
        fast = windows.shifted(windows.basis(F.pad(x, (3, 3, 3, 3)), 3), shifts)
        for j, (dy, dx) in enumerate(shifts):
            ref = capture.run(shift_images(x, dy, dx))
            for layer in layers:
                expected = ref[layer.name]
                got = fast[layer.name][:, j]
                assert got.shape == expected.shape, (layer.name, dy, dx)
                assert (got - expected).abs().max() <= _map_tolerance(expected), (layer.name, dy, dx)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_window_maps_hold_the_numbers_of_the_unshifted_map(name):
    """The window maps at the zero shift are f(x) (to float32: the padded pass may take another kernel;
    where it is bit for bit, the engine's exact zeros use it, tests/probe/test_bit_identity_fallbacks.py);
    the blur pool's conv2 is not among them (its reflect padding depends on the window). The self-check
    passes."""
    torch.manual_seed(0)
    net = NETWORKS[name]().eval()
    windows = net.crop_windows()
    x = _images(getattr(net, "in_channels", 1))
    assert ("conv2" in windows.window_maps) is (getattr(net, "pool", "max") == "max")
    layers = resolve_layers(net, list(windows.window_maps))
    with torch.inference_mode(), LayerCapture(net, layers) as capture:
        basis = windows.basis(F.pad(x, (3, 3, 3, 3)), 3)
        base = capture.run(x)
        for layer in layers:
            window, expected = windows.window(basis, layer.name, 0, 0), base[layer.name]
            assert (window - expected).abs().max() <= _map_tolerance(expected), layer.name
        shifted = {shift: capture.run(shift_images(x, *shift)) for shift in ((0, 0), (3, 3), (-3, -3))}
        assert windows.self_check(F.pad(x, (3, 3, 3, 3)), 3, shifted, 1e-5) is None


def test_variants_that_break_the_contract_offer_no_windows():
    assert LabCNN(padding="circular").crop_windows() is None and LabCNN(pool="aps").crop_windows() is None
    assert GapCNN(pool="blur").crop_windows() is None and AllConvCNN(padding="circular").crop_windows() is None


@pytest.mark.parametrize("name", ["blurpool", "gap", "allconv"])
def test_fast_path_measurement_equals_the_plain_path(name):
    torch.manual_seed(0)
    net = NETWORKS[name]()
    x = (_images(1, n=12, seed=1)[:, 0] * 255).to(torch.uint8)
    y = torch.arange(12) % 10
    fast = measure_family(net, x, y, Translation(2), fast_path=True, batch_size=5, workers=1)
    plain = measure_family(net, x, y, Translation(2), fast_path=False, batch_size=5, workers=1)
    assert fast["fast_path"] is True and plain["fast_path"] is False
    assert_same_figures(plain, fast, torch.float32, skip=("seconds", "fast_path"))


def test_blurpool_conv2_is_exact_at_even_shifts_on_its_certified_region():
    """The blur's reflect padding breaks conv2's window property, not its exactness where certified."""
    torch.manual_seed(0)
    net = LabCNN(pool="blur")
    x = (_images(1, n=6, seed=2)[:, 0] * 255).to(torch.uint8)
    res = measure_family(net, x, None, Translation(2), workers=1)
    assert res["fast_path"] is True
    shifts = res["groups"]["param"]
    even = [s for s in shifts if (s["param"][0] % 2, s["param"][1] % 2) == (0, 0)]
    assert even and all(s["conv2"]["aligned_rel_max"] < 1e-5 for s in even)
    odd = [s for s in shifts if s["param"][1] % 2]
    assert odd and all(s["conv2"]["aligned_rel"] is None for s in odd)  # the stride does not divide the shift


class WrongWindows(LabCNN):
    """The lab CNN whose crop windows compute conv2 with conv1's weights doubled: a broken fast path."""

    def crop_windows(self) -> CropWindows:
        good = super().crop_windows()
        return CropWindows(good.layers, lambda x: 2 * good.conv1(x), good.head, conv2=good.conv2)


def test_a_failed_self_check_measures_on_the_plain_path_and_says_why():
    torch.manual_seed(0)
    net = WrongWindows().eval()
    x = (_images(1, n=6, seed=3)[:, 0] * 255).to(torch.uint8)
    res = measure_family(net, x, None, Translation(1), workers=1)
    assert res["fast_path"] is False and "crop windows of 'conv1' differ" in res["fast_path_note"]
    reference = LabCNN().eval()
    reference.load_state_dict(net.state_dict())
    plain = measure_family(reference, x, None, Translation(1), workers=1, fast_path=False)
    assert_same_figures(plain, res, torch.float32, skip=("seconds", "fast_path", "fast_path_note"))


def test_a_padded_layer_swapped_into_a_windowed_net_takes_the_plain_path():
    """A zero-padded conv1 put into a GapCNN keeps its windows right at the zero shift only: the self-check's
    shifted images catch it, and the figures are the plain path's (the windows gave conv1 rel 0.62, not 0.61)."""
    torch.manual_seed(0)
    net = GapCNN().eval()
    net.conv1 = nn.Conv2d(1, net.conv1.out_channels, net.conv1.kernel_size, padding=1)
    x = (_images(1, n=6, seed=3)[:, 0] * 255).to(torch.uint8)
    res = measure_family(net, x, None, Translation(2), layers=["conv1", "conv2"], workers=1)
    assert res["fast_path"] is False and "crop windows of 'conv1' differ" in res["fast_path_note"]
    plain = measure_family(net, x, None, Translation(2), layers=["conv1", "conv2"], workers=1, fast_path=False)
    assert_same_figures(plain, res, torch.float32, skip=("seconds", "fast_path", "fast_path_note"))


def test_layers_the_windows_do_not_compute_take_the_plain_path():
    net = LabCNN().eval()
    x = (_images(1, n=4, seed=4)[:, 0] * 255).to(torch.uint8)
    res = measure_family(net, x, None, Translation(1), layers=["conv1", "pool1"], workers=1)
    assert res["fast_path"] is False and "'pool1'" in res["fast_path_note"]
