"""Per-pair metrics (``shiftprobe.probe.metrics``): textbook formulas, the sorted test, and the exact
test on the certified region the layer's inferred geometry gives."""

import pytest
import torch
from tolerances import tol
from torch import nn

from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.metrics import (
    aligned_offset,
    aligned_rel_at,
    aligned_values,
    nearest_offsets,
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sort_rows,
    sorted_rel,
    window_pair_metrics,
    window_products,
)
from shiftprobe.probe.resample import shift_images

SHIFTS_UP_TO_4 = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]


def geometry_of(net, layers, image_shape=(1, 28, 28)):
    return infer_geometry(net, resolve_layers(net, layers), image_shape)


def whole_map(shape, stride=(1, 1)) -> LayerGeometry:
    """A layer whose every position is certified (receptive field of one pixel)."""
    c, h, w = shape
    return LayerGeometry("f", "spatial", shape, stride=stride, receptive_field=(0, 0, 0, 0), interior=(0, h - 1, 0, w - 1))


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return LabCNN().eval()


@pytest.fixture(scope="module")
def lab_geo(random_net):
    return geometry_of(random_net, ["conv1", "conv2"])


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 28, 28, generator=g)


@pytest.fixture(scope="module")
def lab_maps(random_net, images):
    """conv1 and conv2 maps of the images and of every shift up to 4 (crop), computed once."""
    n = len(images)
    with torch.no_grad():  # one forward for every shift: far faster than one per shift
        maps = random_net.probe(torch.cat([images] + [shift_images(images, *s) for s in SHIFTS_UP_TO_4]))
    maps = {k: maps[k] for k in ("conv1", "conv2")}
    base = {k: v[:n] for k, v in maps.items()}
    shifted = {s: {k: v[(i + 1) * n : (i + 2) * n] for k, v in maps.items()} for i, s in enumerate(SHIFTS_UP_TO_4)}
    return base, shifted


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
    for k in m:  # a batched matmul against a sum of products: float32, not bit for bit
        torch.testing.assert_close(m[k].reshape(-1), ref[k], **tol(torch.float32, unit=True), msg=k)


def test_pair_metrics_of_half_precision_are_float32_compared_and_float64_summed():
    a, b = torch.randn(3, 20), torch.randn(3, 20)
    m = pair_metrics(a.bfloat16(), b.bfloat16())
    ref = pair_metrics(a.bfloat16().float(), b.bfloat16().float())
    assert m["rel"].dtype == torch.float64
    assert torch.allclose(m["rel"], ref["rel"], atol=1e-6)


def test_window_products_equal_materialised_windows():
    """Box sums and the FFT correlation give every window's squared norm and dot product with f(x)."""
    g = torch.Generator().manual_seed(0)
    source, f_x = torch.randn(3, 4, 13, 11, generator=g), torch.randn(3, 4, 8, 7, generator=g)
    origins = torch.tensor([(y, x) for y in range(6) for x in range(5)])
    dot, norm2 = window_products(source, f_x, origins)
    windows = torch.stack([source[:, :, y : y + 8, x : x + 7] for y, x in origins.tolist()], 1).double()
    assert dot.dtype == norm2.dtype == torch.float64 and dot.shape == (3, len(origins))
    assert torch.allclose(norm2, windows.flatten(2).square().sum(-1), rtol=1e-12, atol=1e-10)
    assert torch.allclose(dot, (windows * f_x.double().unsqueeze(1)).flatten(2).sum(-1), rtol=1e-12, atol=1e-10)


def test_window_pair_metrics_equal_pair_metrics_and_are_exact_for_the_same_window():
    g = torch.Generator().manual_seed(1)
    source = torch.randn(2, 3, 10, 10, generator=g)
    f_x = source[:, :, 1:8, 2:9].clone()  # the window at (1, 2) is f(x) itself
    origins = torch.tensor([(1, 2), (0, 0), (3, 1), (2, 3)])
    dot, norm2 = window_products(source, f_x, origins)
    same = torch.tensor([True, False, False, False])
    m = window_pair_metrics(f_x.double().flatten(1).square().sum(1), dot, norm2, same)
    windows = torch.stack([source[:, :, y : y + 7, x : x + 7] for y, x in origins.tolist()], 1)
    ref = pair_metrics(f_x.double().flatten(1).unsqueeze(1), windows.double().flatten(2))
    for k in ("cos", "dist", "rel"):
        assert torch.allclose(m[k], ref[k], rtol=1e-9, atol=1e-9), k
    assert torch.all(m["dist"][:, 0] == 0) and torch.all(m["cos"][:, 0] == 1) and torch.all(m["rel"][:, 0] == 0)


