"""``evaluate(cfg)``: test a checkpoint with the settings it was trained with (from the checkpoint, else its
run's ``.hydra/config.yaml``), so that ``eval.py`` on a run's checkpoint reproduces its results.json; a plain
``state_dict`` or a whole saved module is measured with the command line's ``model=`` (``load_weights``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from shiftprobe.app.checkpoint_compat import check_checkpoint_fits
from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.train import (
    build_module,
    hydra_choices,
    plain,
    resolved_config,
    to_floats,
    trainer_for,
    trusts_files,
)
from shiftprobe.checkpoints import CheckpointFile, read_checkpoint, recorded_config
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.stored_config import check_plain, checked_model_config, upgrade_targets, without_weight_source

log = logging.getLogger(__name__)

#: data settings that change what the test sees, taken from the training run
DATA_KEYS_FROM_RUN = (
    "val_size", "split_seed", "normalize", "train_shift", "train_rotate", "train_flip",
    "channels", "image_size", "num_classes", "mean", "std",
)
#: the data settings that decide the network's input: always the run's
DATA_INPUT_KEYS = ("normalize", "mean", "std", "channels", "image_size", "num_classes")
#: measurement settings that change the figures, taken from the training run unless given now
PROBE_KEYS_FROM_RUN = ("max_shift", "mode", "pattern", "seed", "max_images", "untrained", "layers")


def saved_run_config(ckpt_path: str | Path, checkpoint: dict | None = None) -> dict | None:
    """The training run's configuration: from the checkpoint (read here when not given), else the settings
    eval.py takes from ``<run>/.hydra/config.yaml`` (``taken_settings``, interpolations resolved there)."""
    ckpt_path = Path(ckpt_path)
    if checkpoint is None:
        checkpoint = read_checkpoint(ckpt_path).checkpoint or {}
    config = recorded_config(checkpoint)
    if config:
        return dict(config)
    run_cfg = ckpt_path.resolve().parent.parent / ".hydra" / "config.yaml"
    if run_cfg.is_file():
        log.info("reading the run settings from %s", run_cfg)
        return taken_settings(OmegaConf.load(run_cfg))
    return None


def taken_settings(saved: Mapping) -> dict:
    """What eval.py takes from a training run's settings: ``model``, ``seed``, ``shift``, ``transform``,
    ``data.dataset`` (checked against the command line's), ``data.<DATA_KEYS_FROM_RUN>`` and
    ``callbacks.shift_probe.<PROBE_KEYS_FROM_RUN>``; the rest is left."""
    out = {k: plain(saved[k]) for k in ("model", "shift", "transform") if isinstance(saved.get(k), Mapping)}
    if "seed" in saved:
        out["seed"] = plain(saved["seed"])
    data = saved.get("data")
    if isinstance(data, Mapping):
        out["data"] = {k: plain(data[k]) for k in ("dataset", *DATA_KEYS_FROM_RUN) if k in data}
    callbacks = saved.get("callbacks")
    probe = callbacks.get("shift_probe") if isinstance(callbacks, Mapping) else None
    if isinstance(probe, Mapping):
        out["callbacks"] = {"shift_probe": {k: plain(probe[k]) for k in PROBE_KEYS_FROM_RUN if k in probe}}
    return out


def apply_run_config(cfg: DictConfig, saved: dict | None) -> None:
    """Overwrite ``cfg.model`` and the test-relevant ``cfg.data`` keys with the training run's, once every
    value taken (``taken_settings``, legacy ``_target_``s upgraded) is checked by ``shiftprobe.stored_config``
    (the model one of the project's, everything plain), before anything is built."""
    if not saved:
        log.warning("the checkpoint records no run settings: using the model/data settings given now")
        return
    where = f"ckpt_path={str(cfg.get('ckpt_path'))!r}"
    saved = upgrade_targets(taken_settings(saved))
    for key, value in saved.items():
        if key == "model":
            checked_model_config(value, where)
        else:
            check_plain(where, key, value)
    with open_dict(cfg):
        if isinstance(saved.get("model"), dict):
            model = OmegaConf.create(without_weight_source(saved["model"]))  # the checkpoint holds the weights
            if OmegaConf.to_container(cfg.model, resolve=True) != OmegaConf.to_container(model, resolve=True):
                log.info(
                    "model settings from the checkpoint: %s", OmegaConf.to_container(model, resolve=True)
                )
            cfg.model = model
        data = saved.get("data") or {}
        check_same_dataset(cfg, data)
        restore_data_settings(cfg, data)
    restore_measurement_settings(cfg, saved)
    restore_transforms(cfg, saved)


def check_same_dataset(cfg: DictConfig, run_data: dict) -> None:
    """The test uses the dataset the run was trained on (runs from before ``data=<name>`` used MNIST);
    else one line naming it: the dataset group also sets the data root, so it is not switched silently."""
    trained_on = run_data.get("dataset", "mnist")
    now = cfg.data.get("dataset", "mnist")
    if trained_on != now:
        raise ShiftProbeError(
            f"the checkpoint was trained on data={trained_on}, this command tests on data={now}: add "
            f"data={trained_on} (and its data.root) to the eval.py command."
        )


def restore_data_settings(cfg: DictConfig, run_data: dict) -> None:
    """Set ``data.<DATA_KEYS_FROM_RUN>`` to the run's values, but where the command line sets them: there a
    key of ``DATA_INPUT_KEYS`` that differs from the run's is one line (the network's input is what it was
    trained on), any other key keeps the command line's value (it does not change the test)."""
    given = command_line_keys()
    for key in (k for k in DATA_KEYS_FROM_RUN if k in run_data):
        now = plain(cfg.data.get(key))
        if f"data.{key}" not in given:
            cfg.data[key] = run_data[key]
        elif key in DATA_INPUT_KEYS and now != run_data[key]:
            raise ShiftProbeError(
                f"data.{key}={now} differs from the run's data.{key}={run_data[key]}: eval.py gives the network "
                f"the input it was trained on; remove data.{key} from the command line."
            )


def command_line_keys() -> list[str]:
    """The keys the user set on the command line (``HydraConfig``'s task overrides); none without Hydra.

    ``callbacks=[...]`` is left out: it picks which callbacks run, not their settings."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not HydraConfig.initialized():
            return []
        overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    except Exception as err:  # pragma: no cover - a composed config without a Hydra section
        log.debug("no command-line overrides: %s", err)
        return []
    return [o.key_or_group for o in overrides if o.key_or_group != "callbacks"]


def _interpolated_keys(cfg: DictConfig, path: str) -> list[str]:
    """The keys the raw value at ``path`` interpolates (``${shift.seed}`` -> ``shift.seed``)."""
    parent, _, leaf = path.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not OmegaConf.is_dict(node) or leaf not in node:
        return []
    raw = OmegaConf.to_container(node, resolve=False).get(leaf)
    return re.findall(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else []


def restore_measurement_settings(cfg: DictConfig, saved: dict) -> None:
    """Set ``seed``, ``shift.*`` and ``callbacks.shift_probe.<PROBE_KEYS_FROM_RUN>`` to the training run's
    values (and log which), except where the command line sets them or a value they follow (``seed=5`` for
    ``shift.seed: ${seed}``); a setting already equal to the run's keeps its interpolation."""
    given = command_line_keys()
    kept_by_user: set[str] = set()

    def by_user(path: str) -> bool:
        if any(path == key or path.startswith(key + ".") for key in given):
            return True
        return any(
            ref == key or ref.startswith(key + ".")
            for ref in _interpolated_keys(cfg, path)
            for key in kept_by_user
        )

    wanted: list[tuple[str, object]] = [("seed", saved["seed"])] if "seed" in saved else []
    # only keys this version knows (an older run may have saved a key since removed)
    shift_keys = set(cfg.shift) if OmegaConf.is_dict(cfg.get("shift")) else set()
    wanted += [(f"shift.{k}", v) for k, v in (saved.get("shift") or {}).items() if k in shift_keys]
    probe = ((saved.get("callbacks") or {}).get("shift_probe")) or {}
    if probe.get("layers") == []:  # a run that said layers=[] measured the default layers (now written null)
        probe = {**probe, "layers": None}
    if OmegaConf.select(cfg, "callbacks.shift_probe") is not None:
        known = set(cfg.callbacks.shift_probe)
        wanted += [
            (f"callbacks.shift_probe.{k}", probe[k]) for k in PROBE_KEYS_FROM_RUN if k in probe and k in known
        ]
    restored, kept = [], []
    for path, value in wanted:
        now = OmegaConf.select(cfg, path, throw_on_missing=False)
        if by_user(path):
            kept_by_user.add(path)
            if now != value:
                kept.append(f"{path}={now} (the run used {value})")
        elif now != value:
            with open_dict(cfg):
                OmegaConf.update(cfg, path, value, merge=False, force_add=True)
            restored.append(f"{path}={value}")
    if restored:
        log.info("restored from the checkpoint's run: %s", ", ".join(restored))
    if kept:
        log.info("given on the command line, so not restored: %s", ", ".join(kept))


def restore_transforms(cfg: DictConfig, saved: dict) -> None:
    """Set ``transform`` (the families measured, conf/transform/) to the training run's list and settings,
    unless the command line names ``transform`` or a ``transform.*`` key. Runs from before the group
    record none: their eval measures translation only, as they did."""
    run = saved.get("transform")
    if not isinstance(run, dict) or not run or "transform" not in cfg:
        return
    now = plain(cfg.transform)
    if now == run:
        return
    names = "[" + ",".join(run) + "]"
    if any(key == "transform" or key.startswith("transform.") for key in command_line_keys()):
        log.info("given on the command line, so not restored: transform=[%s] (the run used %s)", ",".join(now or {}), names)
        return
    with open_dict(cfg):
        cfg.transform = OmegaConf.create(run)
    log.info("restored from the checkpoint's run: transform=%s %s", names, run)


def load_weights(source: CheckpointFile, cfg: DictConfig, config: dict, module: ShiftProbeModule) -> str | None:
    """Give ``module`` the checkpoint's weights and a fresh seeded network as its untrained control (a
    train.py checkpoint replaces it with the initial weights it records when Lightning loads it).
    Returns the ``ckpt_path`` for ``trainer.test`` (train.py checkpoints) or None (weights loaded here)."""
    from shiftprobe.probe.measure import reinitialised_copy

    resettable = any(callable(getattr(m, "reset_parameters", None)) for m in module.net.modules())
    fresh = reinitialised_copy(module.net, cfg.seed) if resettable else None
    module.initial_net_state = None if fresh is None else {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    module.initial_net_origin = f"a fresh network initialised with seed={cfg.seed} (the checkpoint records no initial weights)"
    if source.kind == "lightning":
        check_checkpoint_fits(source.checkpoint, cfg.ckpt_path, config.get("model"), module, "test")
        return str(cfg.ckpt_path)
    if source.kind == "state_dict":
        prefixed = {"state_dict": {f"net.{k}": v for k, v in source.weights.items()}}
        check_checkpoint_fits(prefixed, cfg.ckpt_path, config.get("model"), module, "test")
        module.net.load_state_dict(source.weights)
    return None


def _model_name(cfg: DictConfig) -> str:
    """The ``model=`` option of this run (its ``_target_`` class without Hydra)."""
    name = hydra_choices().get("model")
    return str(name) if name else str(cfg.model.get("_target_", "?")).rpartition(".")[2]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` (the test-end measurement runs when its callback is configured)."""
    validate_config(cfg, require_ckpt=True)
    source = read_checkpoint(cfg.ckpt_path, trusted=trusts_files(cfg))
    if source.kind == "lightning":
        apply_run_config(cfg, saved_run_config(cfg.ckpt_path, source.checkpoint))
    elif source.kind == "state_dict":
        log.info("%s is a plain state_dict: measuring it as model=%s", cfg.ckpt_path, _model_name(cfg))
    else:
        log.info("%s is a whole saved module (%s): the model= settings are not used", cfg.ckpt_path,
                 type(source.module).__name__)
    validate_config(cfg, require_ckpt=True)
    L.seed_everything(cfg.seed, workers=True)
    config = resolved_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg, config, with_optimizer=False, datamodule=datamodule, net=source.module)
    ckpt = load_weights(source, cfg, config, module)
    with trainer_for(cfg, config, module.net, ckpt_path=str(cfg.ckpt_path)) as trainer:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        metrics = to_floats(trainer.callback_metrics)
        if "test/acc" in metrics:
            log.info("test accuracy of %s: %.4f", cfg.ckpt_path, metrics["test/acc"])
        return metrics
