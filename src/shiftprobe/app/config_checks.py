"""``validate_config(cfg)``: every setting of a run checked before anything is built or trained, each
problem one ``ShiftProbeError`` line naming the key, the value and the fix. A section's schema (a
dataclass) states each key's type and ``rule`` once; what one field cannot say is a cross-setting rule.
Needs torch and OmegaConf, not Lightning (``shiftprobe.app.preflight`` runs it before Lightning loads).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from shiftprobe.data.datasets import check_data_settings
from shiftprobe.errors import (
    ArgumentError,
    ShiftProbeError,
    is_number,
    reject_setting,
    setting_error,
    unknown_key,
)
from shiftprobe.models import allconv, gap, lab, resnet, zoo
from shiftprobe.models.variants import POOLS
from shiftprobe.probe.budget import BUDGET_FIX, parse_memory_budget
from shiftprobe.probe.families import FLIP_AXES, SUBPIXEL_AXES, SUBPIXEL_METHODS
from shiftprobe.probe.generators import GENERATORS, check_channels, check_generators
from shiftprobe.probe.resample import SHIFT_MODES
from shiftprobe.probe.translation import IMAGE_SIZE, SHIFT_PATTERNS

#: the measurement callback's section (``conf/callbacks/shift_probe.yaml``)
PROBE = "callbacks.shift_probe"
LIE = f"{PROBE}.lie_derivative"
#: ``model._target_``'s class -> the paddings it offers (the project's models: their keys are checked)
MODEL_PADDINGS = {
    "LabCNN": lab.PADDINGS, "RotPooledCNN": lab.PADDINGS, "FlipPooledCNN": lab.PADDINGS,
    "GapCNN": gap.PADDINGS, "AllConvCNN": allconv.PADDINGS, "SmallResNet": resnet.PADDINGS,
    "torchvision_model": zoo.PADDINGS, "timm_model": zoo.PADDINGS,
}
#: ``Trainer`` arguments whose 0 trains nothing
TRAINER_NO_TRAINING = ("max_epochs", "max_steps", "limit_train_batches")
TRANSFORM_EXAMPLE = "transform=[translation,rot90]"
LIE_EXAMPLE = f"{LIE}=[translate_x,rotate,scale]"
LAYERS_FIX = "or null for the model's default layers"


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def _last_pixel(cfg: DictConfig) -> int:
    """The last pixel of the run's images (``data.image_size``; MNIST's 28 when the config names none)."""
    size = _get(cfg, "data.image_size")
    return (size if _has_kind(size, int) and size >= 1 else IMAGE_SIZE) - 1


def _model_class(cfg: DictConfig) -> str:
    """The class name in ``model._target_`` (e.g. ``LabCNN``); "" when there is none."""
    return str(_get(cfg, "model._target_", "") or "").rpartition(".")[2]


# -- the rules and the schemas ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """How one setting is checked besides its type: ``low`` / ``high`` (inclusive unless ``open_low`` /
    ``open_high``; ``high`` may name a key of the same section or be a function of the config),
    ``choices`` (or a function of the config), ``fix`` (what the message adds; ``{key}`` is the key) or
    ``text`` (the whole fix)."""

    low: float | None = None
    high: float | str | Callable[[DictConfig], Any] | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | Callable[[DictConfig], tuple] = ()
    fix: str = ""
    text: str = ""


def rule(**kwargs) -> Any:
    """A schema field with its ``Rule`` (no default: the YAML files hold the defaults)."""
    return field(metadata={"rule": Rule(**kwargs)})


# a field without a rule (``root: Any``) is checked by a cross-setting rule, or not at all (a path)
@dataclass
class TopLevel:
    """The top-level keys of ``train.yaml`` and ``eval.yaml`` (and ``TOP_LEVEL_OTHERS``)."""

    task_name: str = rule()
    seed: int = rule(low=0, high=2**32 - 1, fix=", e.g. seed=0")  # seed_everything seeds NumPy
    train: bool = rule()
    test: bool = rule()
    trust_checkpoint: bool = rule(text="use true (you trust the files: they may be unpickled) or false (default)")
    optimized_metric: str | None = rule()


#: the other top-level keys: the sections (their schemas: ``SECTIONS``), ``ckpt_path`` (``check_files``)
TOP_LEVEL_OTHERS = (
    "ckpt_path", "data", "model", "optimizer", "callbacks", "logger", "trainer", "shift", "transform", "paths", "hydra",
)


@dataclass
class OptimizerSettings:
    lr: float = rule(low=0, open_low=True, fix=", e.g. {key}=1e-3")
    weight_decay: float = rule(low=0, fix=", e.g. {key}=0")
    momentum: float = rule(low=0, high=1, open_high=True, fix=", e.g. {key}=0.9")


@dataclass
class DataSettings:
    """``data`` (``dataset``, ``channels``, ``image_size``, ``num_classes``, ``mean``, ``std``: the dataset's
    own check, ``shiftprobe.data.datasets.check_data_settings``)."""

    root: Any
    download: bool = rule()
    normalize: bool = rule()
    batch_size: int = rule(low=1, fix=", e.g. {key}=64")
    eval_batch_size: int = rule(low=1, fix=", e.g. {key}=1000")
    val_size: int = rule(low=1, fix=" and below the number of training images (default 5000)")
    split_seed: int = rule(low=0)
    train_shift: int = rule(low=0, high=_last_pixel, fix=" (0: no augmentation), e.g. {key}=2")
    train_rotate: float = rule(low=0, high=180, fix=" degrees (0: no rotation), e.g. {key}=45")
    train_flip: bool = rule()
    num_workers: int = rule(low=0, fix=" (0 = load in the main process)")
    seed: int | None = rule(fix=" (by default the run seed: {key}=${seed})")


@dataclass
class ModelSettings:
    """``model`` of the project's models (each takes some of these keys: the key check says which)."""

    pool: str = rule(choices=POOLS)
    padding: str = rule(choices=lambda cfg: MODEL_PADDINGS[_model_class(cfg)])
    blur_filter_size: int = rule(low=1, high=7, fix=" (default 3)")
    normalize: bool = rule()
    image_size: int = rule(low=1)
    width: int = rule(low=1, fix=", e.g. {key}=16")
    name: str = rule(text="use an architecture's name, e.g. {key}=resnet18")
    small_input: bool = rule()


