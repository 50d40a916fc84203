"""Typed schemas of the user-facing config sections: dataclasses with enums, checked with OmegaConf.

Each schema says the type of every key a user sets (``int``, ``bool``, ``float``, one of an enum's
values). ``check_schemas(cfg)`` merges each section of the composed config onto its schema, so
OmegaConf's structured-config validation decides what is well typed (``shift.mode=sideways``,
``shift.max_shift=1.5``, ``data.normalize=maybe``) and the failure becomes the project's one-line error
naming the key, the value and the fix. What a type cannot say (ranges, a random pattern with no
shift) stays in ``shiftprobe.app.config_checks``; keys no code reads are refused there too, from the
``_target_``'s signature, so a schema need not list every key.

The enums' values are the ones the code accepts (``SHIFT_MODES``, ``POOLS`` ...); a test keeps them in
step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Optional, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shiftprobe.errors import ShiftProbeError


class Choice(str, Enum):
    """A string setting with a fixed set of values; prints as its value."""

    def __str__(self) -> str:
        return str(self.value)


class ShiftMode(Choice):
    crop = "crop"  # vacated pixels are 0, content pushed out is lost
    roll = "roll"  # circular (torch.roll)


class ShiftPattern(Choice):
    grid = "grid"  # every (dy, dx) with |dy|, |dx| <= max_shift
    axis = "axis"  # horizontal shifts only
    random = "random"  # one seeded non-zero shift per image


class Pool(Choice):
    max = "max"
    blur = "blur"  # MaxPool stride 1 + binomial BlurPool (R. Zhang 2019)
    aps = "aps"  # MaxPool stride 1 + adaptive polyphase sampling (Chaman & Dokmanic 2021)


class Padding(Choice):
    valid = "valid"
    circular = "circular"


@dataclass
class ShiftConfig:
    """``shift``: the paired-translation test set (``conf/shift/*.yaml``)."""

    max_shift: int = 4
    mode: ShiftMode = ShiftMode.crop
    pattern: ShiftPattern = ShiftPattern.grid
    seed: int = 0


@dataclass
class LabModelConfig:
    """``model`` for the lab CNN and its variants (``model=lab|blurpool|circular``)."""

    pool: Pool = Pool.max
    padding: Padding = Padding.valid
    blur_filter_size: int = 3
    normalize: bool = False
    image_size: int = 28


@dataclass
class DataConfig:
    """``data``: the data module (``conf/data/*.yaml``; the dataset's own checks: ``check_data_settings``)."""

    dataset: str = "mnist"
    root: Optional[str] = "data"  # noqa: UP045 (null: not set, refused by check_dataset naming the fix)
    download: bool = True
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    batch_size: int = 64
    eval_batch_size: Optional[int] = 1000  # noqa: UP045 (OmegaConf reads typing.Optional)
    val_size: int = 5000
    split_seed: int = 0
    train_shift: int = 0
    train_rotate: float = 0.0
    train_flip: bool = False
    normalize: bool = False
    num_workers: int = 0
    seed: Optional[int] = 0  # noqa: UP045


@dataclass
class ShiftProbeConfig:
    """``callbacks.shift_probe``: the measurement callback (``conf/callbacks/shift_probe.yaml``); its
    ``layers`` and ``transforms`` are checked by ``config_checks.check_probe`` and ``transform_checks``."""

    max_shift: int = 4
    mode: ShiftMode = ShiftMode.crop
    pattern: ShiftPattern = ShiftPattern.grid
    seed: int = 0
    batch_size: int = 64
    pairs_per_chunk: Optional[int] = None  # noqa: UP045
    fast_path: bool = True
    untrained: bool = True
    untrained_inits: int = 1
    figures: bool = True
    max_images: Optional[int] = None  # noqa: UP045
    progress: bool = True
    initial_state: Optional[str] = None  # noqa: UP045
    export_pairs: int = 0
    lie_derivative: Any = False  # true, false or a list of generators (shiftprobe.app.lie_checks)
    lie_derivative_layerwise: bool = False
    lie_derivative_images: int = 500


#: the schema of each section, keyed by the section's path; the model's depends on its class
SECTION_SCHEMAS: dict[str, type] = {
    "shift": ShiftConfig,
    "data": DataConfig,
    "callbacks.shift_probe": ShiftProbeConfig,
}
#: model classes (``model._target_``'s last part) whose settings follow ``LabModelConfig``
LAB_MODEL_CLASSES = ("LabCNN", "RotPooledCNN", "FlipPooledCNN")


def _allowed(schema: type, key: str) -> str:
    """What to write instead of a bad value of ``key``, from its type in ``schema``."""
    hints = get_type_hints(schema)
    kind = hints.get(key)
    optional = False
    if getattr(kind, "__origin__", None) is not None or str(kind).startswith("typing.Optional"):
        args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
        optional, kind = True, (args[0] if args else kind)
    default = next((f.default for f in fields(schema) if f.name == key), None)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return f"use one of {[m.value for m in kind]}"
    shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
    example = f", e.g. {key}={shown}"
    text = {bool: "use true or false", int: "use an integer", float: "use a number", str: "use a text value"}.get(
        kind, f"use a value of type {getattr(kind, '__name__', kind)}"
    )
    return text + (" or null" if optional else "") + ("" if kind is bool else example)


def check_section(cfg: DictConfig, path: str, schema: type) -> None:
    """Merge ``cfg[path]`` onto ``schema`` (keys the schema does not name are left to the key check);
    a value of the wrong type raises ``ShiftProbeError`` naming ``path.key``, the value and the fix."""
    node = OmegaConf.select(cfg, path, default=None)
    if not isinstance(node, DictConfig):
        return
    names = {f.name for f in fields(schema)}
    # only the schema's keys are resolved (another key may interpolate a section checked later, e.g.
    # callbacks.shift_probe.transforms: ${transform}, which transform=[] removes)
    raw: dict[str, Any] = OmegaConf.to_container(node, resolve=False)  # type: ignore[assignment]
    values = {key: OmegaConf.select(node, key) for key in raw if key in names}
    typed = OmegaConf.structured(schema)  # merge returns a new config: one schema serves every key
    hints = get_type_hints(schema)
    for key, value in values.items():
        try:
            OmegaConf.merge(typed, {key: value})
        except OmegaConfBaseException:
            raise ShiftProbeError(f"{path}.{key}={value!r} is not allowed: {_allowed(schema, key)}.") from None
        if value is not None and not _exact_type(hints[key], value):
            # OmegaConf would read "no" as False and "3" as 3, but the job receives the text itself
            # ("no" is truthy): booleans and integers must be written as such
            raise ShiftProbeError(f"{path}.{key}={value!r} is not allowed: {_allowed(schema, key)}.")


def _exact_type(kind, value) -> bool:
    """False for a value OmegaConf would convert into a bool or int field (a text, or a bool for an int)."""
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    kind = args[0] if getattr(kind, "__origin__", None) is not None and args else kind
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return True


def check_schemas(cfg: DictConfig) -> None:
    """Type-check every section that has a schema (``SECTION_SCHEMAS``, and ``model`` for the lab's
    classes)."""
    for path, schema in SECTION_SCHEMAS.items():
        check_section(cfg, path, schema)
    target = str(OmegaConf.select(cfg, "model._target_", default="") or "")
    if target.rpartition(".")[2] in LAB_MODEL_CLASSES:
        check_section(cfg, "model", LabModelConfig)
