"""``train(cfg)``: validate, seed, build everything from the Hydra config, fit, test, return metrics; ``run``
is what the root ``train.py`` / ``eval.py`` call (one ``error:`` line for a problem the user can fix)."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from shiftprobe.app import run_dir
from shiftprobe.app.checkpoint_compat import check_checkpoint_fits, check_resume_fits
from shiftprobe.app.config_checks import build_model, validate_config
from shiftprobe.app.interrupts import Stop, signals_as_interrupts
from shiftprobe.atomic import quiet_full_log_files, write_error
from shiftprobe.checkpoints import read_checkpoint
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.lit.quiet import quiet_lightning

log = logging.getLogger(__name__)

#: metric keys shown in TensorBoard's HPARAMS tab, besides each probe point's answer (``hparam_metrics``)
HPARAM_METRICS = ("val/acc", "test/acc")
#: config sections that describe the experiment (flattened into the HPARAMS tab)
HPARAM_SECTIONS = ("data", "model", "optimizer", "shift", "trainer")
HPARAM_SKIP = (
    "data.root", "data.download", "data.num_workers", "optimizer._partial_", "trainer._target_", "trainer.default_root_dir",
)


# -- building blocks ----------------------------------------------------------------------------------
def plain(value):
    """A config value as plain Python (interpolations resolved where it is an OmegaConf node)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def resolved_config(cfg: DictConfig) -> dict:
    """The run's configuration as a plain dict (interpolations resolved, Hydra's own section left out)."""
    return {str(key): plain(cfg[key]) for key in cfg if key != "hydra"}


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (bool, int, float, str)) or value is None:
        out[prefix] = "null" if value is None else value
    else:
        out[prefix] = str(value)


def flat_hparams(config: dict, choices: dict | None = None) -> dict:
    """The run's real hyper-parameters as flat ``section.key`` entries for TensorBoard / CSV."""
    out: dict = {"seed": config.get("seed"), "task_name": config.get("task_name")}
    for section in HPARAM_SECTIONS:
        if isinstance(config.get(section), dict):
            _flatten(section, config[section], out)
    out |= {f"choice.{group}": str(option) for group, option in (choices or {}).items()
            if option is not None and group in HPARAM_SECTIONS + ("experiment",)}
    return {k: v for k, v in out.items() if k not in HPARAM_SKIP}


def hydra_choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except Exception:  # not under Hydra (plain compose without set_config)
        return {}


def instantiate_group(cfg: DictConfig, group: str) -> list:
    """Every entry of ``cfg.<group>`` that names a ``_target_``, built."""
    section = cfg.get(group) or {}
    return [hydra.utils.instantiate(conf) for _, conf in section.items() if conf and "_target_" in conf]


def instantiate_callbacks(cfg: DictConfig) -> list[L.Callback]:
    callbacks = instantiate_group(cfg, "callbacks")
    if (cfg.get("trainer") or {}).get("enable_progress_bar") is False:
        # the user asked for no progress bar: drop ours rather than let Lightning refuse the pair
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def hparam_metrics(callbacks: list, net) -> tuple[str, ...]:
    """The metric keys of the HPARAMS tab: the accuracies and, with the measurement callback, the answer of
    each probe point of ``net`` (``answer/<layer>``: the names the network declares, no lab name here)."""
    from shiftprobe.lit.callbacks import ShiftProbeCallback

    probes = [c for c in callbacks if isinstance(c, ShiftProbeCallback)]
    return HPARAM_METRICS + tuple(key for c in probes for key in c.answer_keys(net))


