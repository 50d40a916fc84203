"""``check_transform(cfg)``: the ``transform`` group's settings, checked before anything is built.

``transform`` is a list group (``conf/transform/``): ``transform=[translation,rot90,subpixel]`` puts
each chosen option's settings under its own key, ``transform.<option>.<setting>``. Every problem
raises ``ShiftProbeError`` in one line naming the key, the bad value and what to write instead.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from shiftprobe.errors import ShiftProbeError, is_number
from shiftprobe.errors import reject_setting as _fail
from shiftprobe.probe.families import FLIP_AXES, SUBPIXEL_AXES, SUBPIXEL_METHODS
from shiftprobe.probe.resample import SHIFT_MODES
from shiftprobe.probe.translation import IMAGE_SIZE

#: the options of the group and the settings each one reads (translation's are ``shift.*``)
TRANSFORM_OPTIONS: dict[str, tuple[str, ...]] = {
    "translation": (),
    "rot90": (),
    "flip": ("axes",),
    "rotation": ("max_angle", "step"),
    "subpixel": ("max_offset", "step", "axes", "method", "mode"),
}
#: the largest rotation measured, in degrees
MAX_ANGLE = 180.0
EXAMPLE = "transform=[translation,rot90]"


def _number(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _positive(node: DictConfig, key: str, path: str, at_most: float, example: str) -> float:
    value = node.get(key)
    if not _number(value) or not 0 < value <= at_most:
        _fail(f"{path}.{key}", value, f"use a number above 0 and at most {at_most:g}, e.g. {path}.{key}={example}")
    return float(value)


def _step(node: DictConfig, path: str, largest_key: str, largest: float, example: str) -> None:
    step = node.get("step")
    if not _number(step) or not 0 < step <= largest:
        _fail(
            f"{path}.step",
            step,
            f"use a number above 0 and at most {path}.{largest_key}={largest:g}, e.g. {path}.step={example}",
        )


def _one_of(node: DictConfig, key: str, path: str, allowed: tuple[str, ...]) -> None:
    value = node.get(key)
    if value not in allowed:
        _fail(f"{path}.{key}", value, f"use one of {list(allowed)}, e.g. {path}.{key}={allowed[0]}")


def check_flip(node: DictConfig, path: str = "transform.flip") -> None:
    axes = node.get("axes")
    items = [axes] if isinstance(axes, str) else list(axes) if isinstance(axes, (ListConfig, list, tuple)) else None
    shown = OmegaConf.to_container(axes) if isinstance(axes, ListConfig) else axes
    if not items or any(a not in FLIP_AXES for a in items) or len(set(items)) < len(items):
        _fail(
            f"{path}.axes",
            shown,
            f"use a list of distinct values from {list(FLIP_AXES)}, e.g. {path}.axes=[horizontal]",
        )


def check_rotation(node: DictConfig, path: str = "transform.rotation") -> None:
    largest = _positive(node, "max_angle", path, MAX_ANGLE, "45")
    _step(node, path, "max_angle", largest, "5")


def data_image_size(cfg: DictConfig) -> int:
    """The side of the run's images (``data.image_size``; MNIST's 28 when the config names none)."""
    size = OmegaConf.select(cfg, "data.image_size", default=None, throw_on_missing=False)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else IMAGE_SIZE


def check_subpixel(node: DictConfig, path: str = "transform.subpixel", image_size: int = IMAGE_SIZE) -> None:
    largest = _positive(node, "max_offset", path, image_size - 1, "1")
    _step(node, path, "max_offset", largest, "0.125")
    _one_of(node, "axes", path, SUBPIXEL_AXES)
    _one_of(node, "method", path, SUBPIXEL_METHODS)
    _one_of(node, "mode", path, tuple(SHIFT_MODES))


CHECKS = {"flip": check_flip, "rotation": check_rotation, "subpixel": check_subpixel}


def check_transform(cfg: DictConfig) -> None:
    """Refuse an empty list, unknown options or settings, and bad values of ``transform.*``."""
    options = ", ".join(TRANSFORM_OPTIONS)
    if "transform" not in cfg:  # transform=[] leaves no node; a config from before the group has none either
        probe = OmegaConf.select(cfg, "callbacks.shift_probe")
        wanted = OmegaConf.to_container(probe, resolve=False).get("transforms") if OmegaConf.is_dict(probe) else None
        if isinstance(wanted, str) and "${transform" in wanted:
            raise ShiftProbeError(
                f"transform=[] measures nothing: choose at least one family of {options}, e.g. {EXAMPLE}."
            )
        return
    section = cfg.transform
    if section is None or (isinstance(section, DictConfig) and len(section) == 0):
        raise ShiftProbeError(
            f"transform=[] measures nothing: choose at least one family of {options}, e.g. {EXAMPLE}."
        )
    if not isinstance(section, DictConfig):
        _fail("transform", section, f"choose families from the group, e.g. {EXAMPLE}")
    for name in section:
        name = str(name)
        path = f"transform.{name}"
        if name not in TRANSFORM_OPTIONS:
            raise ShiftProbeError(
                f"{path} is not a transformation family: use options of {options}, e.g. {EXAMPLE}."
            )
        node = section[name]
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            _fail(path, node, f"choose it as an option, e.g. transform=[{name}], and set {path}.<setting>=...")
        allowed = TRANSFORM_OPTIONS[name]
        for key in node:
            if key in allowed:
                continue
            if name == "translation":
                fix = "translation's settings are shift.* (e.g. shift.max_shift=2, shift.mode=roll)"
            elif not allowed:
                fix = f"{name} has no settings"
            else:
                fix = f"allowed keys: {', '.join(allowed)}"
            raise ShiftProbeError(
                f"{path}.{key} is not a setting of {path}: nothing would read it; {fix}. "
                f"Remove the override (e.g. drop +{path}.{key}=...)."
            )
        if name == "subpixel":
            check_subpixel(node, path, data_image_size(cfg))
        elif name in CHECKS:
            CHECKS[name](node, path)
