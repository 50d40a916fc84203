"""``shiftprobe.export_pairs``: the lab's activations of shifted pairs, as files."""

import numpy as np
import pytest
import torch

import shiftprobe
from shiftprobe.probe.resample import shift_images


def nets():
    torch.manual_seed(1)
    trained = shiftprobe.LabCNN()
    torch.manual_seed(2)
    return trained, shiftprobe.LabCNN()


def data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)


def test_shapes_and_keys(tmp_path):
    trained, untrained = nets()
    images, labels = data()
    pairs = shiftprobe.export_pairs(
        trained, images, labels, ["conv2", "fc1"], shiftprobe.Translation(max_shift=3), n=5, seed=0,
        untrained=untrained, path=tmp_path,
    )
    assert pairs["x"].shape == pairs["tx"].shape == (5, 1, 28, 28)
    assert pairs["shift"].shape == (5, 2) and pairs["label"].shape == pairs["index"].shape == (5,)
    for network in ("trained", "untrained"):
        for side in ("x", "tx"):
            assert pairs[f"{network}/conv2/{side}"].shape == (5, 20, 8, 8)
            assert pairs[f"{network}/fc1/{side}"].shape == (5, 50)
    assert not any("conv1" in key for key in pairs)  # only the layers asked for
    assert torch.equal(pairs["label"], labels[pairs["index"]])
    assert ((pairs["shift"].abs() <= 3).all() and (pairs["shift"] != 0).any(dim=1).all())  # non-zero shifts of the plan
    # both files hold the same tensors
    from_pt = torch.load(tmp_path / "pairs.pt", weights_only=True)
    from_npz = np.load(tmp_path / "pairs.npz")
    assert set(from_pt) == set(from_npz.files) == set(pairs)
    for key, value in pairs.items():
        assert torch.equal(from_pt[key], value)
        np.testing.assert_array_equal(from_npz[key], value.numpy())


def test_activations_are_the_models_own():
    """``trained/conv2/tx`` is the model run on ``tx`` (LabCNN.probe, no hooks), ``tx`` is ``x`` shifted."""
    trained, untrained = nets()
    images, labels = data()
    pairs = shiftprobe.export_pairs(trained, images, labels, None, shiftprobe.Translation(max_shift=2), n=6, seed=3,
                                    untrained=untrained)
    x = images[pairs["index"]].float().div(255).unsqueeze(1)
    assert torch.equal(pairs["x"], x)
    for i, (dy, dx) in enumerate(pairs["shift"].tolist()):
        assert torch.equal(pairs["tx"][i], shift_images(x[i], dy, dx, "crop"))
    with torch.no_grad():
        for network, net in (("trained", trained), ("untrained", untrained)):
            for side in ("x", "tx"):
                own = net.probe(pairs[side])
                for layer in ("conv1", "conv2", "fc1", "logits"):
                    torch.testing.assert_close(pairs[f"{network}/{layer}/{side}"], own[layer], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pairs["trained/fc1/x"], pairs["untrained/fc1/x"])


def test_same_seed_same_pairs_other_seed_other_pairs():
    trained, _ = nets()
    images, labels = data(40)
    t = shiftprobe.Translation(max_shift=4)
    a = shiftprobe.export_pairs(trained, images, labels, ["fc1"], t, n=10, seed=7)
    b = shiftprobe.export_pairs(trained, images, labels, ["fc1"], t, n=10, seed=7)
    c = shiftprobe.export_pairs(trained, images, labels, ["fc1"], t, n=10, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (torch.equal(a["index"], c["index"]) and torch.equal(a["shift"], c["shift"]))
    assert len(set(a["index"].tolist())) == 10  # distinct images while n <= N


def test_patterns_and_modes():
    trained, _ = nets()
    images, labels = data(20)
    axis = shiftprobe.export_pairs(trained, images, labels, ["conv1"], shiftprobe.Translation(2, pattern="axis"), n=8)
    assert (axis["shift"][:, 0] == 0).all() and (axis["shift"][:, 1] != 0).all()
    rnd_t = shiftprobe.Translation(2, pattern="random", seed=5)
    rnd = shiftprobe.export_pairs(trained, images, labels, ["conv1"], rnd_t, n=8)
    plan = rnd_t.plan(len(images), (28, 28))
    assert torch.equal(rnd["shift"], plan.param_values(plan.pairs[rnd["index"]]).view(8, 2))  # each image's own shift
    rolled = shiftprobe.export_pairs(trained, images, labels, ["conv1"], shiftprobe.Translation(2, mode="roll"), n=4)
    for i, (dy, dx) in enumerate(rolled["shift"].tolist()):
        assert torch.equal(rolled["tx"][i], torch.roll(rolled["x"][i], (dy, dx), dims=(-2, -1)))
    more = shiftprobe.export_pairs(trained, images[:3], None, ["conv1"], shiftprobe.Translation(1), n=7, path=None)
    assert more["index"].shape == (7,) and (more["label"] == -1).all()  # with replacement past N; no labels


def test_file_name_path_and_bad_n(tmp_path):
    trained, _ = nets()
    images, labels = data(4)
    shiftprobe.export_pairs(trained, images, labels, ["fc1"], n=2, path=tmp_path / "lab" / "my_pairs.pt")
    assert (tmp_path / "lab" / "my_pairs.pt").is_file() and (tmp_path / "lab" / "my_pairs.npz").is_file()
    with pytest.raises(ValueError, match="n=0"):
        shiftprobe.export_pairs(trained, images, labels, ["fc1"], n=0)
