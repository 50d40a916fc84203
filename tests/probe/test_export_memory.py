"""``export_pairs`` estimates its memory before any work and refuses a count that does not fit, naming
the largest that does (``callbacks.shift_probe.export_pairs=1000000`` grew to 22.8 GB and was killed by
the out-of-memory killer). The available memory is set by the test, so nothing depends on the machine.

The reference size of a pair is written out from the lab CNN's architecture (conv1 10x24x24, conv2
20x8x8, fc1 50, logits 10 for a 1x28x28 image), not computed by the code under test.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, test_overrides

import shiftprobe
from shiftprobe.app.train import run, train
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.callbacks import ShiftProbeCallback
from shiftprobe.probe import export

PIXELS = 28 * 28
#: x and Tx (float32), shift (2 x int64), label and index (int64)
PAIR_INPUTS = 4 * 2 * PIXELS + 8 * 4
#: floats of one image's activations at the lab CNN's layers
LAB_FEATURES = {"conv1": 10 * 24 * 24, "conv2": 20 * 8 * 8, "fc1": 50, "logits": 10}


def pair_size(layers, networks: int) -> int:
    return PAIR_INPUTS + networks * 2 * 4 * sum(LAB_FEATURES[name] for name in layers)


def images(n=12):
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_pair_bytes_is_the_arrays_size():
    net = shiftprobe.LabCNN()
    assert export.pair_bytes(net, ["conv2", "fc1"], (1, 28, 28), networks=2) == pair_size(["conv2", "fc1"], 2)
    assert export.pair_bytes(net, None, (1, 28, 28), networks=1) == pair_size(LAB_FEATURES, 1)
    # and it is what an export holds, to the byte
    pairs = shiftprobe.export_pairs(net, images(), None, ["conv2", "fc1"], n=3, untrained=shiftprobe.LabCNN())
    assert sum(t.numel() * t.element_size() for t in pairs.values()) == 3 * pair_size(["conv2", "fc1"], 2)


def test_too_many_pairs_are_refused_with_the_largest_count_that_fits(monkeypatch):
    available = 1_000_000
    monkeypatch.setattr(export, "available_memory", lambda: available)
    per_pair = pair_size(["conv2", "fc1"], 2)
    largest = int(0.5 * available // per_pair)  # half the available memory: 18 pairs of 27,584 bytes
    net, control = shiftprobe.LabCNN(), shiftprobe.LabCNN()
    with pytest.raises(ValueError) as info:
        shiftprobe.export_pairs(net, images(), None, ["conv2", "fc1"], n=largest + 1, untrained=control)
    message = str(info.value)
    assert "\n" not in message and f"n={largest + 1} needs about" in message and f"use n={largest} or fewer" in message
    pairs = shiftprobe.export_pairs(net, images(), None, ["conv2", "fc1"], n=largest, untrained=control)
    assert len(pairs["x"]) == largest


def test_not_even_one_pair(monkeypatch):
    monkeypatch.setattr(export, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match="not even one pair fits"):
        export.check_export_memory(1, pair_size(["fc1"], 1))


def test_unknown_memory_is_not_checked(monkeypatch):
    monkeypatch.setattr(export, "available_memory", lambda: None)
    export.check_export_memory(10**9, 10**9)  # nothing to compare with: no refusal


def test_available_memory_reads_meminfo():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo (not Linux)")
    line = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable:"))
    # both reads are of a moving value: they agree to within what the machine did in between (1 GB)
    assert abs(export.available_memory() - int(line.split()[1]) * 1024) < 1e9


def test_the_callback_refuses_before_training(monkeypatch):
    monkeypatch.setattr(export, "available_memory", lambda: 10**9)
    callback = ShiftProbeCallback(export_pairs=1_000_000)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(test_images=None, train_images=images()))
    with pytest.raises(ShiftProbeError) as info:
        callback.setup(trainer, SimpleNamespace(net=shiftprobe.LabCNN()), "fit")
    largest = int(0.5 * 10**9 // pair_size(LAB_FEATURES, 2))  # the default layers, trained and untrained
    assert str(info.value).startswith("callbacks.shift_probe.export_pairs=1000000 needs about 119.90 GB")
    assert f"use callbacks.shift_probe.export_pairs={largest} or fewer" in str(info.value)
    ShiftProbeCallback(export_pairs=largest).setup(trainer, SimpleNamespace(net=shiftprobe.LabCNN()), "fit")


def test_train_py_refuses_before_the_first_step(mnist_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "available_memory", lambda: 10**9)
    overrides = [o for o in test_overrides(mnist_root, tmp_path) if not o.startswith("callbacks=")]
    cfg = compose_config("train", [*overrides, "callbacks=[model_checkpoint,shift_probe]",
                                   "callbacks.shift_probe.export_pairs=1000000"], tmp_path)
    with pytest.raises(SystemExit) as stop:
        run(cfg, train)
    assert stop.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: callbacks.shift_probe.export_pairs=1000000 needs about")
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))  # refused before training
