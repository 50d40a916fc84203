"""``validate_config(cfg)``: catch bad settings before anything is built or trained.

Every problem raises ``ShiftProbeError`` naming the key, the bad value and what is allowed. Types and
enumerations (``shift.mode``, ``model.pool`` ...) are checked against the typed schemas of
``shiftprobe.app.schemas``; this module adds what a type cannot say (ranges, combinations, files).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from shiftprobe.app.lie_checks import check_lie_derivative
from shiftprobe.app.schemas import LAB_MODEL_CLASSES, check_schemas
from shiftprobe.app.transform_checks import check_transform, data_image_size
from shiftprobe.data.datasets import check_data_settings
from shiftprobe.errors import ShiftProbeError, unknown_key
from shiftprobe.errors import is_number as _is_number
from shiftprobe.errors import reject_setting as _fail


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


def check_dataset(cfg: DictConfig) -> None:
    """The dataset and what its images are (``shiftprobe.data.datasets.check_data_settings``), its root."""
    dataset = _get(cfg, "data.dataset", "mnist")
    spec = check_data_settings(
        dataset,
        _get(cfg, "data.channels", 1),
        _get(cfg, "data.image_size", 28),
        _get(cfg, "data.num_classes", 10),
        _get(cfg, "data.mean", [0.1307]),
        _get(cfg, "data.std", [0.3081]),
    )
    env = f"set {spec.root_env} or data.root" if spec.root_env else "set data.root"
    holds = f"{spec.folder}/" if spec.folder else "train/<class>/ and test/<class>/"
    root = _get(cfg, "data.root")
    if root is None or str(root).strip() in ("", "???"):
        _fail("data.root", root, f"{env} to the folder that holds {holds}, e.g. data.root=/path/to/folder")
    if Path(str(root)).exists() and not Path(str(root)).is_dir():
        _fail("data.root", str(root), f"it is a file; {env} to the folder that holds {holds}")


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
    size = data_image_size(cfg)
    k = _get(cfg, "data.train_shift", 0)
    if not _is_int(k) or not 0 <= k < size:
        _fail("data.train_shift", k, f"use an integer from 0 (no augmentation) to {size - 1}, e.g. 2")
    degrees = _get(cfg, "data.train_rotate", 0)
    if not _is_number(degrees) or not math.isfinite(degrees) or not 0 <= degrees <= MAX_TRAIN_ROTATE:
        _fail(
            "data.train_rotate",
            degrees,
            f"use a number of degrees from 0 (no rotation) to {MAX_TRAIN_ROTATE}, e.g. data.train_rotate=45",
        )
    check_dataset(cfg)


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
    channels, data_channels = _get(cfg, "model.in_channels"), _get(cfg, "data.channels", 1)
    if channels is not None and (not _is_int(channels) or channels != data_channels):
        _fail("model.in_channels", channels, f"use {data_channels}, the channels of the data (data.channels)")
    if _get(cfg, "model.normalize") is True and _get(cfg, "data.dataset", "mnist") != "mnist":
        _fail(
            "model.normalize",
            True,
            "it normalises with MNIST's constants inside the network (checkpoints from before data=<name>); "
            "use data.normalize=true, which normalises with the dataset's own data.mean and data.std",
        )
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
    m, size = _get(cfg, "shift.max_shift"), data_image_size(cfg)
    if not _is_int(m) or not 0 <= m < size:
        _fail(
            "shift.max_shift",
            m,
            f"use an integer from 0 to {size - 1} (presets: shift=small|medium|large)",
        )
    if _get(cfg, "shift.pattern") == "random" and m == 0:  # mode, pattern and seed: the schema
        _fail("shift.max_shift", m, "the random pattern needs max_shift >= 1")


#: integer ``Trainer`` arguments and their least value (Lightning takes 0, then divides by it mid-run)
TRAINER_MINIMA = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1}
#: ``Trainer`` arguments whose 0 means "train nothing"
TRAINER_NO_TRAINING = ("max_epochs", "max_steps", "limit_train_batches")


def check_trainer(cfg: DictConfig) -> None:
    epochs = _get(cfg, "trainer.max_epochs")
    if epochs is not None and (not _is_int(epochs) or epochs < 0):
        _fail("trainer.max_epochs", epochs, "use an integer >= 0, e.g. trainer.max_epochs=5")
    min_epochs = _get(cfg, "trainer.min_epochs")
    if min_epochs is not None and (not _is_int(min_epochs) or min_epochs < 0):
        _fail("trainer.min_epochs", min_epochs, "use an integer >= 0")
    if _is_int(epochs) and _is_int(min_epochs) and min_epochs > epochs:
        _fail("trainer.min_epochs", min_epochs, f"it must not exceed trainer.max_epochs={epochs}")
    for key, low in TRAINER_MINIMA.items():
        _int_at_least(cfg, f"trainer.{key}", low, required=False)
    check_trains_something(cfg)


def check_trains_something(cfg: DictConfig) -> None:
    """With ``train=true``, refuse trainer settings that train nothing (``trainer.max_epochs=0``): the
    network tested and measured as "trained" would be its initial weights."""
    if _get(cfg, "train") is not True or _get(cfg, "trainer.fast_dev_run"):
        return
    for key in TRAINER_NO_TRAINING:
        value = _get(cfg, f"trainer.{key}")
        if _is_number(value) and value == 0:
            _fail(
                f"trainer.{key}",
                value,
                "it trains nothing, so the network measured as trained would be its initial weights; "
                "use at least 1, or measure the untrained network with experiment=untrained (train=false)",
            )


#: the measurement callback's settings (``conf/callbacks/shift_probe.yaml``)
PROBE = "callbacks.shift_probe"
#: its integer settings: least value and the fix's hint (their types: ``schemas.ShiftProbeConfig``)
PROBE_MINIMA = {
    "batch_size": (1, f", e.g. {PROBE}.batch_size=64"),
    "max_images": (2, " (or null for all the test images)"),
    "untrained_inits": (1, " (default 1)"),
    "lie_derivative_images": (2, f", e.g. {PROBE}.lie_derivative_images=500"),
    "export_pairs": (0, " (0 = off)"),
    "pairs_per_chunk": (1, " (or null: chosen per device)"),
}
LAYERS_FIX = "or null for the model's default layers"


def check_probe(cfg: DictConfig) -> None:
    """The measurement callback's numbers and ``layers`` (their names are checked against the network
    by ``shiftprobe.app.preflight.check_probe_layers`` and by the callback itself)."""
    if not isinstance(_get(cfg, PROBE), DictConfig):
        return
    for key, (low, hint) in PROBE_MINIMA.items():
        _int_at_least(cfg, f"{PROBE}.{key}", low, hint, required=False)
    layers = _get(cfg, f"{PROBE}.layers")
    if layers is None:
        return
    if not isinstance(layers, ListConfig) or not all(isinstance(name, str) for name in layers):
        shown = OmegaConf.to_container(layers) if isinstance(layers, ListConfig) else layers
        _fail(
            f"{PROBE}.layers",
            shown,
            f"use a list of module names, e.g. [conv2,fc1] (quote numeric names: ['0','3']), {LAYERS_FIX}",
        )
    if len(layers) == 0:
        raise ShiftProbeError(
            f"{PROBE}.layers=[] measures nothing: name at least one module, e.g. {PROBE}.layers=[conv2,fc1], "
            f"{LAYERS_FIX} ({PROBE}.layers=null)."
        )


def check_ckpt(cfg: DictConfig, required: bool = False) -> None:
    trust = _get(cfg, "trust_checkpoint")
    if trust is not None and not isinstance(trust, bool):
        _fail("trust_checkpoint", trust, "use true (you trust the files: they may be unpickled) or false (default)")
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
TARGET_SECTIONS = ("model", "data", "optimizer", "trainer", "callbacks.shift_probe")
#: parameters of a section's ``_target_`` that the code passes itself (a setting would be ignored)
PASSED_BY_THE_CODE = {"optimizer": ("params",), "trainer": ("callbacks", "logger")}
#: the top-level keys of train.yaml and eval.yaml (the groups' sections, plain keys, Hydra's own)
TOP_LEVEL_KEYS = (
    "task_name", "seed", "train", "test", "ckpt_path", "trust_checkpoint", "optimized_metric",
    "data", "model", "optimizer", "callbacks", "logger", "trainer", "shift", "transform", "paths", "hydra",
)
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
            raise unknown_key(f"{section}.{key}" if section else str(key), allowed)


def check_top_level_keys(cfg: DictConfig) -> None:
    """Refuse a top-level key no code reads (``+sead=5``); no imports, so the preflight runs it."""
    _refuse_unknown("", list(cfg.keys()), TOP_LEVEL_KEYS)


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys that no code reads (e.g. ``+shift.rotation=15``, ``trainer.max_epoch=3``) at the top
    level and under the user-facing sections (a ``_target_``'s keys: its signature's parameters, which
    imports it: Lightning's ``Trainer`` for ``trainer``)."""
    check_top_level_keys(cfg)
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
        passed = PASSED_BY_THE_CODE.get(section, ())
        _refuse_unknown(section, list(node.keys()), [a for a in allowed if a not in passed])


