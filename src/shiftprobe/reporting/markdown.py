"""Write the results: ``results.json`` (machine-readable) and ``results.md`` (plain words).

The markdown answers the lab's question layer by layer. Every sentence of its "What this shows"
section is generated from the numbers with the thresholds named below, so changing a number changes
the conclusion; nothing is hard-coded about which layer is equivariant.

Conventions (shared with the measurement engine):

* conv layers are the keys of ``results["strides"]`` (their maps move by ``shift / stride``); their key
  scores are ``equivariance_score`` (sorted, permutation test) and ``aligned_rel`` (exact test, ``None``
  where the stride does not divide the shift); every other layer is scored by ``invariance_score``.
* radius is the Chebyshev radius ``max(|dy|, |dx|)`` of a shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shiftprobe.probe.thresholds import EXACT_TOL, NEAR_INVARIANT, PARTLY_INVARIANT, SAME_SCORE  # noqa: E402

#: values smaller than this (in magnitude, non-zero) are printed in scientific notation
SCIENTIFIC_BELOW = 1e-3
SIG_DIGITS = 3

#: the key per-radius rows of the markdown table: (metric, label) by layer kind
CONV_KEYS = (
    ("equivariance_score", "equivariance score (sorted)"),
    ("aligned_rel", "aligned_rel (exact test)"),
)
INVARIANCE_KEYS = (("invariance_score", "invariance score"),)
LOGITS_EXTRA_KEYS = (("consistency", "consistency"), ("shifted_acc", "accuracy on shifted"))
SUMMARY_KEYS = (
    ("cos", "cos"),
    ("rel", "rel"),
    ("invariance_score", "invariance"),
    ("equivariance_score", "equivariance (sorted)"),
    ("aligned_rel", "aligned_rel"),
    ("consistency", "consistency"),
    ("consistency_two_shifts", "consistency (2 shifts)"),
    ("shifted_acc", "shifted acc"),
)


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
    """Write ``results`` as indented JSON (NaN and infinities become ``null``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


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
    return "not testable (no alignable shift measured)"


def _conv_sentence(results: Mapping, layer: str) -> str:
    ex = conv_exactness(results, layer)
    stride, kind = ex["stride"], ex["kind"]
    head = f"**{layer}** (cumulative stride {stride})"
    if ex["no_overlap"]:
        head += f" [{ex['no_overlap']} pairs left out: no certified position overlaps]"
    if kind == "every":
        return (
            f"{head} is exactly equivariant at every measured shift: its map moves with the input "
            f"(largest per-pair aligned_rel {fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, below "
            f"{fmt(ex['tol'])})."
        )
    if kind == "stride":
        parity = results.get("parity") or {}
        even = _get(parity.get("even"), layer, "aligned_rel")
        detail = ""
        if stride == 2 and parity:
            detail = f" (even: {fmt(even)}, odd: n/a because stride 2 does not divide odd shifts)"
        nearest = _get(parity.get("odd"), layer, "nearest_aligned_rel")
        best = (
            f" the best integer alignment still differs by {fmt(nearest)} (nearest_aligned_rel), and"
            if nearest is not None
            else ""
        )
        return (
            f"{head} is exactly equivariant only at {_stride_phrase(stride)}{detail}: largest per-pair aligned_rel "
            f"{fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, its map moving by shift/{stride}. "
            f"At the other {ex['n_shifts'] - ex['n_alignable']} shifts no exact alignment exists:{best} the "
            f"sorted equivariance score is {fmt(ex['eq_unalignable'])} (vs {fmt(ex['eq_alignable'])} at the "
            f"alignable shifts)."
        )
    if kind in ("partial", "none"):
        where = (
            "at any alignable shift"
            if kind == "none"
            else f"at only {ex['n_exact']} of {ex['n_alignable']} alignable shifts"
        )
        return (
            f"{head} is **not** exactly equivariant {where}: per-pair aligned_rel reaches {fmt(ex['max_aligned'])} "
            f"(at shift {ex['worst_shift']}, threshold {fmt(ex['tol'])}); sorted equivariance score "
            f"{fmt(_get(results.get('summary'), layer, 'equivariance_score'))} over all non-zero shifts."
        )
    return (
        f"{head}: no measured shift is a multiple of its stride, so exact equivariance could not be tested; "
        f"sorted equivariance score {fmt(_get(results.get('summary'), layer, 'equivariance_score'))}."
    )


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


def _trend(points: list[tuple[int, float]], name: str) -> str:
    if not points:
        return f"{name} n/a"
    (r0, v0), (r1, v1) = points[0], points[-1]
    if len(points) == 1 or r0 == r1:
        return f"{name} {fmt(v0)} at radius {r0}"
    verb = "falls" if v1 < v0 - 1e-3 else ("rises" if v1 > v0 + 1e-3 else "stays at about")
    if verb == "stays at about":
        return f"{name} stays at about {fmt(v0)} from radius {r0} to {r1}"
    return f"{name} {verb} from {fmt(v0)} at radius {r0} to {fmt(v1)} at radius {r1}"


def _invariance_sentence(results: Mapping, layer: str) -> str:
    prof = invariance_profile(results, layer)
    text = f"**{layer}** is {prof['verdict']}: {_trend(prof['points'], 'invariance score')}"
    if prof["verdict"] == "exactly invariant":
        text += f" (max rel {fmt(prof['max_rel'])})"
    text += "."
    note = ((results.get("geometry") or {}).get(layer) or {}).get("note")
    if note:
        text += f" (A {layer} map, but {note}.)"
    if layer == classifier(results):
        cons = [
            (int(row["radius"]), _get(row, layer, "consistency"))
            for row in results.get("radial", [])
            if int(row["radius"]) > 0
        ]
        cons = [(r, v) for r, v in cons if v is not None]
        if cons:
            (r0, c0), (r1, c1) = cons[0], cons[-1]
            part = f"the predicted class is unchanged for {fmt_pct(c0)} of images at radius {r0}"
            if r1 != r0:
                part += f" and {fmt_pct(c1)} at radius {r1}"
            text += " " + part[0].upper() + part[1:]
            summary = results.get("summary")
            acc_s, acc = _get(summary, layer, "shifted_acc"), _finite(results.get("accuracy"))
            if acc_s is not None:
                text += f"; accuracy on shifted images is {fmt(acc_s)} (unshifted {fmt(acc)})"
            two = _get(summary, layer, "consistency_two_shifts")
            if two is not None:
                text += f"; two random shifts of one image get the same prediction {fmt_pct(two)} of the time"
            text += "."
    return text


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
    parts = []
    for layer in results.get("layers", []):
        if is_conv(results, layer):
            continue
        a = _get(results.get("summary"), layer, "invariance_score")
        b = _get(un.get("summary"), layer, "invariance_score")
        if a is None or b is None:
            continue
        if a - b > SAME_SCORE:
            effect = "training made it more invariant"
        elif b - a > SAME_SCORE:
            effect = "training made it less invariant"
        else:
            effect = "training changed its invariance little"
        parts.append(f"{layer} invariance score {fmt(a)} trained vs {fmt(b)} untrained ({effect})")
    if parts:
        out.append("Over all non-zero shifts: " + "; ".join(parts) + ".")
    return out


def conclusions(results: Mapping) -> list[str]:
    """The generated 'What this shows' sentences, one per layer plus the untrained comparison."""
    lines = []
    for layer in results.get("layers", []):
        lines.append(
            _conv_sentence(results, layer)
            if is_conv(results, layer)
            else _invariance_sentence(results, layer)
        )
    return lines + _untrained_sentences(results)


# -- markdown -------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _layer_keys(results: Mapping, layer: str) -> tuple[tuple[str, str], ...]:
    if is_conv(results, layer):
        return CONV_KEYS
    return INVARIANCE_KEYS + (LOGITS_EXTRA_KEYS if layer == classifier(results) else ())


def _pair(a: Any, b: Any, has_untrained: bool) -> str:
    return f"{fmt(a)} / {fmt(b)}" if has_untrained else fmt(a)


def _header_lines(results: Mapping) -> list[str]:
    un = results.get("untrained") or {}
    acc = fmt(results.get("accuracy"))
    if un:
        acc += f" (untrained: {fmt(un.get('accuracy'))})"
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
        f"- **Measurement time**: {timing}",
        f"- **Precision**: the network ran in {precision.get('dtype', 'float32')}; exact means a relative "
        f"error below {fmt(exact_tol(results))}",
        "",
        "Scores: invariance = 1 - dist / control dist, equivariance = 1 - sorted_rel / control sorted_rel "
        "(1 = unchanged, 0 = as different as unrelated images). aligned_rel = relative difference between "
        "f(Tx) and f(x) moved by shift/stride on the certified region (map positions whose receptive field "
        "lies inside the image in both; see the geometry table) "
        f"(< {fmt(exact_tol(results))} = exact; n/a where the stride does not divide the shift). "
        "Radius = max(|dy|, |dx|).",
    ]


