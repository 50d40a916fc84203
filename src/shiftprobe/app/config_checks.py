"""``validate_config(cfg)``: catch bad settings before anything is built or trained.

Every problem raises ``ShiftProbeError`` naming the key, the bad value and what is allowed. Types and
enumerations (``shift.mode``, ``model.pool`` ...) are checked against the typed schemas of
``shiftprobe.app.schemas``; this module adds what a type cannot say (ranges, combinations, files).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from shiftprobe.app.schemas import LAB_MODEL_CLASSES, check_schemas
from shiftprobe.app.transform_checks import check_transform
from shiftprobe.errors import ShiftProbeError
from shiftprobe.errors import is_number as _is_number
from shiftprobe.errors import reject_setting as _fail
from shiftprobe.probe.transforms import IMAGE_SIZE


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(cfg, key: str, low: int, hint: str = "", required: bool = True) -> None:
    value = _get(cfg, key)
    if value is None and not required:
        return
    if not _is_int(value) or value < low:
        _fail(key, value, f"use an integer >= {low}{hint}")


def check_optimizer(cfg: DictConfig) -> None:
    if _get(cfg, "optimizer") is None:
        return
    lr = _get(cfg, "optimizer.lr")
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        _fail("optimizer.lr", lr, "use a positive number, e.g. optimizer.lr=1e-3")
    wd = _get(cfg, "optimizer.weight_decay")
    if wd is not None and (not _is_number(wd) or not math.isfinite(wd) or wd < 0):
        _fail("optimizer.weight_decay", wd, "use a number >= 0, e.g. optimizer.weight_decay=0")
    momentum = _get(cfg, "optimizer.momentum")
    if momentum is not None and (not _is_number(momentum) or not 0 <= momentum < 1):
        _fail("optimizer.momentum", momentum, "use a number in [0, 1), e.g. optimizer.momentum=0.9")


#: the largest training rotation, in degrees (angles are drawn uniformly in [-D, D])
MAX_TRAIN_ROTATE = 180


def check_data(cfg: DictConfig) -> None:
    _int_at_least(cfg, "data.batch_size", 1, ", e.g. data.batch_size=64")
    _int_at_least(cfg, "data.eval_batch_size", 1, ", e.g. data.eval_batch_size=1000", required=False)
    _int_at_least(
        cfg, "data.val_size", 1, " and below the number of training images (default 5000)", required=False
    )
    _int_at_least(cfg, "data.num_workers", 0, " (0 = load in the main process)", required=False)
    _int_at_least(cfg, "data.split_seed", 0, required=False)
    data_seed = _get(cfg, "data.seed")
    if data_seed is not None and not _is_int(data_seed):
        _fail("data.seed", data_seed, "use an integer (by default the run seed: data.seed=${seed})")
    k = _get(cfg, "data.train_shift", 0)
    if not _is_int(k) or not 0 <= k < IMAGE_SIZE:
        _fail("data.train_shift", k, f"use an integer from 0 (no augmentation) to {IMAGE_SIZE - 1}, e.g. 2")
    degrees = _get(cfg, "data.train_rotate", 0)
    if not _is_number(degrees) or not math.isfinite(degrees) or not 0 <= degrees <= MAX_TRAIN_ROTATE:
        _fail(
            "data.train_rotate",
            degrees,
            f"use a number of degrees from 0 (no rotation) to {MAX_TRAIN_ROTATE}, e.g. data.train_rotate=45",
        )
    root = _get(cfg, "data.root")
    if root is None or str(root).strip() == "":
        _fail("data.root", root, "set MNIST_ROOT or data.root to the folder that holds MNIST/raw/")
    if Path(str(root)).exists() and not Path(str(root)).is_dir():
        _fail(
            "data.root",
            str(root),
            "it is a file; point MNIST_ROOT (or data.root) at the folder that holds MNIST/raw/",
        )


def _model_class(cfg: DictConfig) -> str:
    """The class name in ``model._target_`` (e.g. ``LabCNN``); "" when there is none."""
    return str(_get(cfg, "model._target_", "") or "").rpartition(".")[2]


def _variant_paddings() -> dict[str, tuple[str, ...]]:
    """``model._target_``'s last part -> the paddings it offers, for the models whose ``pool`` and
    ``padding`` are not in a schema (the lab's are: ``LabModelConfig``)."""
    from shiftprobe.models import allconv, gap, resnet, zoo

    return {
        "GapCNN": gap.PADDINGS,
        "AllConvCNN": allconv.PADDINGS,
        "SmallResNet": resnet.PADDINGS,
        "torchvision_model": zoo.PADDINGS,
    }


def check_model_variant(cfg: DictConfig, name: str) -> None:
    """``model.pool`` and ``model.padding`` of the built-in CNNs and torchvision networks."""
    from shiftprobe.models.variants import POOLS

    paddings = _variant_paddings().get(name)
    if paddings is None:
        return
    pool, padding = _get(cfg, "model.pool", "max"), _get(cfg, "model.padding", paddings[0])
    if pool not in POOLS:
        _fail("model.pool", pool, f"use one of {list(POOLS)}")
    if padding not in paddings:
        _fail("model.padding", padding, f"use one of {list(paddings)}")


def check_zoo_model(cfg: DictConfig) -> None:
    """``model.name``, ``model.small_input`` and ``model.weights`` of ``model=torchvision|timm`` (the name
    itself is checked when the network is built, before training)."""
    name = _get(cfg, "model.name")
    if not isinstance(name, str) or not name:
        _fail("model.name", name, "use an architecture's name, e.g. model.name=resnet18")
    small = _get(cfg, "model.small_input", False)
    if not isinstance(small, bool):
        _fail("model.small_input", small, "use true or false")
    weights = _get(cfg, "model.weights")
    if weights is not None and not Path(str(weights)).is_file():
        _fail("model.weights", str(weights), "no such file; save one with torch.save(model.state_dict(), path)")


def check_model(cfg: DictConfig) -> None:
    if _get(cfg, "model") is None:
        return
    channels = _get(cfg, "model.in_channels")
    if channels is not None and (not _is_int(channels) or channels != 1):
        _fail("model.in_channels", channels, "use 1: MNIST images are grey (others are for the Python API)")
    name = _model_class(cfg)
    if name == "SmallResNet":
        _int_at_least(cfg, "model.width", 1, ", e.g. model.width=16")
    if name in ("torchvision_model", "timm_model"):
        check_zoo_model(cfg)
    check_model_variant(cfg, name)
    if name not in (*LAB_MODEL_CLASSES, *_variant_paddings(), ""):
        return  # blur_filter_size belongs to the models with the pool variants; the lab's pool and padding: schemas
    size = _get(cfg, "model.blur_filter_size", 3)
    if not _is_int(size) or not 1 <= size <= 7:
        _fail("model.blur_filter_size", size, "use an integer from 1 to 7 (default 3)")


def check_shift(cfg: DictConfig) -> None:
    if _get(cfg, "shift") is None:
        return
    m = _get(cfg, "shift.max_shift")
    if not _is_int(m) or not 0 <= m < IMAGE_SIZE:
        _fail(
            "shift.max_shift",
            m,
            f"use an integer from 0 to {IMAGE_SIZE - 1} (presets: shift=small|medium|large)",
        )
    if _get(cfg, "shift.pattern") == "random" and m == 0:  # mode, pattern and seed: the schema
        _fail("shift.max_shift", m, "the random pattern needs max_shift >= 1")


def check_trainer(cfg: DictConfig) -> None:
    epochs = _get(cfg, "trainer.max_epochs")
    if epochs is not None and (not _is_int(epochs) or epochs < 0):
        _fail("trainer.max_epochs", epochs, "use an integer >= 0, e.g. trainer.max_epochs=5")
    min_epochs = _get(cfg, "trainer.min_epochs")
    if min_epochs is not None and (not _is_int(min_epochs) or min_epochs < 0):
        _fail("trainer.min_epochs", min_epochs, "use an integer >= 0")
    if _is_int(epochs) and _is_int(min_epochs) and min_epochs > epochs:
        _fail("trainer.min_epochs", min_epochs, f"it must not exceed trainer.max_epochs={epochs}")


def check_ckpt(cfg: DictConfig, required: bool = False) -> None:
    ckpt = _get(cfg, "ckpt_path")
    if ckpt is None or str(ckpt) == "???":
        if required:
            raise ShiftProbeError(
                "ckpt_path is required: python eval.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best.ckpt"
            )
        return
    if not Path(str(ckpt)).is_file():
        _fail(
            "ckpt_path",
            str(ckpt),
            "no such checkpoint file; use e.g. outputs/runs/<date>/<time>/checkpoints/last.ckpt",
        )


#: keys of sections without a ``_target_`` whose code reads a fixed set of keys
FIXED_KEYS = {"shift": ("max_shift", "mode", "pattern", "seed")}
#: sections whose keys are the parameters of their ``_target_``
TARGET_SECTIONS = ("model", "data", "optimizer", "callbacks.shift_probe")
_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def _target_parameters(target: str) -> list[str] | None:
    """The keyword parameters of a ``_target_`` (None when it takes ``**kwargs`` or cannot be imported)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        params = inspect.signature(obj).parameters.values()
    except Exception:  # an unknown target is reported when it is instantiated
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _refuse_unknown(section: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed and key not in _HYDRA_KEYS:
            raise ShiftProbeError(
                f"{section}.{key} is not a setting of {section}: nothing would read it. "
                f"Allowed keys: {', '.join(sorted(allowed))}. Remove the override (e.g. drop +{section}.{key}=...)."
            )


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys that no code reads (e.g. ``+shift.rotation=15``) under the user-facing sections."""
    for section, allowed in FIXED_KEYS.items():
        node = _get(cfg, section)
        if isinstance(node, DictConfig):
            _refuse_unknown(section, list(node.keys()), allowed)
    for section in TARGET_SECTIONS:
        node = _get(cfg, section)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        allowed = _target_parameters(str(node["_target_"]))
        if allowed is None:
            continue
        if section == "optimizer":  # the module passes the parameters
            allowed = [a for a in allowed if a != "params"]
        _refuse_unknown(section, list(node.keys()), allowed)


def validate_config(cfg: DictConfig, require_ckpt: bool = False, known_keys: bool = True) -> None:
    """Check every setting a user may change; raise ``ShiftProbeError`` on the first bad one.

    ``known_keys=False`` leaves out the check of the keys against the ``_target_`` signatures, which
    imports the data module and the callbacks (and so Lightning): ``shiftprobe.app.preflight``."""
    if known_keys:
        check_known_keys(cfg)
    check_schemas(cfg)
    if not _is_int(_get(cfg, "seed")):
        _fail("seed", _get(cfg, "seed"), "use an integer, e.g. seed=0")
    check_optimizer(cfg)
    check_data(cfg)
    check_model(cfg)
    check_shift(cfg)
    check_transform(cfg)  # the transform group (shiftprobe.app.transform_checks)
    check_trainer(cfg)
    check_ckpt(cfg, required=require_ckpt)
