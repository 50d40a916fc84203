"""``evaluate(cfg)``: test a checkpoint with the data and model settings it was trained with.

The settings come from the checkpoint itself (the run configuration saved in its hyper-parameters),
or else from the run directory's ``.hydra/config.yaml``. What may differ from the training machine
(the data root, download, batch sizes, workers) and the measurement settings (``shift``) are taken
from the current command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from shiftprobe.checkpoint_compat import check_checkpoint_fits, load_checkpoint
from shiftprobe.config_checks import validate_config
from shiftprobe.train import (
    build_module,
    build_trainer,
    close_loggers,
    flat_hparams,
    hydra_choices,
    instantiate_callbacks,
    instantiate_loggers,
    log_hparams,
    resolved_config,
    to_floats,
)

log = logging.getLogger(__name__)

#: data settings that change what the test sees, taken from the training run
DATA_KEYS_FROM_RUN = ("val_size", "split_seed", "normalize", "train_shift")


def saved_run_config(ckpt_path: str | Path, checkpoint: dict | None = None) -> dict | None:
    """The training run's configuration: from the checkpoint, else from ``<run>/.hydra/config.yaml``."""
    ckpt_path = Path(ckpt_path)
    if checkpoint is None:
        checkpoint = load_checkpoint(ckpt_path)
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if config:
        return dict(config)
    run_cfg = ckpt_path.resolve().parent.parent / ".hydra" / "config.yaml"
    if run_cfg.is_file():
        log.info("reading the run settings from %s", run_cfg)
        return OmegaConf.to_container(OmegaConf.load(run_cfg), resolve=False)
    return None


def apply_run_config(cfg: DictConfig, saved: dict | None) -> None:
    """Overwrite ``cfg.model`` and the test-relevant ``cfg.data`` keys with the training run's."""
    if not saved:
        log.warning("the checkpoint records no run settings: using the model/data settings given now")
        return
    with open_dict(cfg):
        if isinstance(saved.get("model"), dict):
            model = OmegaConf.create(saved["model"])
            if OmegaConf.to_container(cfg.model, resolve=True) != OmegaConf.to_container(model, resolve=True):
                log.info(
                    "model settings from the checkpoint: %s", OmegaConf.to_container(model, resolve=True)
                )
            cfg.model = model
        data = saved.get("data") or {}
        for key in DATA_KEYS_FROM_RUN:
            if key in data:
                cfg.data[key] = data[key]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` (the test-end measurement runs when its callback is configured)."""
    validate_config(cfg, require_ckpt=True)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    apply_run_config(cfg, saved_run_config(cfg.ckpt_path, checkpoint))
    validate_config(cfg, require_ckpt=True)
    L.seed_everything(cfg.seed, workers=True)
    config = resolved_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg, config, with_optimizer=False)
    check_checkpoint_fits(checkpoint, cfg.ckpt_path, config.get("model"), module, "test")
    callbacks = instantiate_callbacks(cfg)
    loggers = instantiate_loggers(cfg)
    trainer = build_trainer(cfg, callbacks, loggers)
    try:
        if trainer.is_global_zero:
            log_hparams(loggers, flat_hparams(config, hydra_choices()) | {"ckpt_path": str(cfg.ckpt_path)})
        trainer.test(module, datamodule=datamodule, ckpt_path=str(cfg.ckpt_path))
        metrics = to_floats(trainer.callback_metrics)
        if "test/acc" in metrics:
            log.info("test accuracy of %s: %.4f", cfg.ckpt_path, metrics["test/acc"])
        return metrics
    finally:
        close_loggers(loggers)
