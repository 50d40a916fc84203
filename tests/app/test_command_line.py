"""The command line before Hydra runs (issue 18, item 5): the README's set-up command on a fresh machine and
beside ``../shared/data``; Hydra's composition errors as one ``error:`` line naming the closest key or
the options; every argument of Lightning's ``Trainer`` without ``+``."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import hydra
import pytest
import torchvision
from conftest import CONF_DIR, N_TEST, ROOT, compose_config, write_synthetic_mnist

from shiftprobe.app.command_line import command_line_problem, prepare_environment
from shiftprobe.app.config_checks import check_known_keys, validate_config
from shiftprobe.errors import ShiftProbeError


# -- the README's set-up command: MNIST_ROOT empty (fresh machine) or ../shared/data (CI, offline) -----
def readme_mnist_root_expression() -> str:
    """The shell expression the README's first command gives MNIST_ROOT (``$(...)``)."""
    first_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    command = first_block.strip().splitlines()[0]
    assert command.endswith("python train.py"), command
    found = re.search(r"MNIST_ROOT=(\$\(.*\)) python train.py$", command)
    assert found, command
    return found.group(1)


@pytest.mark.skipif(shutil.which("realpath") is None, reason="needs the realpath command")
@pytest.mark.parametrize("layout", ["fresh", "shared_without_data", "shared_data"])
def test_readme_command_uses_shared_data_only_where_it_exists(tmp_path, layout):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    if layout != "fresh":
        (tmp_path / "shared").mkdir()
    if layout == "shared_data":
        (tmp_path / "shared" / "data").mkdir()
    expression = readme_mnist_root_expression()
    done = subprocess.run(["bash", "-c", f'printf "%s" {expression}'], cwd=checkout, capture_output=True,
                          text=True, timeout=30)
    expected = str((tmp_path / "shared" / "data").resolve()) if layout == "shared_data" else ""
    assert done.stdout == expected and done.stderr == "", done.stderr


def stub_download(monkeypatch, calls: list) -> None:
    """torchvision's MNIST download replaced: it writes the synthetic files where torchvision would."""

    def download(self):
        calls.append(Path(self.root))
        write_synthetic_mnist(Path(self.root))

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", download)


def test_empty_mnist_root_downloads_into_data(tmp_path, monkeypatch):
    """A fresh machine: ``MNIST_ROOT=`` (the README's expression where ../shared/data does not exist)
    counts as not set, and MNIST is downloaded into ``data/`` of the project (download stubbed)."""
    monkeypatch.setenv("MNIST_ROOT", "")
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    prepare_environment(tmp_path)  # what train.py does, with tmp_path as the project
    assert "MNIST_ROOT" not in os.environ and os.environ["PROJECT_ROOT"] == str(tmp_path)
    cfg = compose_config("train", [f"paths.output_dir={tmp_path / 'run'}"], tmp_path / "run")
    assert cfg.data.root == f"{tmp_path}/data" and cfg.data.download is True
    validate_config(cfg, known_keys=False)
    calls: list = []
    stub_download(monkeypatch, calls)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("test")
    assert calls and all(path == tmp_path / "data" for path in calls)
    assert (tmp_path / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert dm.test_images.shape == (N_TEST, 28, 28)


def test_shared_data_is_read_offline(mnist_root, tmp_path, monkeypatch):
    """CI: ``MNIST_ROOT`` names ../shared/data; nothing is downloaded (the network is down)."""
    monkeypatch.setenv("MNIST_ROOT", str(mnist_root))
    prepare_environment(tmp_path)
    cfg = compose_config("train", [f"paths.output_dir={tmp_path / 'run'}"], tmp_path / "run")
    assert cfg.data.root == str(mnist_root)

    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("test")
    assert dm.test_images.shape == (N_TEST, 28, 28)


def test_train_py_reads_an_empty_mnist_root_as_not_set(tmp_path):
    env = {**os.environ, "MNIST_ROOT": "", "PROJECT_ROOT": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--cfg", "job", "--package", "data", "--resolve"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"root: {ROOT}/data" in done.stdout.splitlines()


# -- Hydra's composition errors, one line -----------------------------------------------------------
PROBLEMS = [
    (["callbacks.shift_probe.max_imags=10"],
     "callbacks.shift_probe.max_imags is not a setting of callbacks.shift_probe: nothing would read it. "
     "Did you mean callbacks.shift_probe.max_images? Allowed keys: batch_size, "),
    (["sead=5"], "sead is not a top-level setting: nothing would read it. Did you mean seed? Allowed keys: "),
    (["-m", "seed=0,1", "sead=5"], "sead is not a top-level setting"),
    (["data.batch_sise=3"], "data.batch_sise is not a setting of data: nothing would read it. Did you mean data.batch_size?"),
    (["callbacks=[model_checkpoint]", "callbacks.shift_probe.max_images=5"],
     "callbacks.shift_probe.max_images: callbacks.shift_probe is not a setting of callbacks"),
    (["callbacks=none", "callbacks.shift_probe.max_imags=10"],
     "callbacks.shift_probe.max_imags: callbacks.shift_probe is not a setting of callbacks: nothing would read it. "
     "Remove callbacks.shift_probe.max_imags=... from the command line. callbacks has no keys here."),
    (["model=lab2"], "model=lab2 is not an option of model: use one of allconv, blurpool, circular, "),
    (["experiment=augmentd"], "experiment=augmentd is not an option of experiment: use one of augmented, "),
    (["debug=fd"], "debug=fd is not an option of debug: use one of "),
    (["transform=[translation,rot45]"], "transform=rot45 is not an option of transform: use one of "),
    (["seed=[1"], "the override 'seed=[1' cannot be read: "),
]


@pytest.mark.parametrize("argv,start", PROBLEMS)
def test_a_composition_error_is_one_line(argv, start):
    problem = command_line_problem(CONF_DIR, "train", argv)
    assert problem is not None and problem.startswith(start), problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["trainer.fast_dev_run=true", "trainer.val_check_interval=0.5"],
        ["-m", "seed=0,1,2", "optimizer=adam,sgd", "experiment=lab,augmented"],
        ["transform=[translation,rotation]", "transform.rotation.max_angle=90"],
        ["+transform=flip", "callbacks=[model_checkpoint,shift_probe]", "debug=fdr", "~experiment"],
        ["--help"],
        ["--cfg", "job", "model=gap"],
    ],
)
def test_a_good_command_line_passes(argv):
    assert command_line_problem(CONF_DIR, "train", argv) is None


