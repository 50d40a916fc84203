"""Test a checkpoint with the data and model settings it was trained with (and measure it).

python eval.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best.ckpt
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from shiftprobe.app.evaluate import evaluate
    from shiftprobe.app.train import run

    return run(cfg, evaluate)


if __name__ == "__main__":
    main()