@dataclass
class ShiftSettings:
    """``shift``: the paired-translation test set (``conf/shift/*.yaml``)."""

    max_shift: int = rule(low=1, high=_last_pixel, fix=" (presets: shift=small|medium|large)")
    mode: str = rule(choices=SHIFT_MODES)
    pattern: str = rule(choices=SHIFT_PATTERNS)
    seed: int = rule()


@dataclass
class ShiftProbeSettings(ShiftSettings):
    """``callbacks.shift_probe``: the measurement (its shift keys follow ``shift``'s)."""

    transforms: Any
    layers: Any
    batch_size: int = rule(low=1, fix=", e.g. {key}=64")
    pairs_per_chunk: int | None = rule(low=1, fix=" (or null: sized to memory_budget)")
    memory_budget: Any
    fast_path: bool = rule()
    untrained: bool = rule()
    untrained_inits: int = rule(low=1, fix=" (default 1)")
    figures: bool = rule()
    max_images: int | None = rule(low=2, fix=" (or null for all the test images)")
    progress: bool = rule()
    initial_state: Any
    trust_initial_state: bool = rule()
    export_pairs: int = rule(low=0, fix=" (0 = off)")
    lie_derivative: Any
    lie_derivative_layerwise: bool = rule()
    lie_derivative_images: int = rule(low=2, fix=", e.g. {key}=500")
    output_dir: Any


