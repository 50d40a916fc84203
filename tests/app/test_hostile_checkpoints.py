"""A checkpoint file runs no code (issue 18): every entry point is given crafted files whose payload would
create a marker file, a pickled object (``__reduce__``) and a Hydra config hidden in the stored settings.
The marker is never created, and the refusal is one line naming the opt-in. With the opt-in
(``trusted=True``, ``trust_checkpoint=true``) a whole saved module loads."""

import hydra
import pytest
import torch
from conftest import compose_config, test_overrides
from hostile_files import CONFIG_PLACES, config_payload, lightning_checkpoint, pickle_payload

import shiftprobe
from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.evaluate import apply_run_config, evaluate, saved_run_config
from shiftprobe.app.train import build_module, build_trainer, resolved_config, train
from shiftprobe.errors import ShiftProbeError
from shiftprobe.models import LabCNN

SMALL = ["callbacks=[shift_probe]", "shift=small", "callbacks.shift_probe.max_images=8",
         "callbacks.shift_probe.untrained=false", "callbacks.shift_probe.figures=false",
         "callbacks.shift_probe.progress=false"]


def one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def eval_cfg(mnist_root, out, ckpt, *extra):
    base = [a for a in test_overrides(mnist_root, out) if not a.startswith("callbacks=")]
    return compose_config("eval", [*base, *SMALL, f"ckpt_path={ckpt}", *extra], out)


def train_cfg(mnist_root, out, *extra):
    return compose_config("train", [*test_overrides(mnist_root, out), *extra], out)


# -- shiftprobe.load_network ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lightning", "state_dict"])
def test_load_network_unpickles_nothing_unless_trusted(tmp_path, kind):
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "evil.pt", marker, kind)
    with pytest.raises(ShiftProbeError) as err:
        shiftprobe.load_network(evil)
    one_line(err, "pickled Python objects", "trusted=True")
    with pytest.raises(ShiftProbeError):
        shiftprobe.load_network(evil, model=LabCNN(), initial=kind == "lightning")
    assert not marker.exists()


@pytest.mark.parametrize("place", CONFIG_PLACES)
def test_load_network_builds_nothing_a_stored_config_asks_for(tmp_path, place):
    marker = tmp_path / "marker"
    ckpt = config_payload(tmp_path / "evil.ckpt", marker, place)
    if place.startswith("model"):
        with pytest.raises(ShiftProbeError) as err:
            shiftprobe.load_network(ckpt)
        one_line(err, f"path={str(ckpt)!r} records model", "nothing is built")
    else:  # settings load_network does not read: the recorded lab CNN loads
        assert isinstance(shiftprobe.load_network(ckpt), LabCNN)
    assert isinstance(shiftprobe.load_network(ckpt, model=LabCNN()), LabCNN)  # your own network: no config read
    assert not marker.exists()


def test_load_network_trusted_loads_a_whole_module(tmp_path):
    net = LabCNN()
    torch.save(net, tmp_path / "whole.pt")
    loaded = shiftprobe.load_network(tmp_path / "whole.pt", trusted=True)
    assert type(loaded) is LabCNN and torch.equal(loaded.fc2.weight, net.fc2.weight)


# -- eval.py ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lightning", "state_dict"])
def test_eval_unpickles_nothing_unless_trusted(mnist_root, tmp_path, kind):
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "evil.ckpt", marker, kind)
    with pytest.raises(ShiftProbeError) as err:
        evaluate(eval_cfg(mnist_root, tmp_path / "eval", evil))
    one_line(err, f"ckpt_path={str(evil)!r} holds pickled Python objects", "trust_checkpoint=true")
    assert not marker.exists()


@pytest.mark.parametrize("place", CONFIG_PLACES)
def test_eval_builds_nothing_a_stored_config_asks_for(mnist_root, tmp_path, place):
    marker = tmp_path / "marker"
    ckpt = config_payload(tmp_path / "evil.ckpt", marker, place)
    with pytest.raises(ShiftProbeError) as err:
        evaluate(eval_cfg(mnist_root, tmp_path / "eval", ckpt))
    one_line(err, f"ckpt_path={str(ckpt)!r} records {place}", "nothing is built")
    assert not marker.exists()


