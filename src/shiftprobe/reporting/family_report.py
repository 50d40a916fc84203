"""results.md for transformation families (``results["families"]``): per family one table and a few
plain sentences.

The table has a row per transform parameter (and one over all of them) and, per layer, the invariance
score with its 95 % interval; spatial layers add the sorting test's equivariance score (families that
permute pixels) and ``aligned_rel`` (where the family's action on the map is defined); the classifier
adds consistency and accuracy on transformed images. Every sentence is derived from the section's
figures: a score "falls" or "differs" only where the 95 % intervals do not overlap, "invariant" and
"exactly equivariant" only below the section's exactness tolerance.

``families.translation`` is today's translation report (``shiftprobe.reporting.markdown``) and is not
repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping

from shiftprobe.probe.thresholds import EXACT_TOL, SAME_SCORE
from shiftprobe.reporting.markdown import (
    _finite,
    _table,
    fmt,
    fmt_pct,
    fmt_pm,
    halfwidth,
)

#: a family's title by its kind (the Hydra option)
FAMILY_TITLES = {
    "rot90": "Rotations by 90°",
    "flip": "Flips",
    "rotation": "Rotations",
    "subpixel": "Sub-pixel shifts",
}
#: the classifier's extra columns
CLASSIFIER_KEYS = (("consistency", "consistency"), ("shifted_acc", "shifted acc"))


# -- reading a section ------------------------------------------------------------------------------
def kind_of(section: Mapping) -> str:
    return str((section.get("config") or {}).get("kind") or section.get("family") or "")


def title_of(name: str, section: Mapping) -> str:
    title = FAMILY_TITLES.get(kind_of(section), name)
    return f"{title} (`{name}`)"


def tol_of(section: Mapping) -> float:
    return _finite((section.get("precision") or {}).get("exact_tol")) or EXACT_TOL


def is_spatial(section: Mapping, layer: str) -> bool:
    return ((section.get("geometry") or {}).get(layer) or {}).get("kind") == "spatial"


def value(block: Mapping | None, layer: str, metric: str) -> float | None:
    return _finite(((block or {}).get(layer) or {}).get(metric))


def interval(block: Mapping | None, layer: str, metric: str) -> tuple[float, float] | None:
    """The 95 % interval ``[lo, hi]`` of a score (``<metric>_ci``), None where the section has none."""
    ci = ((block or {}).get(layer) or {}).get(f"{metric}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _finite(ci[0]), _finite(ci[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _has(section: Mapping, layer: str, metric: str) -> bool:
    for res in (section, section.get("untrained") or {}):
        if any(value(e, layer, metric) is not None for e in res.get("entries", [])):
            return True
    return False


def param_label(section: Mapping, param) -> str:
    """A parameter as the table and sentences write it: ``k=1 (90°)``, ``-45°``, ``x 0.5 px``, ``(0.5, -0.25) px``."""
    kind = section.get("parameter")
    if isinstance(param, Mapping):
        return f"{param.get('axis')} {_num(param.get('offset'))} px"
    if isinstance(param, (list, tuple)) and len(param) == 2:
        return f"({_num(param[0])}, {_num(param[1])}) px"
    if kind == "k":
        return f"k={param} ({90 * int(param)}°)"
    if kind == "angle_deg":
        return f"{_num(param)}°"
    if kind == "offset_px":
        return f"{_num(param)} px"
    return str(param)


def _num(v) -> str:
    f = _finite(v)
    return str(v) if f is None else f"{f:g}"


def _labels(section: Mapping, params) -> str:
    labels = [param_label(section, p) for p in params]
    return ", ".join(labels[:-1]) + f" and {labels[-1]}" if len(labels) > 1 else "".join(labels)


def all_phrase(section: Mapping) -> str:
    """Every parameter of the section, in words (``every quarter turn (k = 1, 2, 3)``)."""
    kind, entries = kind_of(section), section.get("entries", [])
    params = [e.get("param") for e in entries]
    if kind == "rot90":
        return f"every quarter turn (k = {', '.join(str(p) for p in params)})"
    if kind == "flip":
        return "both flips" if len(params) == 2 else f"the {params[0]} flip" if params else "no flip"
    if kind == "rotation":
        largest = max((abs(_finite(p) or 0) for p in params), default=0)
        return f"every rotation measured (0° < |angle| ≤ {largest:g}°)"
    if kind == "subpixel":
        return "every sub-pixel shift measured"
    return f"every {section.get('parameter', 'parameter')} measured"


# -- the table --------------------------------------------------------------------------------------
def columns(section: Mapping) -> list[tuple[str, str, str]]:
    """``(layer, metric, header)`` of the table, in layer order."""
    out = []
    for layer in section.get("layers", []):
        out.append((layer, "invariance_score", f"{layer} invariance"))
        if is_spatial(section, layer):
            if _has(section, layer, "equivariance_score"):
                out.append((layer, "equivariance_score", f"{layer} sorted equivariance"))
            if _has(section, layer, "aligned_rel"):
                out.append((layer, "aligned_rel", f"{layer} aligned_rel"))
        if layer == section.get("classifier"):
            out += [(layer, m, f"{layer} {label}") for m, label in CLASSIFIER_KEYS if _has(section, layer, m)]
    return out


def score_text(block: Mapping | None, layer: str, metric: str) -> str:
    """``0.62 [0.6, 0.64]`` for a score with its interval; ``0.95 ± 0.0078`` for a mean; ``n/a``."""
    v = value(block, layer, metric)
    ci = interval(block, layer, metric)
    if v is None:
        return "n/a"
    if ci is not None:
        return f"{fmt(v)} [{fmt(ci[0])}, {fmt(ci[1])}]"
    return fmt_pm(v, halfwidth(block, layer, metric))


def cell(block: Mapping | None, untrained_block: Mapping | None, layer: str, metric: str, has_untrained: bool) -> str:
    text = score_text(block, layer, metric)
    if has_untrained:
        text += f" / {fmt(value(untrained_block, layer, metric))}"
    return text


def family_table(section: Mapping) -> list[str]:
    """One row per parameter, then ``all`` (the summary over every parameter)."""
    un = section.get("untrained") or None
    un_entries = {repr(e.get("param")): e for e in (un or {}).get("entries", [])}
    cols = columns(section)
    rows = []
    for entry in section.get("entries", []):
        other = un_entries.get(repr(entry.get("param")))
        rows.append([param_label(section, entry.get("param"))]
                    + [cell(entry, other, layer, metric, bool(un)) for layer, metric, _ in cols])
    summary = section.get("summary") or {}
    rows.append(["**all**"] + [cell(summary, (un or {}).get("summary"), layer, metric, bool(un)) for layer, metric, _ in cols])
    return _table([parameter_header(section), *[header for _, _, header in cols]], rows)


def parameter_header(section: Mapping) -> str:
    kind = section.get("parameter")
    if kind == "offset_px":
        return "offset (oy, ox)" if section.get("dims") == 2 else "offset"
    return {"k": "quarter turns", "angle_deg": "angle", "flip": "flip"}.get(kind, kind or "parameter")


# -- the sentences ----------------------------------------------------------------------------------
def direction(a: tuple[float, float] | None, b: tuple[float, float] | None) -> int | None:
    """+1 when interval ``a`` lies wholly above ``b``, -1 below, 0 when they overlap; None without both."""
    if a is None or b is None:
        return None
    if a[0] > b[1]:
        return 1
    if a[1] < b[0]:
        return -1
    return 0


def compare(a: Mapping | None, b: Mapping | None, layer: str, metric: str = "invariance_score") -> tuple[int | None, str]:
    """Is ``a``'s score above (+1) or below (-1) ``b``'s? Only when their 95 % intervals do not overlap
    and the scores differ by at least ``SAME_SCORE`` (the report's "about the same"); else 0 and why;
    None where an interval is missing."""
    d = direction(interval(a, layer, metric), interval(b, layer, metric))
    if d is None:
        return None, "no intervals in these results"
    if d == 0:
        return 0, "the 95 % intervals overlap"
    if abs(value(a, layer, metric) - value(b, layer, metric)) < SAME_SCORE:
        return 0, f"they differ by less than {SAME_SCORE:g}"
    return d, ""


def _vector_layers(section: Mapping) -> list[str]:
    return [layer for layer in section.get("layers", []) if not is_spatial(section, layer)]


def invariance_sentences(section: Mapping) -> list[str]:
    """Layers whose mean relative change stays below the tolerance at every parameter (or at some)."""
    tol, out = tol_of(section), []
    entries = section.get("entries", [])
    for layer in section.get("layers", []):
        rels = [(e.get("param"), value(e, layer, "rel")) for e in entries]
        if not rels or any(r is None for _, r in rels):
            continue
        below = [p for p, r in rels if r < tol]
        largest = max(r for _, r in rels)
        if len(below) == len(rels):
            out.append(
                f"{layer} is invariant to {all_phrase(section)}: its largest mean relative change (rel) is "
                f"{fmt(largest)}, below the exactness tolerance {fmt(tol)}."
            )
        elif below:
            out.append(
                f"{layer} is invariant at {_labels(section, below)} only (rel below {fmt(tol)}); at the other "
                f"parameters its mean relative change reaches {fmt(largest)}."
            )
    return out


def exact_sentences(section: Mapping) -> list[str]:
    """The exact test of spatial layers (``exact``): at every, some or no parameter."""
    tol, out = tol_of(section), []
    entries = section.get("entries", [])
    for layer, ex in (section.get("exact") or {}).items():
        worst = [(e.get("param"), value(e, layer, "aligned_rel_max")) for e in entries]
        worst = [(p, w) for p, w in worst if w is not None]
        hits = list(ex.get("exact_params") or [])
        if not worst:
            continue
        if ex.get("all"):
            out.append(
                f"{layer} is exactly equivariant to {all_phrase(section)}: its map transforms with the image "
                f"(largest aligned_rel {fmt(max(w for _, w in worst))}, below {fmt(tol)})."
            )
        elif hits:
            misses = [(p, w) for p, w in worst if p not in hits]
            out.append(
                f"{layer} is exactly equivariant at {_labels(section, hits)} only (aligned_rel below {fmt(tol)}); "
                f"not at {_labels(section, [p for p, _ in misses])} (aligned_rel up to {fmt(max(w for _, w in misses))})."
            )
        else:
            out.append(
                f"{layer} is not exactly equivariant at any parameter: at each, the largest aligned_rel over "
                f"the image pairs is at least {fmt(min(w for _, w in worst))} (exact below {fmt(tol)})."
            )
    return out


def _compare_phrase(layer: str, a_label: str, a: Mapping, b_label: str, b: Mapping, metric: str = "invariance_score") -> str | None:
    """``fc1's invariance score falls from 0.9 [..] at 5° to 0.4 [..] at 45°`` (or rises / is the same
    within the intervals)."""
    va, vb = value(a, layer, metric), value(b, layer, metric)
    if va is None or vb is None:
        return None
    ta, tb = score_text(a, layer, metric), score_text(b, layer, metric)
    d, why = compare(b, a, layer, metric)
    name = "invariance score" if metric == "invariance_score" else metric
    if d is None:
        return f"the {name} of {layer} is {ta} at {a_label} and {tb} at {b_label} ({why})"
    if d == 0:
        return f"the {name} of {layer} stays about the same from {a_label} ({ta}) to {b_label} ({tb}): {why}"
    verb = "rises" if d > 0 else "falls"
    return f"the {name} of {layer} {verb} from {ta} at {a_label} to {tb} at {b_label}"


def _numeric_series(section: Mapping) -> dict[str, list[tuple[float, Mapping]]]:
    """Entries of a 1-D numeric family by curve: ``{"": [(angle, entry), ...]}`` for rotations,
    ``{"x": ..., "y": ...}`` for sub-pixel shifts along axes; empty for others."""
    kind = section.get("parameter")
    series: dict[str, list[tuple[float, Mapping]]] = {}
    if section.get("dims", 1) != 1:
        return series
    for e in section.get("entries", []):
        p = e.get("param")
        if isinstance(p, Mapping) and _finite(p.get("offset")) is not None:
            series.setdefault(str(p.get("axis")), []).append((float(p["offset"]), e))
        elif kind in ("angle_deg", "offset_px") and _finite(p) is not None:
            series.setdefault("", []).append((float(p), e))
    for key in series:
        series[key].sort(key=lambda pe: pe[0])
    return series


def trend_sentences(section: Mapping) -> list[str]:
    """Rotations: each vector layer's score at the smallest against the largest angle (positive angles).
    Sub-pixel shifts along axes: the half-pixel shift against the one-pixel shift where both were
    measured, else the smallest against the largest offset."""
    out = []
    series = _numeric_series(section)
    if not series:
        return out
    for layer in _vector_layers(section):
        if "" in series:  # rotations: one side (positive angles if any)
            pts = [(p, e) for p, e in series[""] if p > 0] or [(-p, e) for p, e in series[""] if p < 0]
            pts.sort(key=lambda pe: pe[0])
            if len(pts) >= 2:
                (pa, ea), (pb, eb) = pts[0], pts[-1]
                text = _compare_phrase(layer, param_label(section, pa), ea, param_label(section, pb), eb)
                if text:
                    out.append(text[0].upper() + text[1:] + ".")
            continue
        half_one = {axis: (dict(pts).get(0.5), dict(pts).get(1.0)) for axis, pts in series.items()}
        if all(h is not None and o is not None for h, o in half_one.values()):
            out.append(_half_one_sentence(layer, half_one))
            continue
        for axis, pts in sorted(series.items()):
            if len(pts) >= 2:
                (pa, ea), (pb, eb) = pts[0], pts[-1]
                text = _compare_phrase(layer, f"{pa:g} px", ea, f"{pb:g} px", eb)
                if text:
                    out.append(f"Along {axis}, {text}.")
    return out


def _half_one_sentence(layer: str, half_one: Mapping[str, tuple[Mapping, Mapping]]) -> str:
    """Is ``layer`` more sensitive to a half-pixel shift than to a one-pixel one, per axis?"""
    metric = "invariance_score"
    verdicts, whys, numbers = {}, {}, {}
    for axis, (half, one) in sorted(half_one.items()):
        verdicts[axis], whys[axis] = compare(one, half, layer, metric)
        numbers[axis] = f"{score_text(half, layer, metric)} vs {score_text(one, layer, metric)} along {axis}"
    words = {
        1: f"the half-pixel shift changes {layer} more than the one-pixel shift",
        -1: f"the half-pixel shift changes {layer} less than the one-pixel shift",
        0: f"the half-pixel and one-pixel shifts change {layer} about alike",
        None: f"{layer} at half a pixel and at one pixel",
    }
    if len(set(verdicts.values())) == 1 and len(set(whys.values())) == 1:
        verdict, why = next(iter(verdicts.values())), next(iter(whys.values()))
        text = words[verdict] + (f" ({why})" if why else "")
        return text[0].upper() + text[1:] + ": invariance score " + "; ".join(numbers.values()) + "."
    text = "; ".join(
        f"along {axis}, {words[v]}" + (f" ({whys[axis]})" if whys[axis] else "") + f": {numbers[axis]}"
        for axis, v in verdicts.items()
    )
    return text[0].upper() + text[1:] + "."


def grid_sentences(section: Mapping) -> list[str]:
    """A 2-D family: where each vector layer's score is lowest and highest on the grid."""
    if section.get("dims", 1) != 2:
        return []
    out = []
    for layer in _vector_layers(section):
        scored = [(value(e, layer, "invariance_score"), e) for e in section.get("entries", [])]
        scored = [(v, e) for v, e in scored if v is not None]
        if len(scored) < 2:
            continue
        low = min(scored, key=lambda ve: ve[0])[1]
        high = max(scored, key=lambda ve: ve[0])[1]
        out.append(
            f"The invariance score of {layer} is lowest at {param_label(section, low['param'])} "
            f"({score_text(low, layer, 'invariance_score')}) and highest at {param_label(section, high['param'])} "
            f"({score_text(high, layer, 'invariance_score')})."
        )
    return out