@dataclass
class TrainerSettings:
    """``trainer``: the arguments of Lightning's ``Trainer`` that it takes but cannot use (the others:
    Lightning's own checks)."""

    max_epochs: int | None = rule(low=0, fix=", e.g. {key}=5")
    min_epochs: int | None = rule(low=0)
    accumulate_grad_batches: int = rule(low=1)
    check_val_every_n_epoch: int | None = rule(low=1)


@dataclass
class FlipSettings:
    axes: Any


@dataclass
class RotationSettings:
    max_angle: float = rule(low=0, open_low=True, high=180, fix=", e.g. {key}=45")
    step: float = rule(low=0, open_low=True, high="max_angle", fix=", e.g. {key}=5")


@dataclass
class SubpixelSettings:
    max_offset: float = rule(low=0, open_low=True, high=_last_pixel, fix=", e.g. {key}=1")
    step: float = rule(low=0, open_low=True, high="max_offset", fix=", e.g. {key}=0.125")
    axes: str = rule(choices=SUBPIXEL_AXES)
    method: str = rule(choices=SUBPIXEL_METHODS)
    mode: str = rule(choices=SHIFT_MODES)


#: the options of the ``transform`` group and their settings (translation's are ``shift.*``)
TRANSFORM_OPTIONS: dict[str, type | None] = {
    "translation": None, "rot90": None, "flip": FlipSettings, "rotation": RotationSettings, "subpixel": SubpixelSettings,
}
#: the sections with a schema, in the order they are checked (``model``: ``check_model``)
SECTIONS = (
    ("", TopLevel), ("optimizer", OptimizerSettings), ("data", DataSettings), ("shift", ShiftSettings),
    ("trainer", TrainerSettings), (PROBE, ShiftProbeSettings),
)


# -- checking a value against its field ------------------------------------------------------------------
def _kind(hint) -> tuple[Any, bool]:
    """``(type, nullable)`` of a field's annotation (``int | None`` -> ``(int, True)``)."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return (args[0], True) if args else (hint, False)


def _has_kind(value, kind) -> bool:
    """Exactly of the field's type: OmegaConf would read "no" as False and "3" as 3, but the job would
    receive the text ("no" is truthy), so booleans and integers must be written as such."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return is_number(value) and math.isfinite(value)
    return isinstance(value, str) and value != ""


def _shown(x) -> str:
    return str(int(x)) if is_number(x) and float(x).is_integer() else str(x)


def _bound(bound, cfg: DictConfig, node: DictConfig, path: str) -> tuple[Any, str]:
    """A rule's bound as ``(value, how the message shows it)``."""
    if isinstance(bound, str):
        value = node.get(bound)
        return value, f"{path}.{bound}={_shown(value)}"
    value = bound(cfg) if callable(bound) else bound
    return value, _shown(value)


def _allowed(kind, r: Rule, high: str | None, choices: tuple) -> str:
    """What to write instead of a bad value: the type, the range or the choices, then the rule's fix."""
    if r.text:
        return r.text
    if choices:
        return f"use one of {list(choices)}{r.fix}"
    if kind is bool:
        return "use true or false" + r.fix
    noun = {int: "an integer", float: "a number"}.get(kind, "a text value")
    low = None if r.low is None else _shown(r.low)
    if low == "0" and r.open_low and high is None:
        span = f"use a positive {noun.split()[-1]}"
    elif low is not None and high is not None:
        span = (f"use {noun} above {low} and at most {high}" if r.open_low
                else f"use {noun} in [{low}, {high})" if r.open_high else f"use {noun} from {low} to {high}")
    else:
        span = f"use {noun}" + ("" if low is None else f" > {low}" if r.open_low else f" >= {low}")
    return span + r.fix