def log_hparams(loggers: list, hparams: dict, metrics: tuple[str, ...] = HPARAM_METRICS) -> None:
    """Write the hyper-parameters once, declaring the metric keys logged later (``metrics``, no placeholder
    values)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            exp, ssi, sei = hparams_summary(hparams, dict.fromkeys(metrics, 0.0))
            writer = logger.experiment.file_writer
            for summary in (exp, ssi, sei):
                writer.add_summary(summary)
            logger.hparams.update(hparams)  # saved as hparams.yaml next to the events
            logger.save()
        else:
            logger.log_hyperparams(hparams)


def build_network(cfg: DictConfig) -> torch.nn.Module:
    """The network of ``cfg.model``; a setting its builder refuses (``ValueError`` / ``ShiftProbeError``) is
    one line, naming the key ``model.<argument>`` where the builder names its argument (``build_model``)."""
    try:
        return build_model(cfg.model)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, ShiftProbeError)):
            raise ShiftProbeError(str(err.__cause__)) from None
        raise


def build_module(
    cfg: DictConfig, config: dict, with_optimizer: bool = True, datamodule=None, net: torch.nn.Module | None = None
) -> ShiftProbeModule:
    """The training module around ``net`` (default: built from ``cfg.model``). With ``datamodule``, it
    takes the data's normalisation and number of classes, and is checked to take the data's images."""
    net = build_network(cfg) if net is None else net
    optimizer = hydra.utils.instantiate(cfg.optimizer) if with_optimizer and cfg.get("optimizer") else None
    if datamodule is None:
        return ShiftProbeModule(net=net, optimizer=optimizer, config=config)
    module = ShiftProbeModule(net=net, optimizer=optimizer, config=config,
                              normalization=datamodule.normalization, num_classes=datamodule.num_classes)
    check_network_fits_data(module, datamodule)
    return module


def check_network_fits_data(module: ShiftProbeModule, datamodule) -> None:
    """One forward of two blank images of the data's shape (eval mode, no gradient, on the module's
    device): a network built for other images (channels, side) or for another number of classes ends in
    one line before training, instead of a shape error inside the first step."""
    hp = datamodule.hparams
    shape = (hp.channels, hp.image_size, hp.image_size)
    what = f"data={hp.dataset} ({'x'.join(map(str, shape))} images, {hp.num_classes} classes)"
    param = next(module.net.parameters(), None)
    x = torch.zeros(2, *shape, device=param.device if param is not None else "cpu")
    was_training = module.net.training
    module.net.eval()
    try:
        with torch.no_grad():
            out = module(x.to(param.dtype) if param is not None and param.is_floating_point() else x)
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ShiftProbeError(
            f"the network ({type(module.net).__name__}) does not take the images of {what}: {first}. "
            f"Choose a model built for them (model.in_channels=<channels>, model.image_size=<side>, or another model=)."
        ) from None
    finally:
        module.net.train(was_training)
    if out.dim() != 2 or out.shape[1] != hp.num_classes:
        raise ShiftProbeError(
            f"the network ({type(module.net).__name__}) gives outputs of shape {tuple(out.shape[1:])} per image, but "
            f"{what} needs {hp.num_classes} class scores: choose a model with {hp.num_classes} outputs."
        )


def without_logger_callbacks(callbacks: list, loggers: list) -> list:
    """``callbacks`` less those that need a logger (``LearningRateMonitor``) when there is none
    (``logger=none``): Lightning would stop the run at its start; they are dropped with an info line."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    if loggers:
        return callbacks
    kept = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("no logger (logger=none): the learning-rate monitor (callbacks.lr_monitor) is left out")
    return kept


def trusts_files(cfg: DictConfig) -> bool:
    """``trust_checkpoint=true``: the user lets this run unpickle the files it is given (runs code in them)."""
    return cfg.get("trust_checkpoint") is True


