"""Write the results: ``results.json`` (machine-readable) and ``results.md`` (plain words).

The markdown answers the lab's question layer by layer. Every sentence of its "What this shows"
section is generated from the numbers with the thresholds named below, so changing a number changes
the conclusion; nothing is hard-coded about which layer is equivariant.

Conventions (shared with the measurement engine):

* conv layers are the keys of ``results["strides"]`` (their maps move by ``shift / stride``); their key
  scores are ``equivariance_score`` (sorted, permutation test) and ``aligned_rel`` (exact test, ``None``
  where the stride does not divide the shift); every other layer is scored by ``invariance_score``.
* radius is the Chebyshev radius ``max(|dy|, |dx|)`` of a shift.
* every figure a reader might quote carries ``± h``, the half-width of its 95 % interval over test
  images: ``(hi - lo) / 2`` of ``<metric>_ci`` for the scores (a ratio of two means), ``1.96 * <metric>_se``
  for the other means. Results written before intervals existed print no ``±`` (every new key is
  optional: ``_se``, ``_ci``, ``*_certified``, ``consistency_correct``, ``predictions``,
  ``untrained_inits``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shiftprobe.atomic import write_text
from shiftprobe.probe.thresholds import EXACT_TOL, NEAR_INVARIANT, PARTLY_INVARIANT, SAME_SCORE  # noqa: E402

#: values smaller than this (in magnitude, non-zero) are printed in scientific notation
SCIENTIFIC_BELOW = 1e-3
SIG_DIGITS = 3

#: z of a two-sided 95 % normal interval: ``± Z95 * se`` for a mean without its own ``_ci``
Z95 = 1.96
#: a half-width below this (relative to max(1, |value|)) is round-off: no ± is printed
NEGLIGIBLE_HW = 1e-6
#: the certified-region sorting score of an exact layer is 1; at or above this it "scores 1"
CERTIFIED_ONE = 0.99

#: the key per-radius rows of the markdown table: (metric, label) by layer kind; the exact test
#: is the headline of a conv layer, the sorted score only "the lab's sorting hint"
CONV_KEYS = (
    ("aligned_rel", "aligned_rel (exact test)"),
    ("equivariance_score", "the lab's sorting hint (sorted equivariance)"),
    ("equivariance_score_certified", "sorting hint on the certified region"),
)
INVARIANCE_KEYS = (("invariance_score", "invariance score"), ("rel", "relative change (rel)"))
LOGITS_EXTRA_KEYS = (
    ("consistency", "consistency"),
    ("consistency_correct", "consistency (correctly classified)"),
    ("shifted_acc", "accuracy on shifted"),
)
SUMMARY_KEYS = (
    ("cos", "cos"),
    ("rel", "rel"),
    ("invariance_score", "invariance"),
    ("aligned_rel", "aligned_rel (exact test)"),
    ("equivariance_score", "sorting hint"),
    ("equivariance_score_certified", "sorting hint (certified)"),
    ("consistency", "consistency"),
    ("consistency_correct", "consistency (correct)"),
    ("consistency_two_shifts", "consistency (2 shifts)"),
    ("shifted_acc", "shifted acc"),
)
#: metrics whose row / column is left out of a table when no block of the results has them
OPTIONAL_KEYS = {"equivariance_score_certified", "consistency_correct"}


# -- JSON -----------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None, tuples -> lists, tensors/numpy scalars -> Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"cannot write {type(obj).__name__} to results.json: {obj!r}")


def write_results_json(results: Mapping, path: str | Path) -> Path:
    """Write ``results`` as indented JSON (NaN and infinities become ``null``), atomically; returns the path."""
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` written by :func:`write_results_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# -- number formatting ----------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(value: Any, sig: int = SIG_DIGITS) -> str:
    """3 significant digits; scientific for tiny values (``3e-7``); ``n/a`` for None/NaN."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    v = _finite(value)
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) < SCIENTIFIC_BELOW or abs(v) >= 10 ** (sig + 2):
        mantissa, exponent = f"{v:.{sig - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{v:.{sig}g}"


def fmt_pct(value: Any) -> str:
    v = _finite(value)
    return "n/a" if v is None else f"{100 * v:.1f}%"


