"""Train the lab MNIST CNN, test it, and measure translation invariance / equivariance.

python train.py                                   # the lab setting
python train.py optimizer=sgd optimizer.lr=0.01 trainer.max_epochs=2
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from shiftprobe.app.preflight import check_settings_first

    check_settings_first(cfg)  # a bad setting: one line in ~2 s, before Lightning is imported
    from shiftprobe.app.train import run, train

    return run(cfg, train)


if __name__ == "__main__":
    main()