def results_markdown(results: Mapping) -> str:
    """A readable ``results.md``: header, layer x radius table, parity table, summary, conclusions."""
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
    rows = []
    for layer in layers:
        for metric, label in _layer_keys(results, layer):
            cells = [
                _pair(
                    _get(_radial_row(results, r), layer, metric),
                    _get(_radial_row(un, r), layer, metric),
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
            "(defined at every shift). The sorted equivariance score is shown for comparison."
        )
        lines.append("")
        rows = []
        for layer in convs:
            for net_name, res in (("trained", results), ("untrained", un)):
                if not res:
                    continue
                parity = res.get("parity") or {}
                row = [layer, str(results["strides"][layer]), net_name]
                for group in ("even", "odd"):
                    v = _get(parity.get(group), layer, "aligned_rel")
                    has_group = group in parity
                    row.append(fmt(v) if has_group else "not measured")
                    row.append(exactness(_worst(parity.get(group), layer), exact_tol(res)) if has_group else "–")
                row.append(fmt(_get(parity.get("odd"), layer, "nearest_aligned_rel")))
                for group in ("even", "odd"):
                    row.append(fmt(_get(parity.get(group), layer, "equivariance_score")))
                rows.append(row)
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
                "equivariance (even)",
                "equivariance (odd)",
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
    rows = []
    for layer in layers:
        for net_name, res in (("trained", results), ("untrained", un)):
            if not res:
                continue
            summary = res.get("summary")
            block = (summary or {}).get(layer) or {}
            row = [layer, net_name]
            row += [fmt(_get(summary, layer, key)) if key in block else "–" for key, _ in SUMMARY_KEYS]
            rows.append(row)
    lines += _table(["layer", "network", *[label for _, label in SUMMARY_KEYS]], rows)

    # conclusions
    lines += ["", "## What this shows", ""]
    lines += [f"- {sentence}" for sentence in conclusions(results)]
    lines.append("")
    return "\n".join(lines)


def write_results_markdown(results: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_markdown(results), encoding="utf-8")
    return path


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
        name = "equivariance" if metric == "equivariance_score" else "invariance"
        a = _get(results.get("summary"), layer, metric)
        text = f"{layer:<{width}}  {name} {fmt(a)}"
        if un:
            text += f" (untrained {fmt(_get(un.get('summary'), layer, metric))})"
        if is_conv(results, layer):
            ex = conv_exactness(results, layer)
            text += f"; {_exactness_phrase(ex)} (max aligned_rel {fmt(ex['max_aligned'])})"
        elif layer == classifier(results):
            text += f"; consistency {fmt(_get(results.get('summary'), layer, 'consistency'))}"
            text += f", shifted acc {fmt(_get(results.get('summary'), layer, 'shifted_acc'))}"
        out.append(text)
    return out