def test_eval_command_line_is_checked_with_its_own_config():
    assert command_line_problem(CONF_DIR, "eval", ["ckpt_path=x.ckpt", "trainer.fast_dev_run=true"]) is None
    problem = command_line_problem(CONF_DIR, "eval", ["ckpt_path=x.ckpt", "optimizer.lr=1"])
    assert problem.startswith("optimizer.lr: optimizer is not a top-level setting: nothing would read it. Remove "
                              "optimizer.lr=... from the command line. Allowed keys: callbacks, ckpt_path, ")


def test_an_option_a_chosen_config_asks_for_is_hydras_message_on_one_line():
    """``hparams_search=optuna`` without the Optuna sweeper plugin: the missing option is not the user's."""
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        pytest.skip("the Optuna sweeper plugin is installed")
    problem = command_line_problem(CONF_DIR, "train", ["hparams_search=optuna"])
    assert "Could not find 'hydra/sweeper/optuna'" in problem and "\n" not in problem
    problem = command_line_problem(CONF_DIR, "train", ["hydra/launcher=jobib"])
    assert problem.startswith("hydra/launcher=jobib is not an option of hydra/launcher: use one of basic, ")
    assert problem.endswith("(Hydra's plugins add options: pip install -e \".[sweep]\").")


def test_what_is_no_composition_error_is_left_to_hydra():
    """``experiment=null`` makes Hydra raise a ValueError (not a composition error): Hydra reports it."""
    assert command_line_problem(CONF_DIR, "train", ["experiment=null"]) is None


def test_train_py_answers_in_one_error_line(tmp_path):
    """A key Hydra cannot compose, end to end (``+sead=5`` and bad values: ``test_config_checks``, the
    preflight's own subprocess test in ``test_preflight``)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "callbacks.shift_probe.max_imags=10",
         f"hydra.run.dir={tmp_path / 'run'}", f"data.root={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )
    assert done.returncode == 1
    start = "error: callbacks.shift_probe.max_imags is not a setting"
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(start), done.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# -- every argument of Lightning's Trainer, without "+"; a typo names the closest -------------------
def trainer_arguments() -> list[str]:
    from lightning.pytorch import Trainer

    return [p.name for p in inspect.signature(Trainer).parameters.values() if p.name not in ("callbacks", "logger")]


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")))
def test_every_trainer_argument_composes_without_plus(tmp_path, option):
    names = trainer_arguments()
    cfg = compose_config("train", [f"trainer={option}", *[f"trainer.{name}=null" for name in names]], tmp_path)
    assert all(cfg.trainer[name] is None for name in names)


def test_trainer_arguments_reach_the_trainer(tmp_path):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}",
                                   "trainer.max_steps=7", "trainer.val_check_interval=0.5"], tmp_path)
    validate_config(cfg)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == 7 and trainer.val_check_interval == 0.5


@pytest.mark.parametrize(
    "override,start",
    [
        ("trainer.max_epoch=3", "trainer.max_epoch is not a setting of trainer: nothing would read it. "
                                "Did you mean trainer.max_epochs? Allowed keys: accelerator, "),
        ("trainer.fast_dev=true", "trainer.fast_dev is not a setting of trainer: nothing would read it. "
                                  "Did you mean trainer.fast_dev_run?"),
        ("trainer.logger=false", "trainer.logger is not a setting of trainer"),  # the logger group sets it
    ],
)
def test_a_trainer_typo_names_the_closest_argument(tmp_path, override, start):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}", override], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        check_known_keys(cfg)
    assert str(err.value).startswith(start) and "\n" not in str(err.value)
