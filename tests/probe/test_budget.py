"""The memory budget (``shiftprobe.probe.budget``): parsing, the chunk sizing from the maps' shapes, and
``measure(memory_budget=...)``: its largest forward pass follows the budget and its figures do not move."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_same_figures
from torch import nn

from shiftprobe.probe.budget import PAIRS_PER_CHUNK, chunking, map_bytes, parse_memory_budget
from shiftprobe.probe.inputs import FIRST_IMAGES
from shiftprobe.probe.measure import measure
from shiftprobe.probe.translation import Translation


@pytest.mark.parametrize("value, expected", [(1000, 1000), ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20),
                                             (" 1.5 kb", 1500), ("3", 3), (2.5e3, 2500), (None, None)])
def test_parse_memory_budget(value, expected):
    assert parse_memory_budget(value) == expected


@pytest.mark.parametrize("value", ["2 parsecs", "", "GB", -1, 0, True, float("inf"), "0.1B", [1]])
def test_parse_memory_budget_refuses_in_one_line(value):
    with pytest.raises(ValueError, match=r"memory_budget=.*: give a number of bytes") as err:
        parse_memory_budget(value)
    assert "\n" not in str(err.value)


def test_map_bytes_counts_every_map_and_the_largest_twice():
    per_image, per_pair = map_bytes([(4, 10, 10), (8, 5, 5), (10,)], (3, 12, 12), torch.float32)
    maps, image = 4 * (400 + 200 + 10), 4 * 3 * 144
    assert per_image == 3 * maps + 2 * image
    assert per_pair == maps + image + 2 * 4 * 400
    assert map_bytes([(4, 10, 10)], (1, 2, 2), torch.float64)[1] == 2 * map_bytes([(4, 10, 10)], (1, 2, 2),
                                                                                   torch.float32)[1]


def test_chunking_follows_the_budget():
    sizes = [chunking(1000, 100, budget=b, threads=2, batch_size=8, device="cpu") for b in (40_000, 80_000, 10**9)]
    # per thread 20,000 bytes: 8 images (8,000) and 120 pairs (12,000); twice that: 8 and 320; large: the cap
    assert [(c.batch_size, c.pairs_per_chunk) for c in sizes] == [(8, 120), (8, 320), (8, PAIRS_PER_CHUNK["cpu"])]
    for c in sizes[:2]:
        assert c.peak_bytes <= c.budget
    small = chunking(1000, 100, budget=4400, threads=2, batch_size=8, device="cpu")  # 2,200 a thread: 2 images
    assert (small.batch_size, small.pairs_per_chunk) == (2, 2) and small.peak_bytes <= 4400
    tiny = chunking(1000, 100, budget=10, threads=1, batch_size=8, device="cpu")  # never below one pair an image
    assert (tiny.batch_size, tiny.pairs_per_chunk) == (1, 1)
    explicit = chunking(1000, 100, budget=10, threads=1, batch_size=8, device="cpu", pairs_per_chunk=64)
    assert (explicit.batch_size, explicit.pairs_per_chunk, explicit.budget) == (8, 64, None)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 4)
        self.sizes = []  # the batch of every forward pass
        self.conv.register_forward_hook(lambda m, i, o: self.sizes.append(len(o)))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_measure_sizes_its_forward_passes_to_the_budget():
    torch.manual_seed(0)
    net, images = Net().eval(), torch.rand(24, 1, 16, 16)
    per_image, per_pair = map_bytes([(8, 16, 16), (4,), (4,)], (1, 16, 16), torch.float32)
    kw = dict(layers=["conv", "fc", "output"], transform=Translation(max_shift=2), examples=False, batch_size=8)
    runs = {}
    for budget in (None, 80 * per_pair + 16 * per_image, 12 * per_pair + 4 * per_image):
        net.sizes = []
        runs[budget] = measure(net, images, memory_budget=budget, **kw).data
        expected = chunking(per_image, per_pair, budget=budget or 10**12, threads=torch.get_num_threads(),
                            batch_size=8, device="cpu")
        # a chunk holds whole parameters (of 25) for every image of the batch; nothing larger runs but the
        # model's first try on FIRST_IMAGES images
        b = expected.batch_size
        chunk = b * min(25, expected.pairs_per_chunk // b)
        assert chunk in net.sizes and max(net.sizes) == max(chunk, FIRST_IMAGES), (budget, net.sizes)
        if budget is not None:
            assert chunk * per_pair + b * per_image <= budget // torch.get_num_threads()
    first, *others = runs.values()
    for other in others:
        assert_same_figures(first, other)


def test_pairs_per_chunk_overrides_the_budget():
    torch.manual_seed(0)
    net = Net().eval()
    measure(net, torch.rand(8, 1, 16, 16), layers=["conv"], transform=Translation(max_shift=1), examples=False,
            batch_size=4, memory_budget=1, pairs_per_chunk=12)
    assert max(net.sizes) == 12 and net.sizes.count(12) > 1


def test_config_key_and_callback_refuse_a_bad_budget_in_one_line():
    from omegaconf import OmegaConf

    from shiftprobe.app.config_checks import validate_config
    from shiftprobe.errors import ShiftProbeError
    from shiftprobe.lit.callbacks import ShiftProbeCallback

    def cfg(value):
        return OmegaConf.create({"callbacks": {"shift_probe": {"memory_budget": value}}})

    validate_config(cfg("2GB"), known_keys=False)
    validate_config(cfg(None), known_keys=False)
    with pytest.raises(ShiftProbeError, match=r"callbacks.shift_probe.memory_budget='2 parsecs' is not allowed: give"):
        validate_config(cfg("2 parsecs"), known_keys=False)
    assert ShiftProbeCallback(memory_budget="512MiB").memory_budget == "512MiB"
    with pytest.raises(ValueError, match=r"callbacks.shift_probe.memory_budget=-1: give"):
        ShiftProbeCallback(memory_budget=-1)


def test_default_budget_is_a_quarter_of_the_ram_capped_or_the_cap_where_the_ram_is_unknown(monkeypatch):
    from shiftprobe.probe import budget

    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 400 * 2**20)
    assert budget.default_memory_budget("cpu") == 100 * 2**20
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 64 * 2**30)
    assert budget.default_memory_budget("cpu") == budget.CPU_DEFAULT_CAP
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": None)
    assert budget.default_memory_budget("cpu") == budget.CPU_DEFAULT_CAP


def test_on_an_accelerator_the_budget_is_half_the_free_memory_at_most_16_gb(monkeypatch):
    """The accelerators' branch, run here without one (``torch.device("cuda")`` needs no GPU); the chunk
    cap is larger there."""
    from shiftprobe.probe import budget

    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 20 * 2**30)
    assert budget.default_memory_budget("cuda") == 10 * 2**30  # not the CPU's 1 GiB cap
    monkeypatch.setattr(budget, "available_memory", lambda device="cpu": 140 * 2**30)
    assert budget.default_memory_budget("cuda") == budget.ACCELERATOR_DEFAULT_CAP == 16 * 10**9
    large = chunking(1000, 100, budget=10**12, threads=1, batch_size=8, device="cuda")
    assert (large.batch_size, large.pairs_per_chunk) == (8, PAIRS_PER_CHUNK["accelerator"]) == (8, 4096)
