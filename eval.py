"""Test a checkpoint with the data and model settings it was trained with (and measure it).

python eval.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best.ckpt
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from shiftprobe.app.command_line import check_command_line, prepare_environment

ROOT = Path(__file__).resolve().parent
prepare_environment(ROOT)  # PROJECT_ROOT; an empty MNIST_ROOT counts as not set


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from shiftprobe.app.preflight import check_settings_first

    check_settings_first(cfg, require_ckpt=True)  # a bad setting: one line, before Lightning is imported
    from shiftprobe.app.evaluate import evaluate
    from shiftprobe.app.train import run

    return run(cfg, evaluate)


if __name__ == "__main__":
    check_command_line(ROOT / "conf", "eval")  # a key or option Hydra cannot compose: one error line
    main()
