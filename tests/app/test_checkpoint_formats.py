"""``eval.py`` and ``shiftprobe.load_network`` take the checkpoints people have: a train.py ``.ckpt``, a
plain ``state_dict`` (with or without the ``net.`` prefix) and a whole saved module; anything else ends
in one ``error:`` line. results.json / results.md say where the untrained control's weights come from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import N_TEST, ROOT, compose_config, synthetic_digits, test_overrides

import shiftprobe
from shiftprobe.app.evaluate import evaluate
from shiftprobe.app.train import train
from shiftprobe.checkpoints import read_checkpoint
from shiftprobe.errors import ShiftProbeError
from shiftprobe.models import GapCNN, LabCNN
from shiftprobe.probe.engine import subset_indices

#: a small measurement: 5x5 shifts on 16 images, no figures
SMALL = [
    "callbacks=[shift_probe]",
    "shift=small",
    "callbacks.shift_probe.max_images=16",
    "callbacks.shift_probe.figures=false",
    "callbacks.shift_probe.progress=false",
]
FRESH_SEED_0 = "a fresh network initialised with seed=0 (the checkpoint records no initial weights)"


def lab_net(seed: int) -> LabCNN:
    torch.manual_seed(seed)
    return LabCNN()


def accuracy(net, indices=None) -> float:
    """The net's accuracy on the synthetic test set (or on the images at ``indices``), computed here."""
    images, labels = synthetic_digits(N_TEST, 2)
    x, y = torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels).long()
    if indices is not None:
        x, y = x[indices], y[indices]
    with torch.no_grad():
        return float((net(x)[0].argmax(1) == y).float().mean())


def eval_run(mnist_root, out: Path, ckpt: Path, *extra: str) -> tuple[dict, dict, str]:
    base = [a for a in test_overrides(mnist_root, out) if not a.startswith("callbacks=")]
    cfg = compose_config("eval", [*base, *SMALL, f"ckpt_path={ckpt}", *extra], out)
    metrics = evaluate(cfg)
    return metrics, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.mark.parametrize(
    "fmt", ["state_dict", "state_dict_net_prefix", "training_loop_dict", "whole_module"]
)
def test_eval_measures_a_lab_style_checkpoint(mnist_root, tmp_path, fmt):
    net = lab_net(seed=3)
    state = net.state_dict()
    saved = {
        "state_dict": state,
        "state_dict_net_prefix": {f"net.{k}": v for k, v in state.items()},
        "training_loop_dict": {"epoch": 5, "model_state_dict": state, "optimizer_state_dict": {}},
        "whole_module": net,
    }[fmt]
    ckpt = tmp_path / "lab_net.pt"
    torch.save(saved, ckpt)
    trust = ["trust_checkpoint=true"] if fmt == "whole_module" else []  # unpickled only when trusted
    metrics, res, md = eval_run(mnist_root, tmp_path / "eval", ckpt, *trust)
    assert metrics["test/acc"] == pytest.approx(accuracy(net), abs=1e-6)  # the file's weights were tested
    subset = subset_indices(N_TEST, 16, 0)
    sec = res["families"]["translation"]
    assert sec["accuracy"] == pytest.approx(accuracy(net, subset), abs=1e-6)  # ... and measured
    # the untrained control: a fresh seed-0 network, and both files say so
    assert res["untrained_origin"] == FRESH_SEED_0
    assert sec["untrained"]["accuracy"] == pytest.approx(accuracy(lab_net(seed=0), subset), abs=1e-6)
    assert f"**Untrained control's weights**: {FRESH_SEED_0}" in md


def test_initial_state_gives_the_untrained_control(mnist_root, tmp_path):
    torch.save(lab_net(seed=3).state_dict(), tmp_path / "lab_net.pt")
    init = lab_net(seed=11)
    torch.save(init.state_dict(), tmp_path / "lab_init.pt")
    _, res, md = eval_run(
        mnist_root, tmp_path / "eval", tmp_path / "lab_net.pt",
        f"callbacks.shift_probe.initial_state={tmp_path / 'lab_init.pt'}",
    )
    origin = f"the file given by callbacks.shift_probe.initial_state ({tmp_path / 'lab_init.pt'})"
    assert res["untrained_origin"] == origin and origin in md
    assert res["families"]["translation"]["untrained"]["accuracy"] == pytest.approx(accuracy(init, subset_indices(N_TEST, 16, 0)), abs=1e-6)


