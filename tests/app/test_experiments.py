"""Every experiment preset composes and builds; sweeper and launcher configs compose.

(Augmentation and sweeps end to end: tests/test_variants.py and tests/test_sweep.py.)
"""

import importlib.util

import hydra
import pytest
import torch
from conftest import ROOT, compose_config, test_overrides

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def test_experiments_exist():
    assert {"lab", "augmented", "blurpool", "circular", "untrained"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"experiment={name}"], tmp_path)
    assert cfg.task_name == name
    net = hydra.utils.instantiate(cfg.model).eval()
    out = net(torch.rand(2, 1, 28, 28))
    if isinstance(out, torch.Tensor):  # torchvision / timm networks: logits
        assert out.shape == (2, 10)
        expected = {
            "resnet18": lambda: cfg.model.small_input and cfg.model.pool == "max",
            "resnet18_blur": lambda: cfg.model.small_input and cfg.model.pool == "blur",
            "resnet18_aps": lambda: cfg.model.small_input and cfg.model.pool == "aps",
        }
        assert expected[name]()
        return
    log_probs, conv2, fc1 = out
    assert log_probs.shape == (2, 10) and fc1.shape == (2, 4 * cfg.model.width if name == "resnet" else 50)
    expected = {
        "positive_control": lambda: net.pool == "aps" and net.padding == "circular" and cfg.shift.mode == "roll",
        "augmented": lambda: cfg.data.train_shift == 4 and net.pool == "max",
        "blurpool": lambda: net.pool == "blur" and net.fc1.in_features == 320,
        "circular": lambda: net.padding == "circular" and cfg.shift.mode == "roll" and conv2.shape[-1] == 14,
        "untrained": lambda: cfg.train is False,
        "lab": lambda: net.pool == "max" and cfg.data.train_shift == 0 and cfg.optimizer.lr == 1e-3,
        "gap": lambda: type(net).__name__ == "GapCNN" and net.gap(conv2).shape == (2, 20),
        "resnet": lambda: type(net).__name__ == "SmallResNet" and conv2.shape == (2, 4 * cfg.model.width, 7, 7),
    }
    assert expected.get(name, lambda: True)()


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
