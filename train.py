"""Train the lab MNIST CNN, test it, and measure translation invariance / equivariance.

python train.py                                   # the lab setting
python train.py optimizer=sgd optimizer.lr=0.01 trainer.max_epochs=2
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from shiftprobe.app.command_line import check_command_line, prepare_environment

ROOT = Path(__file__).resolve().parent
prepare_environment(ROOT)  # PROJECT_ROOT; an empty MNIST_ROOT counts as not set


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from shiftprobe.app.preflight import check_settings_first

    check_settings_first(cfg)  # a bad setting: one line in ~2 s, before Lightning is imported
    from shiftprobe.app.train import run, train

    return run(cfg, train)


if __name__ == "__main__":
    check_command_line(ROOT / "conf", "train")  # a key or option Hydra cannot compose: one error line
    main()
