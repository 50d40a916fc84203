"""The shared sort of crop windows (``shiftprobe.probe.window_sort``) against sorting every window on its own.

The reference (``per_window_sort``) copies each window and sorts it with NumPy, importing nothing from the
code it checks. Sorting is a permutation, so the two must agree exactly: the same values in the same order
(``==``; ``-0.0`` and ``0.0`` compare equal and a sort may order them either way) and NaN at the same
places (last); and the shared sort's result is each window's values permuted, bit for bit (nothing lost
or changed, signs of zero and NaN payloads included), which NumPy's own vectorised sort is not. The maps are full of ties on purpose (small integers, zeros of both signs, infinities).
"""

import json

import numpy as np
import pytest
import torch

import shiftprobe.probe.pairs as pairs
from shiftprobe.models.crop_windows import CropWindows
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.metrics import sort_channels, sorted_rel
from shiftprobe.probe.translation import Translation
from shiftprobe.probe.window_sort import WindowSorter, select_pays, shared_order, sorted_windows

SHIFTS = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]


def window_copies(maps: np.ndarray, origins, h: int, w: int) -> np.ndarray:
    """``(B, C, H, W) -> (B, S, C, h * w)``: each window copied, unsorted."""
    b, c = maps.shape[:2]
    out = np.empty((b, len(origins), c, h * w), dtype=maps.dtype)
    for s, (y0, x0) in enumerate(origins):
        out[:, s] = maps[:, :, y0 : y0 + h, x0 : x0 + w].reshape(b, c, h * w)
    return out


def per_window_sort(maps: np.ndarray, origins, h: int, w: int) -> np.ndarray:
    """``(B, C, H, W) -> (B, S, C, h * w)``: each window copied and sorted by ``np.sort``."""
    return np.sort(window_copies(maps, origins, h, w), axis=-1)


def bit_rows(a: np.ndarray) -> np.ndarray:
    """Each last-axis row's bit patterns, sorted as integers (the row's multiset of exact values)."""
    ints = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}[a.dtype]
    return np.sort(np.ascontiguousarray(a).view(ints).reshape(-1, a.shape[-1]), axis=-1)


def assert_same_sorted(actual: np.ndarray, maps: np.ndarray, origins, h: int, w: int) -> None:
    """``actual`` equals ``np.sort`` of every window (``==`` where not NaN, NaN at the same places) and is a
    permutation of the window's values bit for bit. (NumPy's vectorised sort is not: its min/max network
    can return ``-0.0`` as ``0.0`` and returns NaN as the canonical NaN.)"""
    expected = per_window_sort(maps, origins, h, w)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan)
    assert np.array_equal(actual[~nan], expected[~nan])
    assert np.array_equal(bit_rows(actual), bit_rows(window_copies(maps, origins, h, w)))


def tied_maps(shape, dtype, seed: int, nan: bool = True) -> np.ndarray:
    """Small integers (many ties), zeros of both signs, infinities and (optionally) NaN of both signs."""
    rng = np.random.default_rng(seed)
    maps = rng.integers(-3, 4, size=shape).astype(dtype)
    maps[rng.random(shape) < 0.15] = -0.0
    maps[rng.random(shape) < 0.03] = np.inf
    maps[rng.random(shape) < 0.03] = -np.inf
    if nan:
        maps[rng.random(shape) < 0.05] = np.nan
        maps[rng.random(shape) < 0.03] = -np.nan
    return maps


def grid_origins(m: int) -> list[tuple[int, int]]:
    """The crop plan's window corners for every shift up to ``m``, in its order (``m - dy, m - dx``)."""
    return [(m - dy, m - dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)]