def classifier_sentence(section: Mapping) -> list[str]:
    clf = section.get("classifier")
    summary = section.get("summary") or {}
    c = value(summary, clf, "consistency") if clf else None
    if c is None:
        return []
    worst = min(
        ((value(e, clf, "consistency"), e) for e in section.get("entries", []) if value(e, clf, "consistency") is not None),
        key=lambda ve: ve[0],
    )
    text = (
        f"{clf}: the predicted class stays the same for {fmt_pm(c, halfwidth(summary, clf, 'consistency'), pct=True)} "
        f"of the transformed images on average over {all_phrase(section)}, lowest at "
        f"{param_label(section, worst[1]['param'])} ({fmt_pct(worst[0])})"
    )
    acc = value(summary, clf, "shifted_acc")
    if acc is not None:
        text += (
            f"; accuracy on transformed images {fmt_pm(acc, halfwidth(summary, clf, 'shifted_acc'), pct=True)} "
            f"against {fmt_pct(section.get('accuracy'))} untransformed"
        )
    out = [text + "."]
    for name, res in (("trained", section), ("untrained", section.get("untrained") or {})):
        if (res.get("predictions") or {}).get("near_constant"):
            out.append(
                f"The {name} network's predictions are near-constant (mostly one class): its consistency says "
                "little, a constant classifier is perfectly consistent; read its invariance scores instead."
            )
    return out


