"""``python train.py`` and ``eval.py`` check the settings' values before Lightning is imported
(``shiftprobe.app.preflight``), and ``import shiftprobe`` imports the API's modules only when they are used."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from shiftprobe.app.preflight import RANK_VARIABLES, check_settings_first, launch_rank

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


#: the one line of a bad value (None: a good setting, no output), checked by train.py before Lightning loads
FIRST = {
    "optimizer.lr=0": "error: optimizer.lr=0 is not allowed: use a positive number, e.g. optimizer.lr=1e-3.",
    # issue 18: these were refused only by the callback, after Lightning had loaded, in Hydra's block
    "callbacks.shift_probe.max_images=1": "error: callbacks.shift_probe.max_images=1 is not allowed: use an integer "
                                          ">= 2 (or null for all the test images).",
    # the probe points, against the network built from cfg.model (a traceback at test end before)
    "callbacks.shift_probe.layers=[conv9]": "error: callbacks.shift_probe.layers=['conv9'] is not allowed: layer "
    "'conv9' is not a module of LabCNN; use names from model.named_modules(), e.g. ['conv1', 'conv2', 'pool1', "
    "'pool2', 'fc1', 'fc2'], an alias ['logits'], or 'output'.",
    # every value the command-line section of the issue named: one line here, not a traceback after the imports
    "seed=-1": "error: seed=-1 is not allowed: use an integer from 0 to 4294967295, e.g. seed=0.",
    "callbacks.shift_probe.max_images=0": "error: callbacks.shift_probe.max_images=0 is not allowed: use an integer "
                                          ">= 2 (or null for all the test images).",
    "callbacks.shift_probe.batch_size=0": "error: callbacks.shift_probe.batch_size=0 is not allowed: use an integer "
                                          ">= 1, e.g. callbacks.shift_probe.batch_size=64.",
    "callbacks.shift_probe.untrained_inits=0": "error: callbacks.shift_probe.untrained_inits=0 is not allowed: use an "
                                               "integer >= 1 (default 1).",
    "callbacks.shift_probe.lie_derivative_images=0": "error: callbacks.shift_probe.lie_derivative_images=0 is not "
    "allowed: use an integer >= 2, e.g. callbacks.shift_probe.lie_derivative_images=500.",
    "+trainer.accumulate_grad_batches=0": "error: trainer.accumulate_grad_batches=0 is not allowed: use an integer >= 1.",
    "trainer.max_epochs=0": "error: trainer.max_epochs=0 is not allowed: it trains nothing, so the network measured "
    "as trained would be its initial weights; use at least 1, or measure the untrained network with "
    "experiment=untrained (train=false).",
    "callbacks.shift_probe.layers=[]": "error: callbacks.shift_probe.layers=[] measures nothing: name at least one "
    "module, e.g. callbacks.shift_probe.layers=[conv2,fc1], or null for the model's default layers "
    "(callbacks.shift_probe.layers=null).",
    # the model's arguments: the schema's rules, then the network's own check (ArgumentError) named as the key
    "model.pool=bogus": "error: model.pool='bogus' is not allowed: use one of ['max', 'blur', 'aps'].",
    "model=resnet model.width=0": "error: model.width=0 is not allowed: use an integer >= 1, e.g. model.width=16.",
    "model=gap model.in_channels=0": "error: model.in_channels=0 is not allowed: use 1, the channels of the data "
                                     "(data.channels).",
    "model=allconv +model.image_size=8": "error: model.image_size=8 is not allowed: use an integer >= 16",
    "model=torchvision model.name=resnt18": "error: model.name='resnt18' is not a torchvision classification model; "
    "close matches: resnet18, resnet152, resnet101, resnet50, resnet34 (all: torchvision.models.list_models(module="
    "torchvision.models))",
    "model=torchvision model.name=squeezenet1_1 model.padding=circular": "error: model.padding='circular' is not "
    "offered for name='squeezenet1_1': the variants are offered for torchvision's ResNets and VGGs (resnet*, "
    "resnext*, wide_resnet*, vgg*) and the built-in CNNs; leave pool and padding at their defaults (max, zeros)",
    "model=timm model.pool=blur": "error: model.pool='blur' is not offered for timm models: the variants are offered "
    "for torchvision's ResNets and VGGs (resnet*, resnext*, wide_resnet*, vgg*) and the built-in CNNs; leave "
    "pool and padding at their defaults (max, zeros)",
    "seed=0": None,
    "model=torchvision model.name=shufflenet_v2_x0_5": None,
}


def test_a_bad_value_is_one_line_before_lightning_is_imported(tmp_path):
    """One interpreter runs the preflight on each setting: exit status 1 and the one line for a bad one,
    nothing for a good one, and neither Lightning nor torchmetrics imported."""
    code = f"""
import contextlib, io, json, sys
from hydra import compose, initialize_config_dir
from shiftprobe.app.preflight import check_settings_first
out = {{}}
for override in {list(FIRST)!r}:
    with initialize_config_dir(config_dir={str(ROOT / "conf")!r}, version_base="1.3"):
        cfg = compose("train", overrides=[*override.split(), "paths.output_dir={tmp_path}", "data.root={tmp_path}"])
    err, code = io.StringIO(), None
    with contextlib.redirect_stderr(err):
        try:
            check_settings_first(cfg)
        except SystemExit as stop:
            code = stop.code
    out[override] = [code, err.getvalue()]
print(json.dumps([out, "lightning" in sys.modules, "torchmetrics" in sys.modules]))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out, lightning, torchmetrics = json.loads(done.stdout)
    assert not lightning and not torchmetrics
    for override, message in FIRST.items():
        assert out[override] == ([None, ""] if message is None else [1, message + "\n"]), override


def test_eval_py_checks_the_values_but_not_the_layers_of_the_command_lines_model(tmp_path, capsys):
    """eval.py builds the model the checkpoint records: its layers are checked by the run, not here."""
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"")
    overrides = [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}", "callbacks.shift_probe.layers=[gap]"]
    check_settings_first(compose_config("eval", [*overrides, f"ckpt_path={ckpt}"], tmp_path), require_ckpt=True)
    with pytest.raises(SystemExit) as stop:
        check_settings_first(compose_config("eval", overrides, tmp_path), require_ckpt=True)
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith("error: ckpt_path is required: python eval.py ckpt_path=")


def test_the_api_is_imported_on_first_use(tmp_path):
    code = """
import sys
import shiftprobe
print("lightning" in sys.modules, "torchmetrics" in sys.modules, "shiftprobe.probe.engine" in sys.modules)
from shiftprobe import measure, Translation
print(measure.__module__, Translation.__module__, "measure" in dir(shiftprobe))
"""
    done = _python(code, tmp_path)
    assert done.stdout.split("\n")[:2] == [
        "False False False",
        "shiftprobe.probe.measure shiftprobe.probe.translation True",
    ], done.stderr


def test_an_unknown_name_is_an_attribute_error():
    import shiftprobe

    with pytest.raises(AttributeError, match="no attribute 'mesure'"):
        shiftprobe.mesure  # noqa: B018


@pytest.mark.parametrize("variable", RANK_VARIABLES)
def test_launch_rank_reads_the_launchers_variable(monkeypatch, variable):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv(variable, "3")
    assert launch_rank() == 3


def test_every_name_in_all_resolves():
    import shiftprobe
    import shiftprobe.probe

    for package in (shiftprobe, shiftprobe.probe):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
        assert set(package.__all__) - {"__version__"} == set(package._EXPORTS), package.__name__
