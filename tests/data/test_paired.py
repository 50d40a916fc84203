"""``PairedShiftDataset``: the plan of a ``Translation`` item by item, ``(x, T(s) x, y, s)``."""

import pytest
import torch

from shiftprobe.data.paired import PairedShiftDataset
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.translation import Translation, shift_grid

N = 24


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(N, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (N,), generator=g)


def test_paired_dataset_items_are_translated_pairs(data):
    images, labels = data
    ds = PairedShiftDataset(images, labels, Translation(2))
    assert len(ds) == N * 25
    x, tx, y, s = ds[3 * 25 + 7]
    assert tuple(s.tolist()) == shift_grid(2)[7] and y == labels[3]
    assert torch.equal(x, images[3].unsqueeze(0).float() / 255)
    assert torch.equal(tx, shift_images(x, *s.tolist()))
    rnd = PairedShiftDataset(images, labels, Translation(2, "roll", "random", 4))
    again = PairedShiftDataset(images, labels, Translation(2, "roll", "random", 4))
    assert len(rnd) == N
    for i in range(N):
        assert torch.equal(rnd[i][3], again[i][3]) and rnd[i][3].abs().sum() > 0
        assert torch.equal(rnd[i][1], shift_images(rnd[i][0], *rnd[i][3].tolist(), "roll"))


def test_paired_dataset_refuses_float_images(data):
    images, labels = data
    with pytest.raises(ValueError, match="uint8"):
        PairedShiftDataset(images.float(), labels, Translation(2))
