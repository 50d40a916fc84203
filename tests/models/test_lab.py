"""Shapes of every probe point and the lab's forward contract, for the lab net and its variants."""

import pytest
import torch

from shiftprobe.models.lab import LabCNN


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(3, 1, 28, 28)


def test_lab_probe_shapes(x):
    p = LabCNN().probe(x)
    assert p["conv1"].shape == (3, 10, 24, 24)
    assert p["conv2"].shape == (3, 20, 8, 8)
    assert p["fc1"].shape == (3, 50)
    assert p["logits"].shape == (3, 10)


def test_forward_returns_log_probs_conv2_fc1(x):
    log_probs, conv2, fc1 = LabCNN()(x)
    assert log_probs.shape == (3, 10) and conv2.shape == (3, 20, 8, 8) and fc1.shape == (3, 50)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))


def test_blurpool_keeps_fc1_inputs(x):
    net = LabCNN(pool="blur")
    assert net.fc1.in_features == 320
    p = net.probe(x)
    assert p["conv1"].shape == (3, 10, 24, 24) and p["conv2"].shape == (3, 20, 8, 8)
    assert p["logits"].shape == (3, 10)


def test_circular_keeps_map_sizes(x):
    net = LabCNN(padding="circular")
    p = net.probe(x)
    assert p["conv1"].shape == (3, 10, 28, 28)
    assert p["conv2"].shape == (3, 20, 14, 14)
    assert net.fc1.in_features == 20 * 7 * 7
    assert p["fc1"].shape == (3, 50) and p["logits"].shape == (3, 10)


def test_normalize_is_the_first_step(x):
    torch.manual_seed(1)
    plain = LabCNN()
    normed = LabCNN(normalize=True)
    normed.load_state_dict(plain.state_dict())
    torch.testing.assert_close(normed.probe(x)["conv1"], plain.probe((x - 0.1307) / 0.3081)["conv1"])