def trainer_plugins(cfg: DictConfig) -> list:
    """``trainer.plugins`` (when set) and the project's ``CheckpointIO``, unless one of the given plugins
    already is one: ``AtomicCheckpointIO``, which saves atomically (renamed into place, never truncated)
    and loads with ``weights_only=True`` unless ``trust_checkpoint=true``."""
    from lightning.fabric.plugins import CheckpointIO

    from shiftprobe.lit.checkpointing import AtomicCheckpointIO

    given = cfg.trainer.get("plugins")
    given = list(given) if OmegaConf.is_list(given) else [given] if given else []
    plugins = [hydra.utils.instantiate(p) for p in given]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO(trusted=trusts_files(cfg)))
    return plugins


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The trainer of ``cfg.trainer``; it loads checkpoints with ``weights_only=True`` unless ``trusts_files``."""
    callbacks = without_logger_callbacks(callbacks, loggers)
    if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    try:
        return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                       plugins=trainer_plugins(cfg))
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (MisconfigurationException, ValueError, ImportError)):  # ImportError: e.g. tpu, no torch_xla
            text = str(cause).rstrip(".!")
            about_devices = any(w in text.lower() for w in ("accelerator", "device", "gpu", "cuda", "mps"))
            devices = (" Choose what this machine has: trainer=cpu (default), trainer=gpu with a CUDA GPU, "
                       "trainer=mps on Apple silicon.")
            hint = devices if about_devices else " Fix the trainer.* setting named above (see conf/trainer/)."
            raise ShiftProbeError(
                f"trainer settings (accelerator={cfg.trainer.get('accelerator')!r}, "
                f"devices={cfg.trainer.get('devices')!r}): {text}.{hint}"
            ) from None
        raise


@contextlib.contextmanager
def trainer_for(cfg: DictConfig, config: dict, net: torch.nn.Module, **hparams) -> Iterator[L.Trainer]:
    """The trainer of ``cfg`` with its callbacks and loggers, which rank 0 gives the hyper-parameters first
    (``config``'s and ``hparams``); the loggers are closed when the block ends."""
    callbacks = instantiate_callbacks(cfg)
    loggers = instantiate_group(cfg, "logger")
    trainer = build_trainer(cfg, callbacks, loggers)
    try:
        if trainer.is_global_zero:
            log_hparams(loggers, flat_hparams(config, hydra_choices()) | hparams, hparam_metrics(callbacks, net))
        yield trainer
    finally:
        close_loggers(loggers)


def to_floats(metrics: dict) -> dict[str, float]:
    """The metrics that are one number, as floats."""
    return {key: float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)}


def close_loggers(loggers: list) -> None:
    for logger in loggers:
        try:
            logger.finalize("success")
            experiment = getattr(logger, "_experiment", None)
            if experiment is not None and hasattr(experiment, "close"):
                experiment.close()
        except Exception as err:  # pragma: no cover - never hide the run's result because of a logger
            log.warning("could not close logger %s: %s", type(logger).__name__, err)


# -- the task ---------------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, float]:
    """Train (``cfg.train``) then test (``cfg.test``); return the final metrics as floats."""
    quiet_lightning()  # library warnings the user cannot act on (shiftprobe.lit.quiet)
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    config = resolved_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg, config, datamodule=datamodule)
    if cfg.get("ckpt_path"):  # another variant's checkpoint: one line naming what differs, before training
        action = "resume" if cfg.get("train", True) else "test"
        checkpoint = read_checkpoint(cfg.ckpt_path, trusted=trusts_files(cfg)).checkpoint or {}
        check_checkpoint_fits(checkpoint, cfg.ckpt_path, config.get("model"), module, action)
        if action == "resume":
            check_resume_fits(checkpoint, cfg.ckpt_path, config)
    with trainer_for(cfg, config, module.net) as trainer:
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if cfg.get("train", True):
            log.info("training: %s", trainer.default_root_dir)
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(to_floats(trainer.callback_metrics))
        if cfg.get("test", True):
            ckpt = cfg.get("ckpt_path")
            if cfg.get("train", True):
                best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
                ckpt = "best" if best else None
                if not best:
                    log.info("no best checkpoint: testing the current weights")
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
            metrics.update(to_floats(trainer.callback_metrics))
        metrics["time/seconds"] = time.perf_counter() - start
        if "test/acc" in metrics:
            log.info("test accuracy %.4f (%.1f s)", metrics["test/acc"], metrics["time/seconds"])
        return metrics


