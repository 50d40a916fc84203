"""Numbers and names as results.md, the figures and the console print them: three significant digits,
``n/a`` for a missing figure, ``± h`` for a 95 % interval (``halfwidth``), a family's title and labels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from shiftprobe.probe.stats import Z95

#: values smaller than this (in magnitude, non-zero) are printed in scientific notation
SCIENTIFIC_BELOW = 1e-3
SIG_DIGITS = 3
#: a half-width below this (relative to max(1, |value|)) is round-off: no ± is printed
NEGLIGIBLE_HW = 1e-6
#: shares of images: their intervals end at 0 and 1 (a few images' value ± 1.96 se can pass them)
PROPORTIONS = frozenset({"accuracy", "shifted_acc", "consistency", "consistency_correct", "consistency_two_shifts"})


def finite(value: Any) -> float | None:
    """``value`` as a float, None where it is missing, not a number or not finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(value: Any, sig: int = SIG_DIGITS) -> str:
    """``sig`` significant digits; scientific for tiny values (``3e-7``); ``n/a`` for None/NaN."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    v = finite(value)
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) < SCIENTIFIC_BELOW or abs(v) >= 10 ** (sig + 2):
        mantissa, exponent = f"{v:.{sig - 1}e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:.{sig}g}"


def fmt_pct(value: Any) -> str:
    v = finite(value)
    return "n/a" if v is None else f"{100 * v:.1f}%"


def num(value: Any) -> str:
    """A parameter value as written in a label (``0.5``, ``-45``): ``:g``, or as it is if not a number."""
    v = finite(value)
    return str(value) if v is None else f"{v:g}"


def get(block: Mapping | None, layer: str, metric: str) -> float | None:
    """``block[layer][metric]`` as a finite float, None where missing."""
    return finite(((block or {}).get(layer) or {}).get(metric))


def _stored_ci(entry: Mapping | None, metric: str) -> tuple[float, float] | None:
    ci = entry.get(f"{metric}_ci") if isinstance(entry, Mapping) else None
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
        return None
    lo, hi = finite(ci[0]), finite(ci[1])
    return None if lo is None or hi is None else (lo, hi)


def interval(block: Mapping | None, layer: str, metric: str) -> tuple[float, float] | None:
    """The 95 % interval ``(lo, hi)`` of a score (``<metric>_ci``), None where the block has none."""
    return _stored_ci((block or {}).get(layer), metric)


def run_ci(entry: Mapping | None, metric: str) -> tuple[float, float] | None:
    """A run's own 95 % interval of ``entry[metric]`` (over its test images): the stored ``<metric>_ci``,
    else value ± Z95 · ``<metric>_se``, clipped to [0, 1] for a proportion (``PROPORTIONS``); None with neither."""
    if (ci := _stored_ci(entry, metric)) is None and isinstance(entry, Mapping):
        value, se = finite(entry.get(metric)), finite(entry.get(f"{metric}_se"))
        ci = None if value is None or se is None else (value - Z95 * se, value + Z95 * se)
    return (max(ci[0], 0.0), min(ci[1], 1.0)) if ci is not None and metric in PROPORTIONS else ci


def halfwidth(block: Mapping | None, layer: str, metric: str) -> float | None:
    """Half-width of a metric's 95 % interval: from its ``_ci``, else ``Z95 * _se``; None without either."""
    ci = interval(block, layer, metric)
    if ci is not None:
        return abs(ci[1] - ci[0]) / 2
    se = get(block, layer, f"{metric}_se")
    return None if se is None else Z95 * se


def fmt_pm(value: Any, hw: float | None, pct: bool = False) -> str:
    """``0.436 ± 0.0031`` (``hw``: the 95 % half-width); just the value where ``hw`` is None or round-off."""
    text = fmt_pct(value) if pct else fmt(value)
    if text == "n/a" or hw is None or hw < NEGLIGIBLE_HW * max(1.0, abs(finite(value))):
        return text
    return f"{text} ± {fmt_pct(hw) if pct else fmt(hw, 2)}"


def val(block: Mapping | None, layer: str, metric: str, pct: bool = False) -> str:
    """A metric of a block with its ``±``."""
    return fmt_pm(get(block, layer, metric), halfwidth(block, layer, metric), pct)


def score_text(block: Mapping | None, layer: str, metric: str) -> str:
    """``0.62 [0.6, 0.64]`` for a score with its interval; ``0.95 ± 0.0078`` for a mean; ``n/a``."""
    v, ci = get(block, layer, metric), interval(block, layer, metric)
    if v is not None and ci is not None:
        return f"{fmt(v)} [{fmt(ci[0])}, {fmt(ci[1])}]"
    return fmt_pm(v, halfwidth(block, layer, metric))


def se_pm(value: Any, se: Any) -> str:
    """``value ± Z95 * se`` (just the value without a standard error)."""
    se = finite(se)
    return fmt_pm(value, None if se is None else Z95 * se)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


#: a family's title by its kind
FAMILY_TITLES = {"rot90": "Rotations by 90°", "flip": "Flips", "rotation": "Rotations",
                 "subpixel": "Sub-pixel shifts"}


def kind_of(section: Mapping) -> str:
    return str((section.get("config") or {}).get("kind") or section.get("family") or "")


def title_of(name: str, section: Mapping) -> str:
    return f"{FAMILY_TITLES.get(kind_of(section), name)} (`{name}`)"


def param_label(section: Mapping, param) -> str:
    """A parameter as tables, sentences and figures write it: ``k=1 (90°)``, ``-45°``, ``x 0.5 px``,
    ``(0.5, -0.25) px``."""
    kind = section.get("parameter")
    if isinstance(param, Mapping):
        return f"{param.get('axis')} {num(param.get('offset'))} px"
    if isinstance(param, (list, tuple)) and len(param) == 2:
        return f"({num(param[0])}, {num(param[1])}) px"
    if kind == "k":
        return f"k={param} ({90 * int(param)}°)"
    return {"angle_deg": f"{num(param)}°", "offset_px": f"{num(param)} px"}.get(kind, str(param))
