"""Experiments, training-time augmentation, and sweeps (basic sweeper and joblib launcher) end to end."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
import yaml
from conftest import ROOT, compose_config, test_overrides
from test_ddp import run_cli

from shiftprobe.data import MNISTDataModule

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def test_experiments_exist():
    assert {"lab", "augmented", "blurpool", "circular", "untrained"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"experiment={name}"], tmp_path)
    assert cfg.task_name == name
    net = hydra.utils.instantiate(cfg.model)
    log_probs, conv2, fc1 = net(torch.rand(2, 1, 28, 28))
    assert log_probs.shape == (2, 10) and fc1.shape == (2, 50)
    expected = {
        "augmented": lambda: cfg.data.train_shift == 4 and net.pool == "max",
        "blurpool": lambda: net.pool == "blur" and net.fc1.in_features == 320,
        "circular": lambda: net.padding == "circular" and cfg.shift.mode == "roll" and conv2.shape[-1] == 14,
        "untrained": lambda: cfg.train is False,
        "lab": lambda: net.pool == "max" and cfg.data.train_shift == 0 and cfg.optimizer.lr == 1e-3,
    }
    assert expected.get(name, lambda: True)()


def _batch_after_transfer(dm: MNISTDataModule, training: bool, seed: int):
    class FakeTrainer:
        pass

    trainer = FakeTrainer()
    trainer.training = training
    dm.trainer = trainer
    torch.manual_seed(seed)
    images = dm.test_images[:64]
    return dm.on_after_batch_transfer((images, dm.test_labels[:64]), 0)[0]


def test_train_shift_augmentation_shifts_training_batches_only(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=100, train_shift=3)
    dm.setup("test")
    plain = dm.test_images[:64].unsqueeze(1).float() / 255
    shifted = _batch_after_transfer(dm, training=True, seed=0)
    again = _batch_after_transfer(dm, training=True, seed=0)
    other = _batch_after_transfer(dm, training=True, seed=1)
    assert torch.equal(shifted, again)  # seeded
    assert not torch.equal(shifted, other)
    changed = (shifted != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # (0, 0) is drawn for 1 in 49 images
    # every image is an integer translate (crop mode) of its original by at most 3 pixels
    from shiftprobe.shifts import shift_images

    for i in range(8):
        assert any(
            torch.equal(shifted[i], shift_images(plain[i], dy, dx)) for dy in range(-3, 4) for dx in range(-3, 4)
        )
    assert torch.equal(_batch_after_transfer(dm, training=False, seed=0), plain)  # val / test untouched
    dm0 = MNISTDataModule(root=str(mnist_root), download=False, val_size=100, train_shift=0)
    dm0.setup("test")
    assert torch.equal(_batch_after_transfer(dm0, training=True, seed=0), plain)


def _sweep_args(mnist_root: Path, sweep_dir: Path) -> list[str]:
    base = [
        a
        for a in test_overrides(mnist_root, sweep_dir)
        if not a.startswith(("paths.output_dir", "callbacks="))
    ]
    return [
        "-m",
        *base,
        "callbacks=[model_checkpoint,shift_probe]",
        "callbacks.shift_probe.max_images=40",
        "callbacks.shift_probe.figures=false",
        "callbacks.shift_probe.progress=false",
        "shift=small",
        "+trainer.limit_train_batches=3",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def _check_sweep(sweep_dir: Path, n_jobs: int):
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == [str(i) for i in range(n_jobs)]
    for job in jobs:
        assert (job / "results.json").is_file() and (job / ".hydra" / "overrides.yaml").is_file()
        assert json.loads((job / "results.json").read_text())["n_images"] == 40
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(sweep_dir)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    md = (sweep_dir / "summary.md").read_text()
    return md, [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]


@pytest.mark.slow
def test_two_job_multirun_then_summary(mnist_root, tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("train.py", [*_sweep_args(mnist_root, sweep), "experiment=lab,blurpool"], cwd=tmp_path)
    md, overrides = _check_sweep(sweep, 2)
    assert overrides == [["experiment=lab"], ["experiment=blurpool"]] or all(len(o) >= 1 for o in overrides)
    assert "`experiment=lab`" in md and "`experiment=blurpool`" in md


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="hydra-joblib-launcher not installed (pip install -e '.[sweep]')")
def test_joblib_launcher_runs_jobs_in_parallel_processes(mnist_root, tmp_path):
    sweep = tmp_path / "multirun"
    run_cli(
        "train.py",
        [*_sweep_args(mnist_root, sweep), "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        cwd=tmp_path,
    )
    md, _ = _check_sweep(sweep, 2)
    assert "| `default` | 2 |" in md  # both seeds of the one configuration


@pytest.mark.parametrize(
    "override,plugin,check",
    [
        ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper",
         lambda c: "Optuna" in c.hydra.sweeper._target_ and c.optimized_metric == "val/acc"),
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher",
         lambda c: "SlurmLauncher" in c.hydra.launcher._target_ and c.hydra.launcher.gpus_per_node == 1),
        ("hydra/launcher=joblib", "hydra_plugins.hydra_joblib_launcher",
         lambda c: "Joblib" in c.hydra.launcher._target_),
    ],
)
def test_sweeper_and_launcher_configs_compose(override, plugin, check, mnist_root, tmp_path):
    if importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} not installed (see the README's Sweeps section for its extra)")
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), override], tmp_path)
    assert check(cfg)