# -- what the entry points call ------------------------------------------------------------------
def run(cfg: DictConfig, task: Callable[[DictConfig], dict]) -> float | None:
    """Run ``task`` under Hydra; return ``optimized_metric`` when the config names one (for sweepers). A
    user-fixable problem (a full disk too) ends with ``error: ...`` and exit status 1, or in a multirun is
    reported and the sweep goes on; SIGTERM stops the run as Ctrl-C does (``shiftprobe.app.interrupts``)."""
    with signals_as_interrupts(enabled=_global_rank() == 0) as stop:  # DDP: the launcher stops the others
        try:
            return _run(cfg, task)
        except (KeyboardInterrupt, SystemExit) as err:
            stopped(stop, err)


def stopped(stop: Stop, err: BaseException) -> None:
    """End a run stopped by a signal: one line, the unstarted run folder removed, exit status 128 +
    the signal's number. A ``SystemExit`` that no signal caused (an ``error:`` line) goes on as it is."""
    if isinstance(err, SystemExit) and stop.signum is None:
        raise err
    print(f"stopped by {stop.name} (exit status {stop.exit_status})", file=sys.stderr, flush=True)
    run_dir.remove_unstarted_run_dir(_global_rank())
    sys.exit(stop.exit_status)


def with_disk_errors_as_lines(task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """``task(cfg)``, with a disk problem the code did not write itself (a logger's file on a full disk or
    in a read-only folder) raised as a one-line ``WriteError`` naming the path."""
    try:
        return task(cfg)
    except OSError as err:
        converted = write_error(err, err.filename or _run_folder(cfg), folder=not err.filename, writing=False)
        if converted is None or converted is err:
            raise
        raise converted from None


def _run_folder(cfg: DictConfig) -> str:
    try:
        return str(OmegaConf.select(cfg, "paths.output_dir", default=None) or Path.cwd())
    except Exception:  # an interpolation that needs Hydra's runtime (a config composed without it)
        return str(Path.cwd())


def _run(cfg: DictConfig, task: Callable[[DictConfig], dict]) -> float | None:
    _quiet_lightning_console()
    quiet_lightning()  # also for eval.py's task
    quiet_full_log_files()  # a full disk: one error line, not a logging traceback per train.log line
    try:
        metrics = with_disk_errors_as_lines(task, cfg)
    except (ShiftProbeError, MisconfigurationException) as err:
        # an error every rank raised at the same step (decided across ranks) is reported by rank 0 only
        report = _global_rank() == 0 or not getattr(err, "same_on_every_rank", False)
        if run_dir.is_multirun():  # under DDP, the other ranks run the same sweep in step: they go on too
            if report:
                log.error("error: %s", err)
            if cfg.get("optimized_metric"):
                # a sweeper that optimises the metric (Optuna) records a raised job as a failed trial
                # (hydra.sweeper.max_failure_rate); a NaN return value would end its whole search
                raise
            return math.nan
        if report:
            print(f"error: {err}", file=sys.stderr, flush=True)
        run_dir.remove_unstarted_run_dir(_global_rank())
        sys.exit(1)
    except Exception:
        run_dir.remove_unstarted_run_dir(_global_rank())
        raise
    name = cfg.get("optimized_metric")
    if name:
        if name not in metrics:
            print(
                f"error: optimized_metric={name!r} was not logged; available: {sorted(metrics)}",
                file=sys.stderr,
            )
            sys.exit(1)
        return metrics[name]
    return None


def _quiet_lightning_console() -> None:
    """Lightning adds its own console handler on import; under Hydra's logging it doubles every line."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def _global_rank() -> int:
    """This process's rank in a distributed run (0 without one; Lightning sets it at launch)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)