def test_a_run_folders_hydra_config_is_checked_and_resolved(mnist_root, tmp_path):
    """A checkpoint without stored settings: eval.py reads <run>/.hydra/config.yaml, resolved there, checked."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / ".hydra").mkdir()
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    torch.save(lightning_checkpoint(), ckpt)
    run_yaml = tmp_path / "run" / ".hydra" / "config.yaml"
    run_yaml.write_text(
        "seed: 4\ndata: {normalize: true, root: '${oc.env:NO_SUCH_VARIABLE_HERE}'}\n"
        "model: {_target_: shiftprobe.models.LabCNN, pool: blur, normalize: '${data.normalize}'}\n"
    )
    saved = saved_run_config(ckpt)
    assert saved["model"]["normalize"] is True and saved["data"] == {"normalize": True}  # data.root is not taken
    cfg = eval_cfg(mnist_root, tmp_path / "eval", ckpt)
    apply_run_config(cfg, saved)
    assert (cfg.seed, cfg.model.pool, cfg.model.normalize) == (4, "blur", True)
    marker = tmp_path / "marker"
    run_yaml.write_text(f"model: {{_target_: shiftprobe.models.LabCNN, pool: \"${{oc.decode:'{{_target_: "
                        f"builtins.open, file: {marker}, mode: w}}'}}\"}}\n")
    with pytest.raises(ShiftProbeError) as err:
        apply_run_config(cfg, saved_run_config(ckpt))
    one_line(err, "records model.pool._target_='builtins.open'")
    assert not marker.exists()


# -- callbacks.shift_probe.initial_state --------------------------------------------------------------
def test_initial_state_unpickles_nothing_unless_trusted(mnist_root, tmp_path):
    torch.save(LabCNN().state_dict(), tmp_path / "net.pt")
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "init.pt", marker, "state_dict")
    with pytest.raises(ShiftProbeError) as err:
        evaluate(eval_cfg(mnist_root, tmp_path / "eval", tmp_path / "net.pt",
                          f"callbacks.shift_probe.initial_state={evil}"))
    one_line(err, "callbacks.shift_probe.initial_state=", "trust_checkpoint=true")
    assert not marker.exists()
    ckpt = config_payload(tmp_path / "init.ckpt", marker, "model")  # weights only are read from it
    evaluate(eval_cfg(mnist_root, tmp_path / "eval2", tmp_path / "net.pt",
                      f"callbacks.shift_probe.initial_state={ckpt}"))
    assert not marker.exists()


def test_trust_checkpoint_lets_a_whole_module_be_the_checkpoint_and_the_initial_state(mnist_root, tmp_path):
    torch.manual_seed(1)
    torch.save(LabCNN(), tmp_path / "net.pt")
    torch.save(LabCNN(), tmp_path / "init.pt")
    cfg = eval_cfg(mnist_root, tmp_path / "eval", tmp_path / "net.pt", "trust_checkpoint=true",
                   "callbacks.shift_probe.untrained=true", f"callbacks.shift_probe.initial_state={tmp_path / 'init.pt'}")
    assert cfg.callbacks.shift_probe.trust_initial_state is True
    assert "test/acc" in evaluate(cfg)
    origin = (tmp_path / "eval" / "results.json").read_text()
    assert f"initial_state ({tmp_path / 'init.pt'})" in origin


def test_trust_checkpoint_must_be_true_or_false(mnist_root, tmp_path):
    with pytest.raises(ShiftProbeError) as err:
        validate_config(train_cfg(mnist_root, tmp_path, "trust_checkpoint=yes"))
    one_line(err, "trust_checkpoint='yes' is not allowed: use true")


# -- train.py ckpt_path=, and Lightning's own load ---------------------------------------------------
@pytest.mark.parametrize("fit", [True, False], ids=["resume", "test"])
def test_train_with_a_hostile_ckpt_path_runs_nothing(mnist_root, tmp_path, monkeypatch, fit):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would unpickle
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ShiftProbeError) as err:
        train(train_cfg(mnist_root, tmp_path / "run", f"ckpt_path={evil}", f"train={str(fit).lower()}"))
    one_line(err, "holds pickled Python objects", "trust_checkpoint=true")
    for place in ("model", "model.pool"):  # refused as eval.py refuses them, never offered as a fix to add
        ckpt = config_payload(tmp_path / f"{place}.ckpt", marker, place)
        with pytest.raises(ShiftProbeError) as err:
            train(train_cfg(mnist_root, tmp_path / place, f"ckpt_path={ckpt}", f"train={str(fit).lower()}"))
        message = one_line(err, f"ckpt_path={str(ckpt)!r} records {place}", "nothing is built")
        assert "add model." not in message  # the payload is not offered as the settings to resume with
    ckpt = config_payload(tmp_path / "layers.ckpt", marker, "callbacks.shift_probe.layers")  # train.py reads no such setting
    train(train_cfg(mnist_root, tmp_path / "layers", f"ckpt_path={ckpt}", "train=false"))
    assert not marker.exists()


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_lightnings_own_load_reads_weights_only(mnist_root, tmp_path, monkeypatch, stage):
    """The trainer train.py and eval.py build loads ``ckpt_path`` with weights_only=True itself, even
    where torch's default would unpickle: the payload does not run if the checks before it are bypassed."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    evil = pickle_payload(tmp_path / "evil.ckpt", marker)
    cfg = train_cfg(mnist_root, tmp_path / "run", "callbacks=none")
    trainer = build_trainer(cfg, [], [])
    module, datamodule = build_module(cfg, resolved_config(cfg)), hydra.utils.instantiate(cfg.data)
    with pytest.raises(Exception, match="Weights only load failed"):
        getattr(trainer, stage)(module, datamodule=datamodule, ckpt_path=str(evil))
    assert not marker.exists()