#: the largest run seed (Lightning's ``seed_everything`` seeds NumPy, which takes 0 .. 2**32 - 1)
MAX_SEED = 2**32 - 1


def validate_config(cfg: DictConfig, require_ckpt: bool = False, known_keys: bool = True) -> None:
    """Check every setting a user may change; raise ``ShiftProbeError`` on the first bad one.

    ``known_keys=False`` leaves out the check of the sections' keys against the ``_target_`` signatures,
    which imports the data module and the callbacks (and so Lightning): ``shiftprobe.app.preflight``.
    The top-level keys are always checked."""
    if known_keys:
        check_known_keys(cfg)
    else:
        check_top_level_keys(cfg)
    check_schemas(cfg)
    seed = _get(cfg, "seed")
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        _fail("seed", seed, f"use an integer from 0 to {MAX_SEED}, e.g. seed=0")
    check_optimizer(cfg)
    check_data(cfg)
    check_model(cfg)
    check_shift(cfg)
    check_transform(cfg)  # the transform group (shiftprobe.app.transform_checks)
    check_lie_derivative(cfg)  # callbacks.shift_probe.lie_derivative* (shiftprobe.app.lie_checks)
    check_trainer(cfg)
    check_probe(cfg)
    check_ckpt(cfg, required=require_ckpt)