def test_prediction_agreement():
    x = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    t = torch.tensor([[0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    assert prediction_agreement(x, t).tolist() == [1.0, 0.0, 1.0]


def test_sort_channels_numpy_path_equals_torch_sort():
    f = torch.randn(70, 10, 24, 24)  # enough rows for the threaded NumPy path
    ref = torch.sort(f.flatten(-2), dim=-1).values
    assert torch.equal(sort_channels(f), ref)
    g = f.clone()
    assert torch.equal(sort_channels(g, inplace=True), ref)
    assert torch.equal(sort_channels(f[:1]), ref[:1])
    assert torch.equal(sort_channels(f.double()), ref.double())


@pytest.mark.parametrize("block", [1, 7, 50, 10**6])  # one row at a time, rows split unevenly, one block
def test_sort_rows_by_blocks_equals_one_torch_sort(block):
    """The accelerators' path: sorting a bounded block of rows at a time gives torch.sort's values exactly
    (sorting is exact), in new memory, or in the input's own memory with ``inplace``."""
    f = torch.randn(6, 5, 8)
    ref = torch.sort(f, dim=-1).values
    before = f.clone()
    assert torch.equal(sort_rows(f, block=block), ref) and torch.equal(f, before)
    assert torch.equal(sort_rows(f.transpose(0, 1), inplace=True, block=block), ref.transpose(0, 1))
    assert torch.equal(f, before)  # not contiguous: never sorted in place
    out = sort_rows(f, inplace=True, block=block)
    assert torch.equal(out, ref) and (block >= 240 or out.data_ptr() == f.data_ptr())


def test_sort_channels_does_not_touch_its_input_unless_asked():
    f = torch.randn(2, 3, 4, 4)
    before = f.clone()
    sort_channels(f)
    assert torch.equal(f, before)


def test_sorted_rel_is_invariant_to_permutations_within_channels():
    f = torch.randn(3, 4, 5, 5)
    perm = torch.randperm(25)
    g = f.flatten(-2)[..., perm].view_as(f)
    assert torch.all(sorted_rel(sort_channels(f), sort_channels(g)) < 1e-7)
    # ...but not to moving values between channels
    h = f[:, [1, 0, 2, 3]]
    assert torch.all(sorted_rel(sort_channels(f), sort_channels(h)) > 1e-2)


def test_lab_geometry_certifies_the_whole_map(lab_geo):
    """Valid convolutions and a stride-2 max pool: every position of conv1 and conv2 sees only image
    pixels, so the certified region below is the whole overlap (the old exact test's region)."""
    assert lab_geo["conv1"].stride == (1, 1) and lab_geo["conv1"].interior == (0, 23, 0, 23)
    assert lab_geo["conv2"].stride == (2, 2) and lab_geo["conv2"].interior == (0, 7, 0, 7)


@pytest.mark.parametrize("dy,dx", SHIFTS_UP_TO_4)
def test_conv1_exactly_equivariant_crop(lab_maps, lab_geo, dy, dx):
    base, shifted = lab_maps
    value, nearest = aligned_values(base["conv1"], shifted[dy, dx]["conv1"], dy, dx, lab_geo["conv1"], "crop")
    assert value.max() < 1e-5
    assert torch.equal(nearest, value)  # nearest_aligned_rel is aligned_rel wherever that is defined


@pytest.mark.parametrize("dy,dx", SHIFTS_UP_TO_4)
def test_conv2_exact_only_at_even_shifts_crop(lab_maps, lab_geo, dy, dx):
    base, shifted = lab_maps
    value, nearest = aligned_values(base["conv2"], shifted[dy, dx]["conv2"], dy, dx, lab_geo["conv2"], "crop")
    if dy % 2 == 0 and dx % 2 == 0:
        assert value.max() < 1e-5
        assert torch.equal(nearest, value)
    else:
        assert value is None
        # no integer alignment of the stride-2 map reproduces an odd shift
        assert nearest.min() > 1e-2


def test_nearest_is_the_best_of_the_neighbouring_offsets(lab_maps, lab_geo):
    base, shifted = lab_maps
    f, ft, geo = base["conv2"], shifted[3, -1]["conv2"], lab_geo["conv2"]
    assert aligned_offset(3, -1, (2, 2)) is None and aligned_offset(4, -2, (2, 2)) == (2, -1)
    offsets = nearest_offsets(3, -1, (2, 2))
    assert sorted(offsets) == [(1, -1), (1, 0), (2, -1), (2, 0)]
    each = torch.stack([aligned_rel_at(f, ft, my, mx, geo, "crop") for my, mx in offsets])
    _, nearest = aligned_values(f, ft, 3, -1, geo, "crop")
    assert torch.equal(nearest, each.amin(0))


@pytest.fixture(scope="module")
def circular_stack():
    torch.manual_seed(3)
    stack = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, padding_mode="circular"),
    ).eval()
    return stack, geometry_of(stack, ["2"])["2"]


@pytest.fixture(scope="module")
def circular_lab():
    torch.manual_seed(4)
    net = LabCNN(padding="circular").eval()
    return net, geometry_of(net, ["conv1", "conv2"])


@pytest.mark.parametrize("dy,dx", [(1, 0), (-2, 3), (4, 4), (0, -5)])
def test_circular_conv_stack_exact_under_roll(circular_stack, dy, dx):
    """Convolutions with circular padding commute with circular shifts: exactly, on the whole map."""
    stack, geo = circular_stack
    assert geo.circular and geo.stride == (1, 1)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f, ft = stack(x), stack(shift_images(x, dy, dx, "roll"))
    value, _ = aligned_values(f, ft, dy, dx, geo, "roll")
    assert value.max() < 1e-5
    assert sorted_rel(sort_channels(f), sort_channels(ft)).max() < 1e-5


@pytest.mark.parametrize("dy,dx", [(1, 1), (2, 0), (-3, 2), (4, -4)])
def test_circular_lab_variant_exact_under_roll(circular_lab, dy, dx):
    net, geo = circular_lab
    assert geo["conv1"].circular and geo["conv2"].circular
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        p, pt = net.probe(x), net.probe(shift_images(x, dy, dx, "roll"))
    assert aligned_values(p["conv1"], pt["conv1"], dy, dx, geo["conv1"], "roll")[0].max() < 1e-5
    assert sorted_rel(sort_channels(p["conv1"]), sort_channels(pt["conv1"])).max() < 1e-5
    if dy % 2 == 0 and dx % 2 == 0:
        assert aligned_values(p["conv2"], pt["conv2"], dy, dx, geo["conv2"], "roll")[0].max() < 1e-5
        assert sorted_rel(sort_channels(p["conv2"]), sort_channels(pt["conv2"])).max() < 1e-5


def test_crop_sorted_rel_not_exact_at_borders(lab_maps):
    """In crop mode content leaves the frame, so even conv1's sorted values change a little."""
    base, shifted = lab_maps
    assert sorted_rel(sort_channels(base["conv1"]), sort_channels(shifted[3, 3]["conv1"])).min() > 1e-4


def test_aligned_rel_at_detects_misalignment():
    f = torch.randn(2, 3, 8, 8)
    g = shift_images(f, 1, 0)
    geo = whole_map((3, 8, 8))
    assert aligned_rel_at(f, g, 1, 0, geo, "crop").max() < 1e-7
    assert aligned_rel_at(f, g, 0, 1, geo, "crop").min() > 0.1


def test_aligned_rel_compares_only_certified_positions():
    """Values outside the certified region (positions whose receptive field leaves the image) do not
    count; an offset that leaves no certified position gives NaN (counted as "no overlap")."""
    f = torch.randn(2, 3, 8, 8)
    g = shift_images(f, 1, 1)
    g[..., 1, :] = 100.0  # in the overlap of offset (1, 1), but not certified by the interior below
    geo = LayerGeometry("f", "spatial", (3, 8, 8), stride=(1, 1), receptive_field=(-1, 1, -1, 1), interior=(1, 6, 1, 6))
    assert aligned_rel_at(f, g, 1, 1, geo, "crop").max() < 1e-7
    assert aligned_rel_at(f, g, 1, 1, whole_map((3, 8, 8)), "crop").min() > 1  # the whole overlap sees it
    assert torch.isnan(aligned_rel_at(f, g, 6, 0, geo, "crop")).all()
    value, nearest = aligned_values(f, g, 6, 0, geo, "crop")
    assert torch.isnan(value).all() and torch.isnan(nearest).all()


def test_roll_on_a_non_circular_layer_uses_the_certified_region():
    f = torch.randn(2, 3, 8, 8)
    g = torch.roll(f, shifts=(2, 0), dims=(-2, -1))
    g[..., :2, :] = 7.0  # what wrapped around: a non-circular layer computes something else there
    geo = whole_map((3, 8, 8))
    assert aligned_rel_at(f, g, 2, 0, geo, "roll").max() < 1e-7
    circular = LayerGeometry("f", "spatial", (3, 8, 8), stride=(1, 1), receptive_field=(0, 0, 0, 0),
                             interior=(0, 7, 0, 7), circular=True)
    assert aligned_rel_at(f, g, 2, 0, circular, "roll").min() > 0.1  # the whole rolled map is compared