# -- model.weights= (model=torchvision / timm) --------------------------------------------------------
def test_model_weights_unpickles_nothing_and_builds_nothing_from_a_stored_config(mnist_root, tmp_path):
    """``model.weights=`` is read through the same weights-only reader: a pickle payload is refused in one
    line naming the opt-in, and a ``.ckpt`` whose stored settings hold a config payload gives its weights
    only (the stored settings are not read)."""
    from hostile_files import Payload, instantiated_payload

    from shiftprobe.app.train import build_network
    from shiftprobe.models import torchvision_model

    marker = tmp_path / "marker"
    torch.manual_seed(0)
    weights = torchvision_model("shufflenet_v2_x0_5").state_dict()
    torch.save({**weights, "payload": Payload(marker)}, tmp_path / "evil.pt")
    ckpt = lightning_checkpoint({"model": instantiated_payload(marker)})
    ckpt["state_dict"] = {f"net.{k}": v for k, v in weights.items()}
    torch.save(ckpt, tmp_path / "evil.ckpt")

    def build(path):
        cfg = train_cfg(mnist_root, tmp_path / "run", "model=torchvision", "model.name=shufflenet_v2_x0_5",
                        f"model.weights={path}")
        validate_config(cfg)
        return build_network(cfg)

    with pytest.raises(ShiftProbeError) as err:
        build(tmp_path / "evil.pt")
    message = one_line(err, f"model.weights={str(tmp_path / 'evil.pt')!r} holds pickled Python objects",
                       "runs code stored in the file, so it is not loaded: save its weights instead, torch.save(model.state_dict(), path)")
    assert "trust_checkpoint" not in message  # trust_checkpoint=true does not reach model.weights: not offered
    net = build(tmp_path / "evil.ckpt")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert not marker.exists()