def check_value(cfg: DictConfig, node: DictConfig, path: str, name: str, hint, r: Rule) -> None:
    """``node[name]`` against its type ``hint`` and rule ``r``: a one-line ``ShiftProbeError`` unless it fits."""
    key, value = f"{path}.{name}".lstrip("."), node.get(name)
    kind, nullable = _kind(hint)
    if value is None and nullable:
        return
    choices = r.choices(cfg) if callable(r.choices) else r.choices
    high, shown_high = _bound(r.high, cfg, node, path) if r.high is not None else (None, None)
    ok = _has_kind(value, kind) and (not choices or value in choices)
    if ok and r.low is not None:
        ok = value > r.low if r.open_low else value >= r.low
    if ok and high is not None:
        ok = value < high if r.open_high else value <= high
    if not ok:
        reject_setting(key, value, _allowed(kind, r, shown_high, choices).replace("{key}", key))


def _follows(raw) -> bool:
    """A plain interpolation of another setting (``${shift.seed}``): checked where it comes from."""
    return isinstance(raw, str) and re.fullmatch(r"\$\{[\w.]+\}", raw) is not None


def check_section(cfg: DictConfig, path: str, schema: type) -> None:
    """Every key of ``cfg[path]`` that ``schema`` has a rule for (``path`` "": the top level)."""
    node = _get(cfg, path) if path else cfg
    if not isinstance(node, DictConfig):
        return
    raw = OmegaConf.to_container(node, resolve=False)  # other keys may interpolate a missing section
    hints = get_type_hints(schema)
    for f in fields(schema):
        if "rule" in f.metadata and f.name in raw and not _follows(raw[f.name]):
            check_value(cfg, node, path, f.name, hints[f.name], f.metadata["rule"])


def _engine_check(key: str, value, check: Callable, *args, setting: str = "") -> None:
    """``check(*args)``, an engine's own check: its ``ValueError`` as the one line naming ``key`` (and
    ``setting``, the other setting the check read)."""
    try:
        check(*args)
    except ValueError as err:
        raise setting_error(key, value, str(err).rstrip(".") + (f" ({setting})" if setting else "")) from None


# -- cross-setting rules -----------------------------------------------------------------------------------
def check_data(cfg: DictConfig) -> None:
    """The dataset's own check of what its images are, and ``data.root``: a folder."""
    if _get(cfg, "data") is None:
        return
    try:
        spec = check_data_settings(*(_get(cfg, f"data.{k}", d) for k, d in (
            ("dataset", "mnist"), ("channels", 1), ("image_size", 28), ("num_classes", 10),
            ("mean", [lab.MNIST_MEAN]), ("std", [lab.MNIST_STD]))))
    except ArgumentError as err:  # the data module's own check, in its arguments' names
        raise err.setting("data") from None
    env = f"set {spec.root_env} or data.root" if spec.root_env else "set data.root"
    holds = f"{spec.folder}/" if spec.folder else "train/<class>/ and test/<class>/"
    root = _get(cfg, "data.root")
    if root is None or str(root).strip() == "":
        reject_setting("data.root", root, f"{env} to the folder that holds {holds}, e.g. data.root=/path/to/folder")
    if Path(str(root)).exists() and not Path(str(root)).is_dir():
        reject_setting("data.root", str(root), f"it is a file; {env} to the folder that holds {holds}")


def check_model(cfg: DictConfig) -> None:
    """The project's models' keys (``ModelSettings``); any model: its channels are the data's."""
    if _get(cfg, "model") is None:
        return
    if _model_class(cfg) in MODEL_PADDINGS:
        check_section(cfg, "model", ModelSettings)
    channels, data_channels = _get(cfg, "model.in_channels"), _get(cfg, "data.channels", 1)
    if channels is not None and (not _has_kind(channels, int) or channels != data_channels):
        reject_setting("model.in_channels", channels, f"use {data_channels}, the channels of the data (data.channels)")
    if _get(cfg, "model.normalize") is True and _get(cfg, "data.dataset", "mnist") != "mnist":
        reject_setting("model.normalize", True, "it normalises with MNIST's constants inside the network "
                       "(checkpoints from before data=<name>); use data.normalize=true, which normalises with "
                       "the dataset's own data.mean and data.std")
    _check_file(cfg, "model.weights", "no such file; save one with torch.save(model.state_dict(), path)")


