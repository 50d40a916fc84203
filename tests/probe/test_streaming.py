"""``measure`` on a ``Dataset`` or a ``DataLoader``: streamed a batch at a time, the same figures as the
equivalent tensor, labels from ``(image, label)`` items, every input check per batch; the progress line."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_same_figures
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from shiftprobe.probe.images import checked_images
from shiftprobe.probe.measure import measure
from shiftprobe.probe.translation import Translation

KW = dict(layers=["0", "2", "output"], transform=Translation(max_shift=1), batch_size=4, examples=False,
          progress=False)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 5)).eval()


def _data(n=14):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8), torch.randint(0, 5, (n,), generator=g)


class Items(Dataset):
    """``(image, label)`` items (or images) from tensors, counting the items served."""

    def __init__(self, x, y=None):
        self.x, self.y, self.served = x, y, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.served += 1
        return self.x[i] if self.y is None else (self.x[i], int(self.y[i]))


def _figures(res):
    return {k: v for k, v in res.data.items() if k not in ("seconds", "seconds_total")}


@pytest.mark.numerics
def test_a_dataloader_gives_the_figures_of_the_tensor():
    x, y = _data()
    net = _net()
    kw = dict(KW, max_images=11, lie_derivative=["translate_x"], lie_derivative_images=6)
    tensor = _figures(measure(net, x, y, **kw))
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)  # its batching and order are not used
    assert_same_figures(tensor, _figures(measure(net, loader, **kw)))
    assert_same_figures(tensor, _figures(measure(net, Items(x, y), **kw)))
    assert tensor["families"]["translation"]["accuracy"] is not None  # the labels came with the items
    unlabelled = _figures(measure(net, Items(x), **kw))
    assert unlabelled["families"]["translation"]["accuracy"] is None
    assert_same_figures(_figures(measure(net, x, **kw)), unlabelled)


@pytest.mark.numerics
def test_normalised_dataset_items_are_un_normalised_per_batch():
    x, y = _data()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    normalised = (x.float() / 255 - m) / s
    net = _net()
    expected = _figures(measure(net, normalised, y, normalization=(mean, std), **KW))
    got = _figures(measure(net, Items(normalised, y), normalization=(mean, std), **KW))
    assert_same_figures(expected, got)


def test_batches_stream():
    x, y = _data(n=40)
    items = Items(x, y)
    images, _ = checked_images(_net(), items)
    served = items.served  # the first item, for the shape
    batches = images.batches(torch.split(torch.arange(40), 4), k=7)
    idx, xb, yb, xc = next(batches)
    assert items.served - served == 8  # the batch and its control images, nothing more
    assert torch.equal(xb, x[:4]) and torch.equal(yb, y[:4]) and torch.equal(xc, x[7:11])


@pytest.mark.parametrize("bad, match", [
    (lambda x: x.float().div(255).index_put_((torch.tensor([9]),), torch.tensor(float("nan"))), r"images \[9\] hold NaN"),
    (lambda x: x.float(), r"outside the pixel range"),
])
def test_each_batch_is_checked(bad, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match) as err:
        measure(_net(), Items(bad(x), y), **KW)
    assert "\n" not in str(err.value)


def test_refusals():
    x, y = _data()

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(x)

    with pytest.raises(TypeError, match="iterable dataset: the control pairs images by index"):
        measure(_net(), Stream(), **KW)
    with pytest.raises(ValueError, match=r"labels= with a Dataset or DataLoader"):
        measure(_net(), Items(x, y), y, **KW)
    with pytest.raises(ValueError, match=r"memory_budget='lots'"):
        measure(_net(), x, y, **dict(KW, memory_budget="lots"))


def test_progress_announces_pairs_and_memory(capsys):
    x, y = _data(n=6)
    net = _net()
    measure(net, x, y, **dict(KW, progress=None))  # pytest captures stderr: not a terminal, so off
    assert capsys.readouterr().err == ""
    measure(net, x, y, **dict(KW, progress=True, memory_budget="1GB"))
    err = capsys.readouterr().err
    assert "measuring translation: 54 pairs (6 images x 9), 4 images a batch" in err
    assert "of maps of the 1 GB budget" in err