def test_train_py_checkpoint_uses_its_recorded_initial_weights(mnist_root, tmp_path):
    run = tmp_path / "run"
    base = [a for a in test_overrides(mnist_root, run) if not a.startswith("callbacks=")]
    train(compose_config("train", [*base, "callbacks=[model_checkpoint]", "+trainer.limit_train_batches=2",
                                   "test=false"], run))
    _, res, md = eval_run(mnist_root, tmp_path / "eval", run / "checkpoints" / "last.ckpt")
    assert res["untrained_origin"] == "initial weights saved in the checkpoint"
    assert "initial weights saved in the checkpoint" in md
    # the API reads the same file: trained weights and recorded initial weights
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    net = shiftprobe.load_network(run / "checkpoints" / "last.ckpt")
    assert torch.equal(net.fc1.weight, ckpt["state_dict"]["net.fc1.weight"])
    net0 = shiftprobe.load_network(run / "checkpoints" / "last.ckpt", initial=True)
    assert torch.equal(net0.fc1.weight, ckpt["initial_net_state"]["fc1.weight"])


def test_a_state_dict_of_another_model_names_what_does_not_fit(mnist_root, tmp_path):
    torch.save(GapCNN().state_dict(), tmp_path / "gap_net.pt")
    with pytest.raises(ShiftProbeError, match=r"does not fit this model: .*fc1\.weight"):
        eval_run(mnist_root, tmp_path / "eval", tmp_path / "gap_net.pt")


def test_load_network_reads_every_format(tmp_path):
    net = lab_net(seed=4)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, tmp_path / "prefixed.pt")
    torch.save(net, tmp_path / "whole.pt")
    for name in ("plain.pt", "prefixed.pt", "whole.pt"):
        loaded = shiftprobe.load_network(tmp_path / name, trusted=name == "whole.pt")
        assert isinstance(loaded, LabCNN)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True))
    with pytest.raises(ShiftProbeError, match="does not fit GapCNN"):
        shiftprobe.load_network(tmp_path / "plain.pt", model=GapCNN())
    with pytest.raises(ShiftProbeError, match="records no initial weights"):
        shiftprobe.load_network(tmp_path / "plain.pt", initial=True)


@pytest.mark.parametrize(
    "content, message",
    [
        (os.urandom(3000), "is not a PyTorch checkpoint"),
        (b"epoch,loss\n1,0.3\n", "is not a PyTorch checkpoint"),
        ({"epoch": 3, "lr": 0.1}, "holds a dict without network weights"),
        ([torch.zeros(3)], "holds a list, not network weights"),
    ],
    ids=["random_bytes", "text", "dict_without_weights", "list"],
)
def test_files_that_hold_no_weights(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ShiftProbeError, match=message):
        read_checkpoint(path)


def test_whole_module_of_a_class_defined_in_a_script(tmp_path):
    """The lab's ``class Net`` lives in the student's script: it cannot be unpickled elsewhere."""
    script = tmp_path / "lab.py"
    script.write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(2, 2)\ntorch.save(Net(), 'net.pt')\n"
    )
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=120)
    with pytest.raises(ShiftProbeError, match=r"whole saved module whose class cannot be imported here.*state_dict"):
        read_checkpoint(tmp_path / "net.pt", trusted=True)


def test_eval_py_on_a_garbage_file_prints_one_error_line(tmp_path):
    garbage = tmp_path / "lab_net.pt"
    garbage.write_bytes(os.urandom(4000))
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={garbage}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path="), proc.stderr
    assert "is not a PyTorch checkpoint" in lines[0] and "state_dict" in lines[0]