def _no_families() -> ShiftProbeError:
    return ShiftProbeError(
        f"transform=[] measures nothing: choose at least one family of {', '.join(TRANSFORM_OPTIONS)}, "
        f"e.g. {TRANSFORM_EXAMPLE}."
    )


def check_transform(cfg: DictConfig) -> None:
    """The ``transform`` list group: at least one family, known options and settings, their values."""
    if "transform" not in cfg:  # transform=[] leaves no node; a config from before the group has none
        probe = _get(cfg, PROBE)
        wanted = OmegaConf.to_container(probe, resolve=False).get("transforms") if OmegaConf.is_dict(probe) else None
        if isinstance(wanted, str) and "${transform" in wanted:
            raise _no_families()
        return
    section = cfg.transform
    if section is None or (isinstance(section, DictConfig) and len(section) == 0):
        raise _no_families()
    if not isinstance(section, DictConfig):
        reject_setting("transform", section, f"choose families from the group, e.g. {TRANSFORM_EXAMPLE}")
    for name in map(str, section):
        path = f"transform.{name}"
        if name not in TRANSFORM_OPTIONS:
            raise ShiftProbeError(f"{path} is not a transformation family: use options of "
                                  f"{', '.join(TRANSFORM_OPTIONS)}, e.g. {TRANSFORM_EXAMPLE}.")
        node = section[name]
        if node is not None and not isinstance(node, DictConfig):
            reject_setting(path, node, f"choose it as an option, e.g. transform=[{name}], and set {path}.<setting>=...")
        _refuse_option_keys(name, list(node or ()))
        if TRANSFORM_OPTIONS[name] is not None:
            check_section(cfg, path, TRANSFORM_OPTIONS[name])
    if isinstance(section.get("flip"), DictConfig):
        check_flip_axes(section.flip.get("axes"))


def _refuse_option_keys(name: str, keys: list) -> None:
    schema = TRANSFORM_OPTIONS[name]
    allowed = [f.name for f in fields(schema)] if schema else []
    for key in keys:
        if key in allowed:
            continue
        fix = ("translation's settings are shift.* (e.g. shift.max_shift=2, shift.mode=roll)" if name == "translation"
               else f"{name} has no settings" if not allowed else f"allowed keys: {', '.join(allowed)}")
        raise ShiftProbeError(f"transform.{name}.{key} is not a setting of transform.{name}: nothing would read "
                              f"it; {fix}. Remove the override (e.g. drop +transform.{name}.{key}=...).")


def check_flip_axes(axes) -> None:
    items = [axes] if isinstance(axes, str) else list(axes) if isinstance(axes, ListConfig) else None
    if not items or any(a not in FLIP_AXES for a in items) or len(set(items)) < len(items):
        shown = OmegaConf.to_container(axes) if isinstance(axes, ListConfig) else axes
        reject_setting("transform.flip.axes", shown, f"use a list of distinct values from {list(FLIP_AXES)}, "
                       "e.g. transform.flip.axes=[horizontal]")


def check_lie_derivative(cfg: DictConfig) -> None:
    """``lie_derivative``: true, false or a list of known generators the data's images allow;
    ``lie_derivative_layerwise`` needs it on."""
    node = _get(cfg, PROBE)
    if not isinstance(node, DictConfig):
        return
    value = node.get("lie_derivative", False)
    if isinstance(value, ListConfig):
        names = OmegaConf.to_container(value)
        if not names or not all(isinstance(n, str) for n in names):
            reject_setting(LIE, names, f"use true, false or a list of generators from {list(GENERATORS)}, "
                           f"e.g. {LIE_EXAMPLE}")
        _engine_check(LIE, names, check_generators, names)
        channels = _get(cfg, "data.channels", 1)
        _engine_check(LIE, names, check_channels, names, channels, setting=f"data.channels={channels}")
    elif value is not None and not isinstance(value, bool):
        reject_setting(LIE, value, f"use true, false or a list of generators, e.g. {LIE_EXAMPLE}")
    if node.get("lie_derivative_layerwise") is True and (value is None or value is False):
        raise ShiftProbeError(f"{LIE}_layerwise=true needs the Lie derivative: set {LIE}=true or e.g. {LIE_EXAMPLE}.")