# -- intervals ------------------------------------------------------------------------------------
def halfwidth(block: Mapping | None, layer: str, metric: str) -> float | None:
    """Half-width of the 95 % interval of ``block[layer][metric]``; None where results carry none.

    ``(hi - lo) / 2`` of ``<metric>_ci`` when present (the scores), else ``Z95 * <metric>_se``.
    """
    entry = ((block or {}).get(layer) or {}) if block else {}
    ci = entry.get(f"{metric}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _finite(ci[0]), _finite(ci[1])
        if lo is not None and hi is not None:
            return abs(hi - lo) / 2
    se = _finite(entry.get(f"{metric}_se"))
    return None if se is None else Z95 * se


def fmt_pm(value: Any, hw: float | None, pct: bool = False) -> str:
    """``0.436 ± 0.0031`` (``hw``: the 95 % half-width); just the value where ``hw`` is None or 0."""
    text = fmt_pct(value) if pct else fmt(value)
    v = _finite(value)
    if text == "n/a" or hw is None or hw < NEGLIGIBLE_HW * max(1.0, abs(v)):
        return text
    return f"{text} ± {fmt_pct(hw) if pct else fmt(hw, 2)}"


def val(block: Mapping | None, layer: str, metric: str, pct: bool = False) -> str:
    """A metric of a block with its ``±`` (see :func:`halfwidth`)."""
    return fmt_pm(_get(block, layer, metric), halfwidth(block, layer, metric), pct)


def accuracy_halfwidth(results: Mapping) -> float | None:
    """95 % half-width of the unshifted accuracy: ``accuracy_se`` if given, else the binomial se."""
    se = _finite(results.get("accuracy_se"))
    if se is not None:
        return Z95 * se
    p, n = _finite(results.get("accuracy")), _finite(results.get("n_images"))
    if p is None or not n or n < 2 or not 0 <= p <= 1:
        return None
    return Z95 * math.sqrt(p * (1 - p) / n)


def has_intervals(results: Mapping) -> bool:
    """Whether this results dict carries any ``_se`` / ``_ci`` (newer results) at all."""
    for block in (results.get("summary") or {}).values():
        if isinstance(block, Mapping) and any(k.endswith(("_se", "_ci")) for k in block):
            return True
    return False


def _has_metric(results: Mapping, metric: str) -> bool:
    """Whether any group block (summary, radial) of the trained or untrained network has ``metric``."""
    for res in (results, results.get("untrained") or {}):
        blocks = [res.get("summary") or {}] + list(res.get("radial") or [])
        for block in blocks:
            for entry in block.values():
                if isinstance(entry, Mapping) and _finite(entry.get(metric)) is not None:
                    return True
    return False


def exact_tol(results: Mapping) -> float:
    """The relative error below which this measurement counts as exact (depends on its precision)."""
    return _finite((results.get("precision") or {}).get("exact_tol")) or EXACT_TOL


def exactness(aligned_rel: Any, tol: float = EXACT_TOL) -> str:
    """``exact`` / ``not exact`` / ``n/a`` (no exact alignment exists) for one ``aligned_rel``."""
    v = _finite(aligned_rel)
    if v is None:
        return "n/a"
    return "exact" if v < tol else "not exact"


def classifier(results: Mapping) -> str:
    return results.get("classifier") or "logits"


def stride_of(results: Mapping, layer: str):
    stride = (results.get("strides") or {}).get(layer, 1)
    return int(stride) if not isinstance(stride, (list, tuple)) else tuple(int(v) for v in stride)


def _worst(entry: Mapping, layer: str) -> float | None:
    """The largest per-pair aligned_rel of a shift (the mean where the maximum was not recorded)."""
    worst = _get(entry, layer, "aligned_rel_max")
    return worst if worst is not None else _get(entry, layer, "aligned_rel")


# -- reading the structure ------------------------------------------------------------------------
def conv_layers(results: Mapping) -> list[str]:
    return [layer for layer in results.get("layers", []) if layer in (results.get("strides") or {})]


def is_conv(results: Mapping, layer: str) -> bool:
    return layer in (results.get("strides") or {})


def key_metric(results: Mapping, layer: str) -> str:
    """The headline score of a layer: equivariance for conv layers, invariance otherwise."""
    return "equivariance_score" if is_conv(results, layer) else "invariance_score"


def _get(block: Mapping | None, layer: str, metric: str) -> float | None:
    if not block:
        return None
    return _finite((block.get(layer) or {}).get(metric))


def _radii(*blocks: Mapping | None) -> list[int]:
    radii = set()
    for b in blocks:
        if b:
            radii.update(int(row["radius"]) for row in b.get("radial", []))
    return sorted(radii)


def _radial_row(results: Mapping | None, radius: int) -> Mapping | None:
    if not results:
        return None
    for row in results.get("radial", []):
        if int(row["radius"]) == radius:
            return row
    return None


def _nonzero_shifts(results: Mapping) -> list[Mapping]:
    return [s for s in results.get("shifts", []) if (int(s["dy"]), int(s["dx"])) != (0, 0)]


def _weighted_mean(entries: Iterable[Mapping], layer: str, metric: str) -> float | None:
    total = weight = 0.0
    for e in entries:
        v = _get(e, layer, metric)
        if v is not None:
            w = float(e.get("count") or 1)
            total, weight = total + w * v, weight + w
    return total / weight if weight else None


def _stride_phrase(stride) -> str:
    if isinstance(stride, tuple):
        return f"shifts whose components are multiples of {stride[0]} (rows) and {stride[1]} (columns)"
    return "even shifts" if stride == 2 else f"shifts whose both components are multiples of {stride}"


# -- conv-layer exactness -------------------------------------------------------------------------
def conv_exactness(results: Mapping, layer: str) -> dict:
    """What holds exactly for a conv layer, from the per-shift ``aligned_rel`` of non-zero shifts.

    ``kind`` is one of ``every`` (exact at every measured shift), ``stride`` (exact at every shift the
    stride divides, no exact alignment at the rest), ``partial`` / ``none`` (some / no alignable shift is
    exact), ``untestable`` (no measured shift is alignable).
    """
    stride = stride_of(results, layer)
    tol = exact_tol(results)
    shifts = _nonzero_shifts(results)
    alignable = [(s, _worst(s, layer)) for s in shifts]
    unalignable = [s for s, v in alignable if v is None]
    alignable = [(s, v) for s, v in alignable if v is not None]
    exact = [v for _, v in alignable if v < tol]
    worst = max(alignable, key=lambda sv: sv[1]) if alignable else None
    if not alignable:
        kind = "untestable"
    elif len(exact) == len(alignable):
        kind = "every" if not unalignable else "stride"
    elif exact:
        kind = "partial"
    else:
        kind = "none"
    return {
        "layer": layer,
        "stride": stride,
        "kind": kind,
        "n_shifts": len(shifts),
        "n_alignable": len(alignable),
        "n_exact": len(exact),
        "max_aligned": worst[1] if worst else None,
        "tol": tol,
        "no_overlap": sum(int((s.get(layer) or {}).get("aligned_rel_no_overlap") or 0) for s in shifts),
        "worst_shift": (int(worst[0]["dy"]), int(worst[0]["dx"])) if worst else None,
        "eq_alignable": _weighted_mean([s for s, _ in alignable], layer, "equivariance_score"),
        "eq_unalignable": _weighted_mean(unalignable, layer, "equivariance_score"),
    }


def _exactness_phrase(ex: Mapping) -> str:
    """A short phrase: 'exact at every shift', 'exact only at even shifts', ..."""
    kind = ex["kind"]
    if kind == "every":
        return "exact at every shift"
    if kind == "stride":
        return f"exact only at {_stride_phrase(ex['stride'])}"
    if kind == "partial":
        return f"exact at {ex['n_exact']} of {ex['n_alignable']} alignable shifts"
    if kind == "none":
        return "exact at no shift"
    return "not testable (no alignable shift measured, or no certified overlap)"


def _alignable_block(results: Mapping, layer: str, ex: Mapping) -> Mapping | None:
    """The group block pooling exactly the shifts the exact test checks (for its ``±``), if one exists."""
    if ex["n_alignable"] and ex["n_alignable"] == ex["n_shifts"]:
        return results.get("summary")
    if ex["stride"] in (2, (2, 2)):
        return (results.get("parity") or {}).get("even")
    return None


def _circular(results: Mapping, layer: str) -> bool:
    return bool(((results.get("geometry") or {}).get(layer) or {}).get("circular"))


def _sorting_hint(results: Mapping, layer: str, ex: Mapping) -> str:
    """The lab's sorted test, next to its certified-region version, and what their difference means."""
    summary = results.get("summary")
    text = (
        f"The lab's sorting hint (sorted equivariance score, a permutation test) is "
        f"{val(summary, layer, 'equivariance_score')} over all non-zero shifts"
    )
    certified = _get(summary, layer, "equivariance_score_certified")
    aligned_block = _alignable_block(results, layer, ex)
    if 0 < ex["n_alignable"] < ex["n_shifts"]:
        at = (
            val(aligned_block, layer, "equivariance_score")
            if aligned_block is not None
            else fmt(ex["eq_alignable"])
        )
        text += f" ({at} at the {ex['n_alignable']} shifts the exact test checks)"
    roll = results.get("shift_mode") == "roll"
    if roll and _circular(results, layer):
        return text + (
            "; with circular shifts and circular padding nothing enters or leaves the map, so here the hint "
            "is itself an exact test."
        )
    exact_layer = ex["kind"] in ("every", "stride")
    border = (
        "content entering and leaving the frame changes each channel's sorted values"
        if not roll
        else "values wrapping around a map without circular padding change each channel's sorted values"
    )
    if certified is None:
        return text + (
            f". In {results.get('shift_mode')} mode {border}, so the hint stays below 1 even for an exactly "
            "equivariant layer: read it as a hint, not on the scale of an invariance score (this results.json "
            "has no certified-region version of it)."
        )
    text += (
        f"; on the region the exact test certifies it is "
        f"{val(summary, layer, 'equivariance_score_certified')}"
    )
    if certified >= CERTIFIED_ONE:
        return text + (
            (", as an exact layer must" if exact_layer else "")
            + f": the gap is the frame's border, not the layer ({border}). The hint is not on the scale of an "
            "invariance score."
        )
    return text + (
        ": below 1 even where the border plays no part, so the layer's own values change under the shift "
        f"(the rest of the gap is the border: {border})."
    )


def _conv_sentence(results: Mapping, layer: str) -> str:
    """The paragraph of a conv layer: the exact test first, then the lab's sorting hint."""
    ex = conv_exactness(results, layer)
    return f"{_exact_test_sentence(results, layer, ex)} {_sorting_hint(results, layer, ex)}"


def _exact_test_sentence(results: Mapping, layer: str, ex: Mapping) -> str:
    stride, kind = ex["stride"], ex["kind"]
    head = f"**{layer}** (cumulative stride {stride})"
    if ex["no_overlap"]:
        head += f" [{ex['no_overlap']} pairs without a certified overlap left out]"
    verdict = (
        f"(every pair's aligned_rel below {fmt(ex['tol'])}, the round-off of "
        f"{(results.get('precision') or {}).get('dtype', 'float32')})"
    )
    if kind == "every":
        return (
            f"{head} is exactly equivariant at every measured shift: its map moves with the input "
            f"(exact test: largest per-pair aligned_rel {fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, "
            f"below {fmt(ex['tol'])}: exact)."
        )
    if kind == "stride":
        parity = results.get("parity") or {}
        even = _get(parity.get("even"), layer, "aligned_rel")
        detail = ""
        if stride == 2 and parity:
            detail = f" (even: {fmt(even)}, odd: n/a because stride 2 does not divide odd shifts)"
        nearest = _get(parity.get("odd"), layer, "nearest_aligned_rel")
        best = (
            f": the best integer alignment still differs by {val(parity.get('odd'), layer, 'nearest_aligned_rel')} "
            "(nearest_aligned_rel): not exact"
            if nearest is not None
            else ""
        )
        return (
            f"{head} is exactly equivariant only at {_stride_phrase(stride)}{detail}: exact test {verdict}, "
            f"largest per-pair aligned_rel {fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, its map "
            f"moving by shift/{stride}. At the other {ex['n_shifts'] - ex['n_alignable']} shifts no exact "
            f"alignment exists{best}."
        )
    if kind in ("partial", "none"):
        where = (
            "at any alignable shift"
            if kind == "none"
            else f"at only {ex['n_exact']} of {ex['n_alignable']} alignable shifts"
        )
        return (
            f"{head} is **not** exactly equivariant {where}: per-pair aligned_rel reaches {fmt(ex['max_aligned'])} "
            f"(at shift {ex['worst_shift']}, threshold {fmt(ex['tol'])}: not exact)."
        )
    if ex["no_overlap"]:
        return (
            f"{head}: exact equivariance could not be tested: at every measured shift that is a multiple of its "
            f"stride, no map position whose receptive field lies inside the image in both maps remains (its "
            f"receptive field is too wide for this image)."
        )
    return f"{head}: no measured shift is a multiple of its stride, so exact equivariance could not be tested."


# -- invariance layers ----------------------------------------------------------------------------
def invariance_profile(results: Mapping, layer: str) -> dict:
    """Invariance score over the non-zero radii, the worst one, and the verdict (named thresholds)."""
    points = [
        (int(row["radius"]), _get(row, layer, "invariance_score"))
        for row in results.get("radial", [])
        if int(row["radius"]) > 0
    ]
    points = [(r, v) for r, v in points if v is not None]
    rels = [_get(s, layer, "rel") for s in _nonzero_shifts(results)]
    rels = [v for v in rels if v is not None]
    lowest = min((v for _, v in points), default=None)
    if rels and max(rels) < exact_tol(results):
        verdict = "exactly invariant"
    elif lowest is None:
        verdict = "unmeasured"
    elif lowest >= NEAR_INVARIANT:
        verdict = "nearly (not exactly) invariant"
    elif lowest >= PARTLY_INVARIANT:
        verdict = "only partly invariant"
    else:
        verdict = "not invariant"
    return {"points": points, "lowest": lowest, "max_rel": max(rels) if rels else None, "verdict": verdict}


def _trend(results: Mapping, layer: str, metric: str, name: str) -> str:
    """``name falls from a ± h at radius 1 to b ± h at radius 4`` over the non-zero radii."""
    rows = [
        row
        for row in results.get("radial", [])
        if int(row["radius"]) > 0 and _get(row, layer, metric) is not None
    ]
    if not rows:
        return f"{name} n/a"
    first, last = rows[0], rows[-1]
    r0, r1 = int(first["radius"]), int(last["radius"])
    v0, v1 = _get(first, layer, metric), _get(last, layer, metric)
    if r0 == r1:
        return f"{name} {val(first, layer, metric)} at radius {r0}"
    if abs(v1 - v0) <= 1e-3:
        return f"{name} stays at about {val(first, layer, metric)} from radius {r0} to {r1}"
    verb = "falls" if v1 < v0 else "rises"
    return f"{name} {verb} from {val(first, layer, metric)} at radius {r0} to {val(last, layer, metric)} at radius {r1}"


def _direction(a: float | None, b: float | None, hw: float) -> int:
    """+1 / -1 where ``a`` is above / below ``b`` by more than SAME_SCORE and the intervals; 0 otherwise."""
    if a is None or b is None:
        return 0
    margin = max(SAME_SCORE, hw)
    return 1 if a - b > margin else (-1 if b - a > margin else 0)


def _compare(trained: Mapping | None, untrained: Mapping | None, layer: str) -> tuple[int, int]:
    """(direction of the invariance score, direction of rel), trained vs untrained, for one group block."""
    def hw(metric):
        return (halfwidth(trained, layer, metric) or 0.0) + (halfwidth(untrained, layer, metric) or 0.0)

    score = _direction(_get(trained, layer, "invariance_score"), _get(untrained, layer, "invariance_score"), hw("invariance_score"))
    rel = _direction(_get(trained, layer, "rel"), _get(untrained, layer, "rel"), hw("rel"))
    return score, rel


def invariance_disagreement(results: Mapping, layer: str) -> dict | None:
    """Where the invariance score and the relative change tell opposite stories about training.

    The score rising means "more invariant", rel rising means "changes more under shifts": both rising
    (or both falling) disagree. Returns None without an untrained network or when they agree; else the
    summary verdict and the non-zero radii where the two disagree.
    """
    un = results.get("untrained")
    if not un:
        return None
    score, rel = _compare(results.get("summary"), un.get("summary"), layer)
    if not score or score != rel:
        return None
    radii = []
    for row in results.get("radial", []):
        r = int(row["radius"])
        other = _radial_row(un, r)
        if r > 0 and other is not None and (s_r := _compare(row, other, layer))[0] and s_r[0] == s_r[1]:
            radii.append(r)
    return {"direction": score, "radii": radii}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _disagreement_sentence(results: Mapping, layer: str, dis: Mapping) -> str:
    un = results["untrained"]
    summary, usummary = results.get("summary"), un.get("summary")
    up = dis["direction"] > 0
    verb = "raised" if up else "lowered"
    text = (
        f"Training {verb} its invariance score ({val(summary, layer, 'invariance_score')} vs "
        f"{val(usummary, layer, 'invariance_score')} **untrained**{_inits_phrase(results, layer, 'invariance_score')}) "
        f"but also {verb} its relative change under shifts (rel {val(summary, layer, 'rel')} vs "
        f"{val(usummary, layer, 'rel')}"
    )
    if dis["radii"]:
        r = dis["radii"][-1]
        a, b = _radial_row(results, r), _radial_row(un, r)
        text += (
            f"; at radius {r}: score {val(a, layer, 'invariance_score')} vs {val(b, layer, 'invariance_score')}, "
            f"rel {val(a, layer, 'rel')} vs {val(b, layer, 'rel')}"
        )
    text += "): **the two disagree, and both are true**. The score divides by the distance between unrelated images"
    control = _ratio(_get(results.get("control"), layer, "dist"), _get(un.get("control"), layer, "dist"))
    pair = _ratio(_get(summary, layer, "dist"), _get(usummary, layer, "dist"))
    if control is not None and pair is not None:
        text += (
            f", which training multiplied by {fmt(control)} ({fmt(_get(un.get('control'), layer, 'dist'))} → "
            f"{fmt(_get(results.get('control'), layer, 'dist'))}), against {fmt(pair)} for the distance between "
            "shifted copies"
        )
    where = _radii_phrase(dis["radii"])
    if up:
        return text + (
            f": trained {layer} tells different digits apart far better, yet a shift moves its vector by a larger "
            f"fraction of the vector's length{where}. Read the score as \"a shift vs a different digit\", not as "
            "\"less sensitive to shifts\"."
        )
    return text + (
        f": unrelated digits came closer still in trained {layer}, so its score fell although a shift moves its "
        f"vector by a smaller fraction of the vector's length{where}."
    )


def _radii_phrase(radii: list[int]) -> str:
    if not radii:
        return " (over all non-zero shifts)"
    if len(radii) == 1:
        return f" (at radius {radii[0]})"
    if len(radii) == 2:
        return f" (at radii {radii[0]} and {radii[1]})"
    if radii == list(range(radii[0], radii[-1] + 1)):
        return f" (at radii {radii[0]} to {radii[-1]})"
    return f" (at radii {', '.join(map(str, radii))})"


def _inits_phrase(results: Mapping, layer: str, metric: str) -> str:
    """``; over K untrained initialisations: mean m, sd s, range lo–hi`` when K > 1 were measured."""
    inits = results.get("untrained_inits") or {}
    k = inits.get("k")
    stats = (((inits.get("summary") or {}).get(layer) or {}).get(metric)) or {}
    if not k or int(k) < 2 or _finite(stats.get("mean")) is None:
        return ""
    return (
        f"; over {int(k)} untrained initialisations: mean {fmt(stats.get('mean'))}, sd {fmt(stats.get('std'))}, "
        f"range {fmt(stats.get('min'))} to {fmt(stats.get('max'))}"
    )


def _training_effect(results: Mapping, layer: str) -> str:
    """One sentence comparing the layer's invariance with the untrained network's ('' without one)."""
    un = results.get("untrained")
    if not un:
        return ""
    summary, usummary = results.get("summary"), un.get("summary")
    a, b = _get(summary, layer, "invariance_score"), _get(usummary, layer, "invariance_score")
    if a is None or b is None:
        return ""
    dis = invariance_disagreement(results, layer)
    if dis:
        return " " + _disagreement_sentence(results, layer, dis)
    score, _ = _compare(summary, usummary, layer)
    effect = {
        1: "training made it more invariant",
        -1: "training made it less invariant",
        0: "training changed its invariance little",
    }[score]
    rel = ""
    if _get(summary, layer, "rel") is not None and _get(usummary, layer, "rel") is not None:
        rel = f"; rel {val(summary, layer, 'rel')} vs {val(usummary, layer, 'rel')} agrees"
    return (
        f" Over all non-zero shifts its invariance score is {val(summary, layer, 'invariance_score')} trained vs "
        f"{val(usummary, layer, 'invariance_score')} **untrained** ({effect}{rel}"
        f"{_inits_phrase(results, layer, 'invariance_score')})."
    )


def _consistency_at(row: Mapping, layer: str) -> str:
    text = f"{val(row, layer, 'consistency', pct=True)} of images at radius {row['radius']}"
    if _get(row, layer, "consistency_correct") is not None:
        text += f" ({val(row, layer, 'consistency_correct', pct=True)} of the correctly classified ones)"
    return text


def _invariance_sentence(results: Mapping, layer: str) -> str:
    prof = invariance_profile(results, layer)
    text = f"**{layer}** is {prof['verdict']}: {_trend(results, layer, 'invariance_score', 'invariance score')}"
    if prof["verdict"] == "exactly invariant":
        text += f" (max rel {fmt(prof['max_rel'])})"
    elif any(_get(row, layer, "rel") is not None for row in results.get("radial", [])):
        text += f"; {_trend(results, layer, 'rel', 'its relative change under a shift (rel)')}"
    text += "."
    note = ((results.get("geometry") or {}).get(layer) or {}).get("note")
    if note:
        text += f" (A {layer} map, but {note}.)"
    if layer == classifier(results):
        rows = [
            row
            for row in results.get("radial", [])
            if int(row["radius"]) > 0 and _get(row, layer, "consistency") is not None
        ]
        if rows:
            first, last = rows[0], rows[-1]
            part = f" The predicted class is unchanged for {_consistency_at(first, layer)}"
            if last is not first:
                part += f" and {_consistency_at(last, layer)}"
            text += part
            summary = results.get("summary")
            if _get(summary, layer, "shifted_acc") is not None:
                acc = fmt_pm(results.get("accuracy"), accuracy_halfwidth(results))
                text += f"; accuracy on shifted images is {val(summary, layer, 'shifted_acc')} (unshifted {acc})"
            if _get(summary, layer, "consistency_two_shifts") is not None:
                text += (
                    "; two random shifts of one image get the same prediction "
                    f"{val(summary, layer, 'consistency_two_shifts', pct=True)} of the time"
                )
            text += "."
    text += _training_effect(results, layer)
    if layer == classifier(results):
        text += _consistency_comparison(results, layer)
    return text


# -- predictions ----------------------------------------------------------------------------------
def _networks(results: Mapping) -> list[tuple[str, Mapping]]:
    nets = [("trained", results)]
    if results.get("untrained"):
        nets.append(("untrained", results["untrained"]))
    return nets


def _top_class(histogram: Any) -> str | None:
    """The most predicted class of a histogram given as a list (index = class) or a dict."""
    if isinstance(histogram, Mapping) and histogram:
        return str(max(histogram, key=lambda k: _finite(histogram[k]) or 0))
    if isinstance(histogram, (list, tuple)) and histogram:
        values = [_finite(v) or 0 for v in histogram]
        return str(values.index(max(values)))
    return None


def near_constant(res: Mapping) -> bool:
    return bool((res.get("predictions") or {}).get("near_constant"))


def _predictions_phrase(pred: Mapping) -> str:
    cls = _top_class(pred.get("histogram"))
    what = f"class {cls}" if cls is not None else "its most frequent class"
    return (
        f"{what} for {fmt_pct(pred.get('top_class_share'))} of the images (prediction entropy "
        f"{fmt(pred.get('entropy_bits'))} of at most {fmt(pred.get('max_entropy_bits'))} bits)"
    )


def prediction_warnings(results: Mapping) -> list[str]:
    """A warning per network whose predictions are near-constant (``predictions.near_constant``)."""
    out = []
    layer = classifier(results)
    for name, res in _networks(results):
        if not near_constant(res):
            continue
        summary = res.get("summary")
        text = (
            f"**Warning: the {name} network's predictions are near-constant**: it predicts "
            f"{_predictions_phrase(res['predictions'])}, at accuracy {fmt(res.get('accuracy'))}. Its consistency "
            f"({val(summary, layer, 'consistency')}) is therefore meaningless: a network that predicts one class "
            "for every image is perfectly consistent whatever the shift."
        )
        if _get(summary, layer, "consistency_correct") is not None:
            text += (
                " Consistency among correctly classified images, which compares networks of different accuracy "
                "fairly: "
                + "; ".join(
                    f"{n} {val(r.get('summary'), layer, 'consistency_correct')}" for n, r in _networks(results)
                )
                + f". Even this says little for the {name} network: its correctly classified images are mostly of "
                "the class it predicts anyway. Compare it by its layer scores (invariance score, rel) instead."
            )
        else:
            text += (
                " (Consistency among correctly classified images is not in this results.json.) Compare it by its "
                "layer scores (invariance score, rel) instead."
            )
        out.append(text)
    return out


def _consistency_comparison(results: Mapping, layer: str) -> str:
    un = results.get("untrained")
    if not un or _get(un.get("summary"), layer, "consistency") is None:
        return ""
    summary, usummary = results.get("summary"), un.get("summary")
    text = (
        f" Consistency over all non-zero shifts: {val(summary, layer, 'consistency')} trained vs "
        f"{val(usummary, layer, 'consistency')} untrained"
    )
    if _get(summary, layer, "consistency_correct") is not None and _get(usummary, layer, "consistency_correct") is not None:
        text += (
            f"; among correctly classified images {val(summary, layer, 'consistency_correct')} vs "
            f"{val(usummary, layer, 'consistency_correct')}"
        )
    flagged = [name for name, res in _networks(results) if near_constant(res)]
    if flagged:
        text += (
            f" (the {' and '.join(flagged)} network's predictions are near-constant, see the warning: its "
            "consistency says nothing about shifts)"
        )
    return text + "."


# -- untrained comparison -------------------------------------------------------------------------
def _untrained_sentences(results: Mapping) -> list[str]:
    un = results.get("untrained")
    if not un:
        return []
    out = []
    convs = [layer for layer in conv_layers(results) if layer in un.get("layers", results["layers"])]
    if convs:
        mine = {layer: conv_exactness(results, layer) for layer in convs}
        theirs = {layer: conv_exactness(un, layer) for layer in convs}
        desc = ", ".join(f"{layer} {_exactness_phrase(theirs[layer])}" for layer in convs)
        if all(mine[layer]["kind"] == theirs[layer]["kind"] for layer in convs):
            out.append(
                f"The same exact equivariance holds in the **untrained** network ({desc}): "
                "it comes from the architecture, not from training."
            )
        else:
            trained = ", ".join(f"{layer} {_exactness_phrase(mine[layer])}" for layer in convs)
            out.append(
                f"In the **untrained** network exact equivariance differs: {desc} (trained: {trained})."
            )
    return out


# -- how sure -------------------------------------------------------------------------------------
def largest_halfwidth(res: Mapping, layers: Iterable[str] | None = None) -> tuple[float, str, str, int] | None:
    """The widest 95 % half-width of a layer's key score over the non-zero radial rows:
    ``(half-width, layer, metric, radius)``; None where the results carry no interval."""
    best = None
    for row in res.get("radial", []):
        if int(row["radius"]) == 0:
            continue
        for layer in layers if layers is not None else res.get("layers", []):
            metric = key_metric(res, layer)
            hw = halfwidth(row, layer, metric)
            if hw is not None and (best is None or hw > best[0]):
                best = (hw, layer, metric, int(row["radius"]))
    return best


def _metric_words(metric: str) -> str:
    return "sorting hint" if metric == "equivariance_score" else metric.replace("_", " ")


def _intervals_sentence(results: Mapping) -> str:
    n = results.get("n_images")
    if not has_intervals(results):
        return (
            "**How sure**: this results.json carries no standard errors or intervals (it was written by an older "
            "version), so no figure here has a ± and no difference can be called real; measure again to get them."
        )
    widest = largest_halfwidth(results)
    text = (
        f"**How sure**: every ± is the half-width of a 95 % interval over the {n} test images (scores: the "
        "interval of a ratio of two means over the same images; other means: 1.96 standard errors)."
    )
    if widest is not None:
        text += (
            f" radial.png draws them as bands around each profile (the widest on a key score: ±{fmt(widest[0], 2)}, "
            f"{widest[1]}'s {_metric_words(widest[2])} at radius {widest[3]}); heatmaps.png states each panel's "
            "widest."
        )
    if results.get("untrained"):
        k = int((results.get("untrained_inits") or {}).get("k") or 1)
        if k > 1:
            text += (
                f" The untrained network was measured at {k} initialisations; their spread (sd) shows how much an "
                "untrained figure depends on the seed."
            )
        else:
            text += (
                " The untrained network is one initialisation, one sample: its ± covers the images, not the seed "
                "(`callbacks.shift_probe.untrained_inits=K` measures K)."
            )
    return text


def conclusions(results: Mapping) -> list[str]:
    """The generated 'What this shows' paragraphs: any near-constant-prediction warning, one per layer
    (the exact test first for conv layers, invariance for the others, each with its untrained
    comparison), the architecture sentence and how sure the figures are."""
    lines = prediction_warnings(results)
    for layer in results.get("layers", []):
        lines.append(
            _conv_sentence(results, layer)
            if is_conv(results, layer)
            else _invariance_sentence(results, layer)
        )
    lines += _untrained_sentences(results)
    lines.append(_intervals_sentence(results))
    return lines


# -- markdown -------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _layer_keys(results: Mapping, layer: str) -> tuple[tuple[str, str], ...]:
    if is_conv(results, layer):
        return CONV_KEYS
    return INVARIANCE_KEYS + (LOGITS_EXTRA_KEYS if layer == classifier(results) else ())


def _pair(a: str, b: str, has_untrained: bool) -> str:
    return f"{a} / {b}" if has_untrained else a


def _predictions_line(results: Mapping) -> str | None:
    parts = []
    for name, res in _networks(results):
        pred = res.get("predictions") or {}
        if not pred:
            continue
        flag = "**near-constant**: " if pred.get("near_constant") else ""
        parts.append(f"{name}: {flag}{_predictions_phrase(pred)}")
    if not parts:
        return None
    return "- **Predicted classes** (unshifted): " + "; ".join(parts)


def _header_lines(results: Mapping) -> list[str]:
    un = results.get("untrained") or {}
    acc = fmt(results.get("accuracy"))
    if un:
        acc += f" (untrained: {fmt(un.get('accuracy'))})"
    hws = [accuracy_halfwidth(res) for _, res in _networks(results)]
    if hws[0] is not None:
        acc += ", ± " + " and ± ".join(fmt(h, 2) for h in hws if h is not None) + " (95 %)"
    m = results.get("max_shift")
    seconds = _finite(results.get("seconds"))
    total = _finite(results.get("seconds_total"))
    timing = "n/a" if seconds is None else f"{seconds:.1f} s"
    if total is not None and un:
        timing += f" for the trained network, {total:.1f} s with the untrained one"
    subset = results.get("subset") or {}
    if subset.get("how") == "seeded random subset":
        acc_label = f"**Accuracy on the measured subset** (unshifted, {subset['n_images']} of {subset['of']} test images)"
        images = f"{results.get('n_images')}, a seeded random subset (seed {subset.get('seed')}) of the {subset['of']} test images"
    else:
        acc_label = "**Test accuracy** (unshifted)"
        images = str(results.get("n_images"))
    precision = results.get("precision") or {}
    return [
        "# shiftprobe: how translation-invariant / -equivariant is each layer?",
        "",
        f"- {acc_label}: {acc}",
        f"- **Shifts**: mode `{results.get('shift_mode')}`, pattern `{results.get('shift_pattern')}`, "
        f"|dy|, |dx| <= {m} ({len(_nonzero_shifts(results))} non-zero shifts measured)",
        f"- **Images**: {images}; control = unrelated image pairs "
        f"(offset {(results.get('control') or {}).get('offset', 'n/a')})",
        *([f"- **Untrained control's weights**: {results['untrained_origin']}"]
          if un and results.get("untrained_origin") else []),
        f"- **Measurement time**: {timing}",
        f"- **Precision**: the network ran in {precision.get('dtype', 'float32')}; exact means a relative "
        f"error below {fmt(exact_tol(results))}",
        *([line] if (line := _predictions_line(results)) else []),
        "",
        "How to read it: for conv layers the **exact test** is the headline: aligned_rel = relative difference "
        "between f(Tx) and f(x) moved by shift/stride on the certified region (map positions whose receptive "
        "field lies inside the image in both; see the geometry table) "
        f"(< {fmt(exact_tol(results))} = exact; n/a where the stride does not divide the shift). "
        "Invariance score = 1 - dist / control dist (1 = unchanged, 0 = as different as unrelated images). "
        "The lab's sorting hint = 1 - sorted_rel / control sorted_rel, each channel's values sorted: in crop mode "
        "content entering and leaving the frame lowers it even for an exact layer, so it is not on the scale of an "
        "invariance score; 'certified' = the same on the certified region, where an exact layer scores 1. "
        + (
            "± = half-width of the 95 % interval over test images. "
            if has_intervals(results)
            else "No ± : this results.json has no intervals (older version). "
        )
        + "Radius = max(|dy|, |dx|).",
    ]


def results_markdown(results: Mapping) -> str:
    """A readable ``results.md``: header, layer x radius table, parity table, summary, conclusions; then a
    table and sentences per transformation family (``shiftprobe.reporting.family_report``)."""
    from shiftprobe.reporting.family_report import families_only_markdown, family_markdown_lines

    if not results.get("layers") and results.get("families"):  # no translation measured
        return families_only_markdown(results)
    un = results.get("untrained") or None
    has_un = bool(un)
    layers = list(results.get("layers", []))
    lines = _header_lines(results)

    # layer x radius
    radii = _radii(results, un)
    lines += ["", "## Key scores by radius", ""]
    if has_un:
        lines.append("Each cell: **trained / untrained**.")
        lines.append("")
    if has_intervals(results):
        lines.append("± = half-width of the 95 % interval over test images.")
        lines.append("")
    rows = []
    for layer in layers:
        for metric, label in _layer_keys(results, layer):
            if metric in OPTIONAL_KEYS and not _has_metric(results, metric):
                continue
            cells = [
                _pair(
                    val(_radial_row(results, r), layer, metric),
                    val(_radial_row(un, r), layer, metric),
                    has_un,
                )
                for r in radii
            ]
            rows.append([layer, label, *cells])
    lines += _table(["layer", "score", *[f"r={r}" for r in radii]], rows)

    # parity
    convs = conv_layers(results)
    if convs:
        lines += ["", "## What holds exactly: even vs odd shifts (conv layers)", ""]
        lines.append(
            "aligned_rel over non-zero shifts; even = both dy and dx even. "
            f"'exact' means every pair's aligned_rel is below {fmt(exact_tol(results))}; 'n/a' means no exact alignment exists (the stride does not "
            "divide the shift); 'best alignment' is nearest_aligned_rel, the error of the best integer map offset "
            "(defined at every shift). The lab's sorting hint (sorted equivariance score) is shown for comparison"
            + (
                ", on the whole map and on the certified region (where an exact layer scores 1)."
                if _has_metric(results, "equivariance_score_certified")
                else "."
            )
        )
        lines.append("")
        certified = _has_metric(results, "equivariance_score_certified")
        rows = []
        for layer in convs:
            for net_name, res in (("trained", results), ("untrained", un)):
                if not res:
                    continue
                parity = res.get("parity") or {}
                row = [layer, str(results["strides"][layer]), net_name]
                for group in ("even", "odd"):
                    has_group = group in parity
                    row.append(val(parity.get(group), layer, "aligned_rel") if has_group else "not measured")
                    row.append(exactness(_worst(parity.get(group), layer), exact_tol(res)) if has_group else "–")
                row.append(val(parity.get("odd"), layer, "nearest_aligned_rel"))
                for group in ("even", "odd"):
                    row.append(val(parity.get(group), layer, "equivariance_score"))
                    if certified:
                        row.append(val(parity.get(group), layer, "equivariance_score_certified"))
                rows.append(row)
        hint_columns = []
        for group in ("even", "odd"):
            hint_columns.append(f"sorting hint ({group})")
            if certified:
                hint_columns.append(f"certified ({group})")
        lines += _table(
            [
                "layer",
                "stride",
                "network",
                "even: aligned_rel",
                "even",
                "odd: aligned_rel",
                "odd",
                "odd: best alignment",
                *hint_columns,
            ],
            rows,
        )

    # geometry
    geometry = results.get("geometry") or {}
    if geometry:
        lines += ["", "## Geometry inferred from the network", ""]
        lines.append(
            "Stride: how far a map position moves per input pixel; receptive field: the input pixels "
            "[r q + a, r q + b] that map position q depends on (found by autograd on a larger canvas); "
            "interior: the positions whose receptive field lies inside the image (no padding involved)."
        )
        lines.append("")
        rows = []
        for layer in layers:
            g = geometry.get(layer) or {}
            rf, interior = g.get("receptive_field"), g.get("interior")
            rows.append([
                layer,
                g.get("kind", "?"),
                "x".join(map(str, g.get("shape") or [])),
                "–" if not g.get("stride") else "x".join(map(str, g["stride"])),
                "–" if not rf else f"rows {rf['y']}, cols {rf['x']} ({rf['size'][0]}x{rf['size'][1]} px)",
                "–" if not interior else f"rows {interior['y']}, cols {interior['x']}",
                "yes" if g.get("circular") else "no",
                g.get("note") or "",
            ])
        lines += _table(["layer", "kind", "shape", "stride", "receptive field (a, b)", "interior", "circular", "note"], rows)

    # summary
    lines += ["", "## Summary over all non-zero shifts", ""]
    keys = [(k, label) for k, label in SUMMARY_KEYS if k not in OPTIONAL_KEYS or _has_metric(results, k)]
    inits = results.get("untrained_inits") or {}
    k_inits = int(inits.get("k") or 1)
    if has_intervals(results) or k_inits > 1:
        note = "± = half-width of the 95 % interval over test images." if has_intervals(results) else ""
        if k_inits > 1 and un:
            note += (
                f" 'untrained, {k_inits} inits' = mean (sd) over {k_inits} independent untrained initialisations."
            )
        lines += [note.strip(), ""]
    rows = []
    for layer in layers:
        for net_name, res in (("trained", results), ("untrained", un)):
            if not res:
                continue
            summary = res.get("summary")
            block = (summary or {}).get(layer) or {}
            row = [layer, net_name]
            row += [val(summary, layer, key) if key in block else "–" for key, _ in keys]
            rows.append(row)
            if net_name == "untrained" and k_inits > 1:
                stats = (inits.get("summary") or {}).get(layer) or {}
                cells = []
                for key, _ in keys:
                    st = stats.get(key) or {}
                    cells.append(
                        f"{fmt(st.get('mean'))} (sd {fmt(st.get('std'), 2)})" if _finite(st.get("mean")) is not None else "–"
                    )
                rows.append([layer, f"untrained, {k_inits} inits", *cells])
    lines += _table(["layer", "network", *[label for _, label in keys]], rows)

    # conclusions
    lines += ["", "## What this shows", ""]
    lines += [f"- {sentence}" for sentence in conclusions(results)]
    lines.append("")
    lines += family_markdown_lines(results)  # the other families (none with translation only)
    from shiftprobe.reporting.lie_table import lie_derivative_lines  # a local import: it imports this module

    lines += lie_derivative_lines(results)  # the Lie derivative table, when measured
    return "\n".join(lines)


def write_results_markdown(results: Mapping, path: str | Path) -> Path:
    """Write ``results.md`` (:func:`results_markdown`) atomically; returns the path."""
    return write_text(path, results_markdown(results))


def summary_lines(results: Mapping) -> list[str]:
    """A few console lines: setup and accuracy, then one line per layer (trained, untrained)."""
    un = results.get("untrained") or {}
    acc = f"accuracy {fmt(results.get('accuracy'))}"
    if un:
        acc += f" (untrained {fmt(un.get('accuracy'))})"
    seconds = _finite(results.get("seconds"))
    out = [
        f"{acc}; {results.get('shift_mode')} shifts, {results.get('shift_pattern')} pattern, "
        f"|shift| <= {results.get('max_shift')}, {results.get('n_images')} images"
        + ("" if seconds is None else f", {seconds:.1f} s")
    ]
    width = max((len(layer) for layer in results.get("layers", [])), default=0)
    for layer in results.get("layers", []):
        metric = key_metric(results, layer)
        if is_conv(results, layer):  # the exact test first, the sorted score only as the lab's hint
            ex = conv_exactness(results, layer)
            text = f"{layer:<{width}}  {_exactness_phrase(ex)} (max aligned_rel {fmt(ex['max_aligned'])}); sorting hint"
        else:
            text = f"{layer:<{width}}  invariance"
        text += f" {val(results.get('summary'), layer, metric)}"
        if un:
            text += f" (untrained {val(un.get('summary'), layer, metric)})"
        if layer == classifier(results) and not is_conv(results, layer):
            summary = results.get("summary")
            text += f"; consistency {val(summary, layer, 'consistency')}"
            if _get(summary, layer, "consistency_correct") is not None:
                text += f" ({val(summary, layer, 'consistency_correct')} among correct)"
            text += f", shifted acc {val(summary, layer, 'shifted_acc')}"
            for name, res in _networks(results):
                if near_constant(res):
                    text += f"; {name} predictions near-constant"
        out.append(text)
    return out