CASES = [  # (B, C, H, W), h, w, origins
    ((2, 3, 12, 12), 8, 8, grid_origins(2)),
    ((1, 2, 7, 9), 4, 5, [(0, 0), (3, 4), (1, 2), (3, 0), (0, 4), (2, 2)]),  # no grid, any order
    ((2, 2, 6, 5), 6, 5, [(0, 0)]),  # the whole map
    ((1, 3, 5, 6), 1, 1, [(y, x) for y in range(5) for x in range(6)]),  # single values
    ((3, 1, 11, 10), 9, 7, [(y, x) for y in (2, 0, 1) for x in (3, 0)]),  # a grid of unsorted starts
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("method", ["select", "sort", "auto"])
def test_sorted_windows_equal_sorting_every_window(dtype, case, method):
    shape, h, w, origins = CASES[case]
    maps = tied_maps(shape, dtype, seed=case)
    got = sorted_windows(torch.from_numpy(maps), origins, h, w, method=method)
    assert got.dtype == torch.from_numpy(maps).dtype and got.is_contiguous()
    if method == "sort" or (method == "auto" and not select_pays(torch.from_numpy(maps), h, w)):  # NumPy's sort itself: equal values, not a bitwise permutation (see assert_same_sorted)
        assert np.array_equal(got.numpy(), per_window_sort(maps, origins, h, w), equal_nan=True)
    else:
        assert_same_sorted(got.numpy(), maps, origins, h, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_is_bit_identical_without_nan(dtype):
    """Without NaN, ``torch.equal`` to the per-window sort (the sorting test's figures use ``==`` values)."""
    maps = tied_maps((2, 4, 16, 16), dtype, seed=7, nan=False)
    origins = grid_origins(4)
    got = sorted_windows(torch.from_numpy(maps), torch.tensor(origins), 8, 8, method="select")
    assert torch.equal(got, torch.from_numpy(per_window_sort(maps, origins, 8, 8)))


def test_distinct_values_in_every_order_are_sorted_exactly():
    """A random permutation of distinct values: exactly one right answer, bit for bit."""
    rng = np.random.default_rng(3)
    maps = rng.standard_normal((3, 5, 10, 10)).astype(np.float32)
    origins = grid_origins(2)
    got = sorted_windows(torch.from_numpy(maps), origins, 6, 6, method="select").numpy()
    assert np.array_equal(got.view(np.uint32), per_window_sort(maps, origins, 6, 6).view(np.uint32))


def test_shared_order_sorts_as_numpy_and_puts_negative_zero_first():
    row = np.array([[0.0, np.nan, -0.0, 1.0, -np.inf, -np.nan, -1.0, 0.0, np.inf]], dtype=np.float32)
    values, pos = shared_order(row)
    assert np.array_equal(values[:, :-2], np.sort(row)[:, :-2]) and np.isnan(values[0, -2:]).all()
    assert np.array_equal(values, np.take_along_axis(row, pos, 1), equal_nan=True)  # positions match values
    assert pos[0, :5].tolist() == [4, 6, 2, 0, 7]  # -inf, -1, -0.0, then the zeros in position order


def lab_basis(n_images: int = 3, m: int = 4):
    """The crop fast path's padded maps of the lab CNN (seed 0) for digit-like images (zero background)."""
    torch.manual_seed(0)
    net = LabCNN().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(n_images, 1, 28, 28)
    x[:, :, 6:22, 8:20] = torch.rand(n_images, 1, 16, 12, generator=g).round()
    windows = net.crop_windows()
    with torch.inference_mode():
        return windows, x, windows.basis(torch.nn.functional.pad(x, (m, m, m, m)), m), net


def test_lab_crop_windows_give_the_engines_sorted_maps_and_figures():
    """conv1 and conv2 of the lab CNN: the shared sort of the padded maps equals ``sort_channels`` of the
    maps ``CropWindows.shifted`` returns (what the engine sorts today), and so do the ``sorted_rel`` figures."""
    windows, x, basis, net = lab_basis()
    with torch.inference_mode():
        maps = windows.shifted(basis, SHIFTS)
        base = net.probe(x)
    for name in ("conv1", "conv2"):
        side = basis["sides"][name]
        columns, got = [], []
        by_source = {}
        for j, (dy, dx) in enumerate(SHIFTS):
            source, y0, x0 = windows.source(basis, name, dy, dx)
            by_source.setdefault(id(source), (source, []))[1].append((j, y0, x0))
        for source, items in by_source.values():
            columns += [j for j, _, _ in items]
            got.append(sorted_windows(source, [(y0, x0) for _, y0, x0 in items], side, side, method="select"))
        got = torch.cat(got, dim=1)[:, np.argsort(columns)]
        expected = sort_channels(maps[name])
        assert torch.equal(got, expected)
        sx = sort_channels(base[name]).unsqueeze(1)
        assert torch.equal(sorted_rel(sx, got), sorted_rel(sx, expected))


def test_half_precision_is_sorted_in_float32_like_sort_channels():
    maps = torch.from_numpy(tied_maps((1, 2, 6, 6), np.float32, seed=5, nan=False)).to(torch.bfloat16)
    got = sorted_windows(maps, [(0, 0), (1, 2)], 5, 4)
    expected = torch.stack([sort_channels(maps[:, :, y : y + 5, x : x + 4]) for y, x in [(0, 0), (1, 2)]], dim=1)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_auto_selects_where_windows_cover_half_the_map():
    maps = torch.zeros(1, 1, 32, 32)
    assert select_pays(maps, 24, 24) and not select_pays(maps[..., :12, :12], 8, 8)
    assert not select_pays(maps.half(), 24, 24)


@pytest.mark.parametrize(
    "args, words",
    [
        (((2, 2), [(0, 0)], 3, 3), "(B, C, H, W)"),
        (((1, 1, 4, 4), [(0, 1)], 4, 4), "leaves the 4x4 map"),
        (((1, 1, 4, 4), [(-1, 0)], 2, 2), "window corner (-1, 0)"),
        (((1, 1, 4, 4), [0, 1], 2, 2), "(S, 2)"),
        (((1, 1, 4, 4), [(0, 0)], 5, 2), "does not fit"),
    ],
)
def test_unusable_arguments_are_refused_in_one_line(args, words):
    shape, origins, h, w = args
    with pytest.raises(ValueError) as err:
        sorted_windows(torch.zeros(shape), origins, h, w)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unknown_method_and_select_on_integers_are_refused():
    with pytest.raises(ValueError, match="method='fast'"):
        sorted_windows(torch.zeros(1, 1, 4, 4), [(0, 0)], 2, 2, method="fast")
    with pytest.raises(ValueError, match="float"):
        sorted_windows(torch.zeros(1, 1, 4, 4, dtype=torch.int32), [(0, 0)], 2, 2)


def test_strided_maps_and_tensor_origins():
    """A non-contiguous view (transposed maps) and origins as a tensor give the same as a contiguous copy."""
    maps = torch.from_numpy(tied_maps((2, 3, 9, 9), np.float32, seed=11, nan=False)).transpose(-1, -2)
    origins = torch.tensor(grid_origins(1))
    got = sorted_windows(maps, origins, 7, 7, method="select")
    assert torch.equal(got, torch.from_numpy(per_window_sort(maps.contiguous().numpy(), origins.tolist(), 7, 7)))


@pytest.mark.parametrize("name", ["conv1", "conv2"])
@pytest.mark.parametrize("cols", [slice(None), slice(3, 20), slice(80, 81)])
def test_window_sorter_gives_each_columns_sorted_shifted_maps_in_order(name, cols):
    """One ``WindowSorter`` per layer (conv2: four pooling-phase source maps, interleaved along the plan's
    columns) gives, for any slice of the columns, ``sort_channels`` of ``CropWindows.shifted``'s maps."""
    windows, x, basis, net = lab_basis()
    side = basis["sides"][name]
    sorter = WindowSorter([windows.source(basis, name, dy, dx) for dy, dx in SHIFTS], side, side)
    with torch.inference_mode():
        expected = sort_channels(windows.shifted(basis, SHIFTS[cols])[name])
    assert torch.equal(sorter(cols), expected)


def _figures(res: dict) -> str:
    """Every figure of a section as exact text (floats by repr, NaN as NaN), timings left out."""
    return json.dumps({k: v for k, v in res.items() if k != "seconds"}, sort_keys=True)


def test_engine_sorts_the_lab_conv1_windows_by_one_shared_sort_with_the_same_figures(monkeypatch):
    """The lab CNN's default measurement (9x9 crop grid): conv1's sorted maps come from one shared sort per
    batch (``WindowSorter``), and where conv1's zero-shift window is f(x) bit for bit (a window layer) its
    shifted maps are never stacked; every figure equals, bit for bit, the per-window sort's (``select_pays``
    forced off)."""
    windows, x, _, net = lab_basis(n_images=5)
    calls, events = [], []  # events: ("batch", window layers) and ("chunk", skipped probe points), in order
    real_call, real_shifted = WindowSorter.__call__, CropWindows.shifted
    real_layers = pairs.PairComputer.window_layers
    monkeypatch.setattr(WindowSorter, "__call__", lambda self, cols: calls.append(cols) or real_call(self, cols))
    monkeypatch.setattr(CropWindows, "shifted", lambda self, basis, shifts, skip=():
                        events.append(("chunk", set(skip))) or real_shifted(self, basis, shifts, skip))
    monkeypatch.setattr(pairs.PairComputer, "window_layers", lambda self, base, basis:
                        events.append(("batch", real_layers(self, base, basis))) or events[-1][1])
    shared = measure_family(net, x, None, Translation(4), batch_size=3, pairs_per_chunk=64, workers=1)
    assert shared["fast_path"] is True and len(calls) == 4 + 3  # 81 columns in chunks of 64 // 3 = 21, then 64 // 2 = 32
    batch_events = [e for e in events if e[0] == "batch"]
    assert len(batch_events) == 2
    layers = set()
    for kind, names in events[1:]:  # events[0]: the self-check's zero shift
        layers = names if kind == "batch" else layers
        assert kind == "batch" or names == layers & {"conv1"}
    calls.clear()
    monkeypatch.setattr(pairs, "select_pays", lambda *args: False)
    each = measure_family(net, x, None, Translation(4), batch_size=3, pairs_per_chunk=64, workers=1)
    assert not calls and _figures(shared) == _figures(each)