def training_sentences(section: Mapping) -> list[str]:
    """Trained against untrained: each vector layer's score over every parameter."""
    un = section.get("untrained") or {}
    if not un:
        return []
    out = []
    family = FAMILY_TITLES.get(kind_of(section), section.get("family", "")).lower()
    for layer in _vector_layers(section):
        a, b = section.get("summary"), un.get("summary")
        if value(a, layer, "invariance_score") is None or value(b, layer, "invariance_score") is None:
            continue
        d, why = compare(a, b, layer)
        numbers = f"{score_text(a, layer, 'invariance_score')} vs {score_text(b, layer, 'invariance_score')} untrained"
        if d is None:
            out.append(f"The invariance score of {layer} over every parameter: {numbers} ({why}).")
        elif d == 0:
            out.append(f"Training left the invariance of {layer} to {family} about the same ({why}): {numbers}.")
        else:
            out.append(f"Training made {layer} {'more' if d > 0 else 'less'} invariant to {family}: {numbers}.")
    return out


def family_sentences(section: Mapping) -> list[str]:
    return (
        invariance_sentences(section)
        + exact_sentences(section)
        + trend_sentences(section)
        + grid_sentences(section)
        + classifier_sentence(section)
        + training_sentences(section)
    )


# -- the markdown -----------------------------------------------------------------------------------
def _settings(section: Mapping) -> str:
    config = {k: v for k, v in (section.get("config") or {}).items() if k not in ("kind", "name")}
    shown = {k: "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else v for k, v in config.items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "none"


def _timing(section: Mapping) -> str:
    parts = []
    for name, res in (("trained", section), ("untrained", section.get("untrained") or {})):
        s = _finite(res.get("seconds"))
        if s is not None:
            parts.append(f"{s:.1f} s ({name})")
    return ", ".join(parts) or "n/a"


def family_section_lines(name: str, section: Mapping) -> list[str]:
    """``## <title>``: settings, images and time, how to read, the table, what it shows."""
    un = section.get("untrained") or {}
    tol = tol_of(section)
    n_params = len(section.get("entries", []))
    acc = fmt_pm(section.get("accuracy"), (lambda se: None if se is None else 1.96 * se)(_finite(section.get("accuracy_se"))))
    lines = [
        f"## {title_of(name, section)}",
        "",
        f"- **Settings**: {_settings(section)}; {n_params} parameter{'s' if n_params != 1 else ''} measured "
        f"(the identity left out)",
        f"- **Images**: {section.get('n_images')}; accuracy (untransformed) {acc}",
        f"- **Measurement time**: {_timing(section)}",
        "",
        "Each cell: trained score [95 % interval]" + (" / untrained" if un else "") + ". Invariance score = "
        "1 - dist / control dist (1 = unchanged, 0 = as different as unrelated images); sorted equivariance = "
        "the sorting test (the family permutes pixels); aligned_rel = relative difference between f(Tx) and f(x) "
        "transformed on the map"
        + (f" (exact below {fmt(tol)})" if (section.get("exact") or {}) else " (a measure, not an exact test)")
        + ".",
        "",
        *family_table(section),
    ]
    notes = [f"{layer}: no map action ({ma['note']})" for layer, ma in (section.get("map_action") or {}).items()
             if not ma.get("defined") and ma.get("note")]
    if notes:
        lines += ["", "aligned_rel is undefined for " + "; ".join(notes) + "."]
    sentences = family_sentences(section)
    if sentences:
        lines += ["", "What this shows:", ""] + [f"- {s}" for s in sentences]
    return lines


def other_families(results: Mapping) -> dict[str, Mapping]:
    """The family sections of ``results["families"]`` besides translation's (which is the top-level
    report), in measurement order."""
    return {
        name: section
        for name, section in (results.get("families") or {}).items()
        if name != "translation" and isinstance(section, Mapping) and "entries" in section
    }


def family_markdown_lines(results: Mapping) -> list[str]:
    """Every family section but translation's (which is the report above it); [] when there is none."""
    lines: list[str] = []
    for name, section in other_families(results).items():
        lines += [*family_section_lines(name, section), ""]
    return lines


def families_only_markdown(results: Mapping) -> str:
    """results.md of a run that measured no translation (e.g. ``transform=rot90``)."""
    subset = results.get("subset") or {}
    lines = ["# shiftprobe: how invariant / equivariant is each layer?", ""]
    if subset.get("how") == "seeded random subset":
        lines.append(f"- **Images**: a seeded random subset (seed {subset.get('seed')}) of {subset.get('n_images')} "
                     f"of the {subset.get('of')} test images")
    if results.get("untrained_origin"):
        lines.append(f"- **Untrained control's weights**: {results['untrained_origin']}")
    total = _finite(results.get("seconds_total"))
    if total is not None:
        lines.append(f"- **Measurement time**: {total:.1f} s for every family, trained and untrained")
    names = list(other_families(results))
    lines.append(f"- **Families**: {', '.join(names)} (no translation measured: add it with transform=[translation,...])")
    lines += ["", *family_markdown_lines(results)]
    from shiftprobe.reporting.lie_table import lie_derivative_lines  # a local import, as markdown.py's

    lines += lie_derivative_lines(results)  # the Lie derivative table, when measured
    return "\n".join(lines)


def family_summary_lines(results: Mapping) -> list[str]:
    """One console line per family (translation's are ``markdown.summary_lines``): its parameters,
    time, and each layer's invariance score over every parameter (trained, untrained)."""
    out = []
    for name, section in other_families(results).items():
        un = (section.get("untrained") or {}).get("summary")
        scores = []
        for layer in section.get("layers", []):
            text = f"{layer} {fmt(value(section.get('summary'), layer, 'invariance_score'))}"
            if un:
                text += f" ({fmt(value(un, layer, 'invariance_score'))})"
            scores.append(text)
        out.append(
            f"{name}: {len(section['entries'])} parameters, {_timing(section)}; invariance score"
            + (" (untrained)" if un else "") + ": " + ", ".join(scores)
        )
    return out