def check_memory_budget(cfg: DictConfig) -> None:
    """``memory_budget``: bytes, a size such as "2GB", or null."""
    value = _get(cfg, f"{PROBE}.memory_budget")
    try:
        parse_memory_budget(value)
    except ValueError:
        reject_setting(f"{PROBE}.memory_budget", value, BUDGET_FIX.replace("None", "null"))


def check_training(cfg: DictConfig) -> None:
    """``min_epochs`` <= ``max_epochs``; refuse settings that train nothing (``train=true`` with no step,
    ``train=false`` with no checkpoint beside the untrained control): the network tested and measured as
    "trained" would be its initial weights."""
    epochs, least = _get(cfg, "trainer.max_epochs"), _get(cfg, "trainer.min_epochs")
    if epochs is not None and least is not None and least > epochs:
        reject_setting("trainer.min_epochs", least, f"it must not exceed trainer.max_epochs={epochs}")
    if _get(cfg, "train") is False and _get(cfg, "ckpt_path") is None and _get(cfg, f"{PROBE}.untrained") is True:
        reject_setting("train", False, "without ckpt_path nothing is trained or loaded, so the network measured as "
                       "trained and its untrained control would be the same initial weights; measure them once with "
                       "experiment=untrained, or test a checkpoint with ckpt_path=...")
    if _get(cfg, "train") is not True or _get(cfg, "trainer.fast_dev_run"):
        return
    for key in TRAINER_NO_TRAINING:
        value = _get(cfg, f"trainer.{key}")
        if is_number(value) and value == 0:
            reject_setting(f"trainer.{key}", value, "it trains nothing, so the network measured as trained would be "
                           "its initial weights; use at least 1, or measure the untrained network with "
                           "experiment=untrained (train=false)")


def check_layers(cfg: DictConfig) -> None:
    """``callbacks.shift_probe.layers``: null or a non-empty list of module names."""
    layers = _get(cfg, f"{PROBE}.layers")
    if layers is None:
        return
    if not isinstance(layers, ListConfig) or not all(isinstance(name, str) for name in layers):
        shown = OmegaConf.to_container(layers) if isinstance(layers, ListConfig) else layers
        reject_setting(f"{PROBE}.layers", shown, "use a list of module names, e.g. [conv2,fc1] "
                       f"(quote numeric names: ['0','3']), {LAYERS_FIX}")
    if len(layers) == 0:
        raise ShiftProbeError(f"{PROBE}.layers=[] measures nothing: name at least one module, e.g. "
                              f"{PROBE}.layers=[conv2,fc1], {LAYERS_FIX} ({PROBE}.layers=null).")


def build_model(model_cfg):
    """``hydra.utils.instantiate(model_cfg)``; an argument the builder refuses (``ArgumentError``) is the one
    line naming ``model.<argument>``. The preflight and the run build through this."""
    import hydra
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(model_cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, ArgumentError):
            raise err.__cause__.setting("model") from None
        raise


def check_network(cfg: DictConfig) -> None:
    """The network built from ``cfg.model`` (plain ``torch.nn``, ``build_model``): an argument its builder
    refuses (an unknown architecture, a variant it does not offer, images it cannot take) is one line; then
    the layers against it. Any other failure is left to the run."""
    from shiftprobe.probe.capture import resolve_layers

    if _get(cfg, "model._target_") is None:
        return
    try:
        net = build_model(cfg.model)
    except ShiftProbeError:  # build_model's line naming model.<argument>
        raise
    except Exception:  # e.g. a key the model does not take: the run's key check names it
        return
    layers = _get(cfg, f"{PROBE}.layers")
    if layers is None:
        return
    names = list(OmegaConf.to_container(layers))
    _engine_check(f"{PROBE}.layers", names, resolve_layers, net, names)


def check_files(cfg: DictConfig, require_ckpt: bool) -> None:
    """``ckpt_path`` (required by eval.py) and ``callbacks.shift_probe.initial_state``: files."""
    if require_ckpt and _get(cfg, "ckpt_path") is None:
        raise ShiftProbeError(
            "ckpt_path is required: python eval.py ckpt_path=outputs/runs/<date>/<time>/checkpoints/best.ckpt"
        )
    _check_file(cfg, "ckpt_path", "no such checkpoint file; use e.g. outputs/runs/<date>/<time>/checkpoints/"
                "last.ckpt")
    _check_file(cfg, f"{PROBE}.initial_state", "no such file; use a state_dict or .ckpt file, or null for "
                "the initial weights the checkpoint records")


def _check_file(cfg: DictConfig, key: str, fix: str) -> None:
    """``key``, where it is set, names a file."""
    value = _get(cfg, key)
    if value is not None and not Path(str(value)).is_file():
        reject_setting(key, str(value), fix)


# -- keys no code reads --------------------------------------------------------------------------------
#: sections whose keys are the parameters of their ``_target_``
TARGET_SECTIONS = ("model", "data", "optimizer", "trainer", PROBE)
#: parameters of a section's ``_target_`` that the code passes itself (a setting would be ignored)
PASSED_BY_THE_CODE = {"optimizer": ("params",), "trainer": ("callbacks", "logger")}
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def _target_parameters(target: str) -> list[str] | None:
    """The keyword parameters of a ``_target_`` (None when it takes ``**kwargs`` or cannot be imported)."""
    from hydra.utils import get_object

    try:
        params = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # an unknown target is reported when it is instantiated
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _refuse_unknown(section: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed and key not in HYDRA_KEYS:
            raise unknown_key(f"{section}.{key}" if section else str(key), allowed)


def check_top_level_keys(cfg: DictConfig) -> None:
    """Refuse a top-level key no code reads (``+sead=5``) and a ``shift`` key (no imports)."""
    _refuse_unknown("", list(cfg.keys()), [*(f.name for f in fields(TopLevel)), *TOP_LEVEL_OTHERS])
    if isinstance(_get(cfg, "shift"), DictConfig):
        _refuse_unknown("shift", list(cfg.shift.keys()), [f.name for f in fields(ShiftSettings)])


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys no code reads (``+shift.rotation=15``, ``trainer.max_epoch=3``): the top level,
    ``shift`` and each section's ``_target_``'s parameters (imports it: Lightning's ``Trainer``)."""
    check_top_level_keys(cfg)
    for section in TARGET_SECTIONS:
        node = _get(cfg, section)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        allowed = _target_parameters(str(node["_target_"]))
        if allowed is not None:
            passed = PASSED_BY_THE_CODE.get(section, ())
            _refuse_unknown(section, list(node.keys()), [a for a in allowed if a not in passed])


#: the cross-setting rules, in the order they are checked (after the schemas, before ``check_files``)
CROSS_SETTING_RULES = (check_data, check_model, check_transform, check_lie_derivative,
                       check_memory_budget, check_training, check_layers)


def validate_config(cfg: DictConfig, require_ckpt: bool = False, known_keys: bool = True) -> None:
    """Check every setting a user may change; raise ``ShiftProbeError`` on the first bad one.

    ``known_keys=False`` checks the key names of the top level and ``shift`` only (the sections' keys
    are checked against their ``_target_``, which imports Lightning: ``shiftprobe.app.preflight``)."""
    (check_known_keys if known_keys else check_top_level_keys)(cfg)
    for path, schema in SECTIONS:
        check_section(cfg, path, schema)
    for check in CROSS_SETTING_RULES:
        check(cfg)
    check_files(cfg, require_ckpt)
