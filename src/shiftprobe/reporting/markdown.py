"""``results.md`` and the console summary from a results dict of any schema; every sentence of "What
this shows" comes from the numbers through :mod:`shiftprobe.reporting.verdicts`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from shiftprobe.atomic import write_text
from shiftprobe.probe.generators import GENERATORS
from shiftprobe.probe.migrate import migrate
from shiftprobe.probe.stats import Z95
from shiftprobe.reporting import verdicts as v
from shiftprobe.reporting.format import (
    FAMILY_TITLES,
    finite,
    fmt,
    fmt_pct,
    fmt_pm,
    get,
    halfwidth,
    kind_of,
    param_label,
    score_text,
    se_pm,
    table,
    title_of,
    val,
)

#: the certified-region sorting score of an exact layer is 1; at or above this it "scores 1"
CERTIFIED_ONE = 0.99
#: the rows of the table by radius: (metric, label) by layer kind; the exact test leads for conv layers
CONV_KEYS = (("aligned_rel", "aligned_rel (exact test)"),
             ("equivariance_score", "the lab's sorting hint (sorted equivariance)"),
             ("equivariance_score_certified", "sorting hint on the certified region"))
INVARIANCE_KEYS = (("invariance_score", "invariance score"), ("rel", "relative change (rel)"))
CLASSIFIER_ROWS = (("consistency", "consistency"),
                   ("consistency_correct", "consistency (correctly classified)"),
                   ("shifted_acc", "accuracy on shifted"))
SUMMARY_KEYS = (
    ("cos", "cos"), ("rel", "rel"), ("invariance_score", "invariance"),
    ("aligned_rel", "aligned_rel (exact test)"),
    ("equivariance_score", "sorting hint"), ("equivariance_score_certified", "sorting hint (certified)"),
    ("consistency", "consistency"), ("consistency_correct", "consistency (correct)"),
    ("consistency_two_shifts", "consistency (2 shifts)"), ("shifted_acc", "shifted acc"),
)
#: metrics whose row / column is left out of a table when no block of the results has them
OPTIONAL_KEYS = {"equivariance_score_certified", "consistency_correct"}
#: a spatial layer's and the classifier's extra columns of a family table, where measured
SPATIAL_COLUMNS = (("equivariance_score", "sorted equivariance"), ("aligned_rel", "aligned_rel"))
CLASSIFIER_COLUMNS = (("consistency", "consistency"), ("shifted_acc", "shifted acc"))
#: the short unit of each generator's long unit (the Lie derivative table's header)
UNIT_SHORT = {g.unit: g.unit_short for g in GENERATORS.values()}
#: the rows of the totals of the Lie derivative's decomposition: (key, label)
TOTAL_ROWS = (("modules", "sum of the modules"), ("between", "sum between modules"),
              ("end_to_end", "end-to-end (the output's)"), ("unexplained", "end-to-end − both sums"))
#: how many of the largest contributions the decomposition names per generator
TOP = 3
PM_NOTE = "± = half-width of the 95 % interval over test images."


# -- entry points ---------------------------------------------------------------------------------
def results_markdown(results: Mapping) -> str:
    """``results.md``: the translation report (when measured), then a section per other family and the
    Lie derivative's table."""
    results = migrate(results)
    t = v.translation(results)
    lines = _translation_lines(results, t) if t else _families_header(results)
    return "\n".join(lines + family_markdown_lines(results) + lie_derivative_lines(v.lie_section(results)))


def write_results_markdown(results: Mapping, path: str | Path) -> Path:
    """Write ``results.md`` (:func:`results_markdown`) atomically; returns the path."""
    return write_text(path, results_markdown(results))


def summary_lines(results: Mapping) -> list[str]:
    """The console summary: translation's setup and one line per layer (each score beside its ``rel``,
    trained and untrained), then one line per other family."""
    results = migrate(results)
    t = v.translation(results)
    out = _translation_console(t) if t else []
    return out + [_family_console(name, s) for name, s in v.transform_families(results).items()]


# -- translation: header and tables ---------------------------------------------------------------
def accuracy_halfwidth(section: Mapping) -> float | None:
    """95 % half-width of the unshifted accuracy: from ``accuracy_se`` if given, else the binomial se."""
    se = finite(section.get("accuracy_se"))
    if se is not None:
        return Z95 * se
    p, n = finite(section.get("accuracy")), finite(section.get("n_images"))
    if p is None or not n or n < 2 or not 0 <= p <= 1:
        return None
    return Z95 * math.sqrt(p * (1 - p) / n)


def _predictions_phrase(pred: Mapping) -> str:
    hist = pred.get("histogram")
    hist = dict(enumerate(hist)) if isinstance(hist, (list, tuple)) else hist  # class index -> count
    cls = str(max(hist, key=lambda k: finite(hist[k]) or 0)) if isinstance(hist, Mapping) and hist else None
    what = f"class {cls}" if cls is not None else "its most frequent class"
    return (
        f"{what} for {fmt_pct(pred.get('top_class_share'))} of the images (prediction entropy "
        f"{fmt(pred.get('entropy_bits'))} of at most {fmt(pred.get('max_entropy_bits'))} bits)"
    )


def _predictions_line(t: Mapping) -> list[str]:
    parts = [f"{name}: {'**near-constant**: ' if v.near_constant(net) else ''}"
             f"{_predictions_phrase(net['predictions'])}"
             for name, net in v.networks(t) if net.get("predictions")]
    return ["- **Predicted classes** (unshifted): " + "; ".join(parts)] if parts else []


def _header_lines(results: Mapping, t: Mapping) -> list[str]:
    un = t.get("untrained") or {}
    acc = fmt(t.get("accuracy")) + (f" (untrained: {fmt(un.get('accuracy'))})" if un else "")
    hws = [accuracy_halfwidth(net) for _, net in v.networks(t)]
    if hws[0] is not None:
        acc += ", ± " + " and ± ".join(fmt(h, 2) for h in hws if h is not None) + " (95 %)"
    seconds, total = finite(t.get("seconds")), finite(results.get("seconds_total"))
    timing = "n/a" if seconds is None else f"{seconds:.1f} s"
    if total is not None and un:
        timing += f" for the trained network, {total:.1f} s with the untrained one"
    subset = results.get("subset") or {}
    if subset.get("how") == "seeded random subset":
        acc_label = ("**Accuracy on the measured subset** (unshifted, "
                     f"{subset['n_images']} of {subset['of']} test images)")
        images = (f"{t.get('n_images')}, a seeded random subset (seed {subset.get('seed')}) of the "
                  f"{subset['of']} test images")
    else:
        acc_label, images = "**Test accuracy** (unshifted)", str(t.get("n_images"))
    origin = results.get("untrained_origin")
    return [
        "# shiftprobe: how translation-invariant / -equivariant is each layer?",
        "",
        f"- {acc_label}: {acc}",
        f"- **Shifts**: mode `{v.config(t, 'mode')}`, pattern `{v.config(t, 'pattern')}`, "
        f"|dy|, |dx| <= {v.config(t, 'max_shift')} ({len(v.nonzero_shifts(t))} non-zero shifts measured)",
        f"- **Images**: {images}; control = unrelated image pairs "
        f"(offset {(t.get('control') or {}).get('offset', 'n/a')})",
        *([f"- **Untrained control's weights**: {origin}"] if un and origin else []),
        f"- **Measurement time**: {timing}",
        f"- **Precision**: the network ran in {(t.get('precision') or {}).get('dtype', 'float32')}; exact "
        f"means a relative error below {fmt(v.exact_tol(t))}",
        *_predictions_line(t),
        "",
        "How to read it: for conv layers the **exact test** is the headline: aligned_rel = relative "
        "difference between f(Tx) and f(x) moved by shift/stride on the certified region (map positions "
        "whose receptive field lies inside the image in both; see the geometry table) (< "
        f"{fmt(v.exact_tol(t))} = exact; n/a where the stride does not divide the shift). Invariance score = "
        "1 - dist / control dist (1 = unchanged, 0 = as different as unrelated images). The lab's sorting "
        "hint = 1 - sorted_rel / control sorted_rel, each channel's values sorted: in crop mode content "
        "entering and leaving the frame lowers it even for an exact layer, so it is not on the scale of an "
        "invariance score; 'certified' = the same on the certified region, where an exact layer scores 1. "
        + (f"{PM_NOTE} " if v.has_intervals(t)
           else "No ± : this results.json has no intervals (older version). ")
        + "Radius = max(|dy|, |dx|).",
    ]


def _layer_keys(t: Mapping, layer: str) -> tuple[tuple[str, str], ...]:
    if v.is_conv(t, layer):
        return CONV_KEYS
    return INVARIANCE_KEYS + (CLASSIFIER_ROWS if layer == v.classifier(t) else ())


def _radius_table(t: Mapping) -> list[str]:
    un = t.get("untrained") or None
    radii = v.radii(t, un)
    lines = ["", "## Key scores by radius", ""]
    if un:
        lines += ["Each cell: **trained / untrained**.", ""]
    if v.has_intervals(t):
        lines += [PM_NOTE, ""]
    rows = []
    for layer in t.get("layers", []):
        for metric, label in _layer_keys(t, layer):
            if metric in OPTIONAL_KEYS and not v.has_metric(t, metric):
                continue
            cells = [val(v.block(t, "radius", r), layer, metric)
                     + (f" / {val(v.block(un, 'radius', r), layer, metric)}" if un else "") for r in radii]
            rows.append([layer, label, *cells])
    return lines + table(["layer", "score", *[f"r={r}" for r in radii]], rows)


def _parity_row(t: Mapping, net: Mapping, layer: str, name: str, certified: bool) -> list[str]:
    even, odd = v.block(net, "parity", "even"), v.block(net, "parity", "odd")
    row = [layer, str(v.strides(t)[layer]), name]
    for b in (even, odd):
        exact = v.exactness(v.worst(b, layer), v.exact_tol(net))
        row += ["not measured", "–"] if b is None else [val(b, layer, "aligned_rel"), exact]
    hints = ("equivariance_score", "equivariance_score_certified")[: 1 + certified]
    row.append(val(odd, layer, "nearest_aligned_rel"))
    return row + [val(b, layer, m) for b in (even, odd) for m in hints]


def _parity_table(t: Mapping) -> list[str]:
    convs = v.conv_layers(t)
    if not convs:
        return []
    certified = v.has_metric(t, "equivariance_score_certified")
    text = (
        "aligned_rel over non-zero shifts; even = both dy and dx even. 'exact' means every pair's "
        f"aligned_rel is below {fmt(v.exact_tol(t))}; 'n/a' means no exact alignment exists (the stride does "
        "not divide the shift); 'best alignment' is nearest_aligned_rel, the error of the best integer map "
        "offset (defined at every shift). The lab's sorting hint (sorted equivariance score) is shown for "
        "comparison"
        + (", on the whole map and on the certified region (where an exact layer scores 1)." if certified
           else ".")
    )
    rows = [_parity_row(t, net, layer, name, certified) for layer in convs for name, net in v.networks(t)]
    hints = [h for g in ("even", "odd") for h in [f"sorting hint ({g})"] + [f"certified ({g})"] * certified]
    header = ["layer", "stride", "network", "even: aligned_rel", "even", "odd: aligned_rel", "odd",
              "odd: best alignment", *hints]
    return ["", "## What holds exactly: even vs odd shifts (conv layers)", "", text, "", *table(header, rows)]


def _geometry_table(t: Mapping) -> list[str]:
    """The inferred geometry (absent from results written before it existed)."""
    geometry = t.get("geometry") or {}
    if not any("receptive_field" in (g or {}) for g in geometry.values()):
        return []
    rows = []
    for layer in t.get("layers", []):
        g = geometry.get(layer) or {}
        rf, interior = g.get("receptive_field"), g.get("interior")
        rows.append([
            layer, g.get("kind", "?"), "x".join(map(str, g.get("shape") or [])),
            "–" if not g.get("stride") else "x".join(map(str, g["stride"])),
            "–" if not rf else f"rows {rf['y']}, cols {rf['x']} ({rf['size'][0]}x{rf['size'][1]} px)",
            "–" if not interior else f"rows {interior['y']}, cols {interior['x']}",
            "yes" if g.get("circular") else "no", g.get("note") or "",
        ])
    return [
        "", "## Geometry inferred from the network", "",
        "Stride: how far a map position moves per input pixel; receptive field: the input pixels "
        "[r q + a, r q + b] that map position q depends on (found by autograd on a larger canvas); "
        "interior: the positions whose receptive field lies inside the image (no padding involved).",
        "",
        *table(["layer", "kind", "shape", "stride", "receptive field (a, b)", "interior", "circular", "note"],
               rows),
    ]


def _summary_table(t: Mapping) -> list[str]:
    un = t.get("untrained") or None
    keys = [(k, label) for k, label in SUMMARY_KEYS if k not in OPTIONAL_KEYS or v.has_metric(t, k)]
    inits = t.get("untrained_inits") or {}
    k_inits = int(inits.get("k") or 1)
    lines = ["", "## Summary over all non-zero shifts", ""]
    if v.has_intervals(t) or k_inits > 1:
        note = PM_NOTE if v.has_intervals(t) else ""
        if k_inits > 1 and un:
            note += (f" 'untrained, {k_inits} inits' = mean (sd) over {k_inits} independent untrained "
                     "initialisations.")
        lines += [note.strip(), ""]
    rows = []
    for layer in t.get("layers", []):
        for name, net in v.networks(t):
            summary = net.get("summary")
            entry = (summary or {}).get(layer) or {}
            rows.append([layer, name, *[val(summary, layer, k) if k in entry else "–" for k, _ in keys]])
            if name == "untrained" and k_inits > 1:
                stats = (inits.get("summary") or {}).get(layer) or {}
                cells = [f"{fmt(st['mean'])} (sd {fmt(st.get('std'), 2)})" if finite(st.get("mean"))
                         is not None else "–" for st in (stats.get(k) or {} for k, _ in keys)]
                rows.append([layer, f"untrained, {k_inits} inits", *cells])
    return lines + table(["layer", "network", *[label for _, label in keys]], rows)


def _translation_lines(results: Mapping, t: Mapping) -> list[str]:
    lines = _header_lines(results, t) + _radius_table(t) + _parity_table(t) + _geometry_table(t)
    lines += _summary_table(t) + ["", "## What this shows", ""]
    return lines + [f"- {sentence}" for sentence in _conclusions(t)] + [""]


# -- translation: what this shows -----------------------------------------------------------------
def conclusions(results: Mapping) -> list[str]:
    """The 'What this shows' paragraphs of results (any schema) with translation measured: warnings, one per
    layer, the architecture sentence and how sure the figures are."""
    return _conclusions(v.translation(migrate(results)))


def _conclusions(t: Mapping) -> list[str]:
    lines = prediction_warnings(t)
    lines += [_conv_sentence(t, layer) if v.is_conv(t, layer) else _invariance_sentence(t, layer)
              for layer in t.get("layers", [])]
    return lines + _untrained_sentences(t) + [_intervals_sentence(t)]


def _stride_phrase(stride) -> str:
    if isinstance(stride, tuple):
        return f"shifts whose components are multiples of {stride[0]} (rows) and {stride[1]} (columns)"
    return "even shifts" if stride == 2 else f"shifts whose both components are multiples of {stride}"


def exactness_phrase(ex: Mapping) -> str:
    """A short phrase: 'exact at every shift', 'exact only at even shifts', ..."""
    return {
        "every": "exact at every shift",
        "stride": f"exact only at {_stride_phrase(ex['stride'])}",
        "partial": f"exact at {ex['n_exact']} of {ex['n_alignable']} alignable shifts",
        "none": "exact at no shift",
    }.get(ex["kind"], "not testable (no alignable shift measured, or no certified overlap)")


def _conv_sentence(t: Mapping, layer: str) -> str:
    ex = v.conv_exactness(t, layer)
    return f"{_exact_test_sentence(t, layer, ex)} {_sorting_hint(t, layer, ex)}"


def _sorting_hint(t: Mapping, layer: str, ex: Mapping) -> str:
    """The lab's sorted test, next to its certified-region version, and what their difference means."""
    summary = t.get("summary")
    text = (
        f"The lab's sorting hint (sorted equivariance score, a permutation test) is "
        f"{val(summary, layer, 'equivariance_score')} over all non-zero shifts"
    )
    certified = get(summary, layer, "equivariance_score_certified")
    if 0 < ex["n_alignable"] < ex["n_shifts"]:
        aligned = v.alignable_block(t, ex)
        at = val(aligned, layer, "equivariance_score") if aligned is not None else fmt(ex["eq_alignable"])
        text += f" ({at} at the {ex['n_alignable']} shifts the exact test checks)"
    mode = v.config(t, "mode")
    if mode == "roll" and v.circular(t, layer):
        return text + (
            "; with circular shifts and circular padding nothing enters or leaves the map, so here the hint "
            "is itself an exact test."
        )
    border = (
        "content entering and leaving the frame changes each channel's sorted values" if mode != "roll"
        else "values wrapping around a map without circular padding change each channel's sorted values"
    )
    if certified is None:
        return text + (
            f". In {mode} mode {border}, so the hint stays below 1 even for an exactly equivariant layer: "
            "read it as a hint, not on the scale of an invariance score (this results.json has no "
            "certified-region version of it)."
        )
    text += "; on the region the exact test certifies it is " + val(summary, layer, CONV_KEYS[2][0])
    if certified >= CERTIFIED_ONE:
        return text + (
            (", as an exact layer must" if ex["kind"] in ("every", "stride") else "")
            + f": the gap is the frame's border, not the layer ({border}). The hint is not on the scale "
            "of an invariance score."
        )
    return text + (
        ": below 1 even where the border plays no part, so the layer's own values change under the shift "
        f"(the rest of the gap is the border: {border})."
    )


def _stride_sentence(t: Mapping, layer: str, ex: Mapping, head: str) -> str:
    stride = ex["stride"]
    even, odd = v.block(t, "parity", "even"), v.block(t, "parity", "odd")
    detail = ""
    if stride == 2 and v.blocks(t, "parity"):
        detail = (f" (even: {fmt(get(even, layer, 'aligned_rel'))}, odd: n/a because stride 2 does not "
                  "divide odd shifts)")
    best = (
        f": the best integer alignment still differs by {val(odd, layer, 'nearest_aligned_rel')} "
        "(nearest_aligned_rel): not exact"
        if get(odd, layer, "nearest_aligned_rel") is not None else ""
    )
    verdict = (
        f"(every pair's aligned_rel below {fmt(ex['tol'])}, the round-off of "
        f"{(t.get('precision') or {}).get('dtype', 'float32')})"
    )
    return (
        f"{head} is exactly equivariant only at {_stride_phrase(stride)}{detail}: exact test {verdict}, "
        f"largest per-pair aligned_rel {fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, its map "
        f"moving by shift/{stride}. At the other {ex['n_shifts'] - ex['n_alignable']} shifts no exact "
        f"alignment exists{best}."
    )


def _exact_test_sentence(t: Mapping, layer: str, ex: Mapping) -> str:
    kind = ex["kind"]
    head = f"**{layer}** (cumulative stride {ex['stride']})"
    if ex["no_overlap"]:
        head += f" [{ex['no_overlap']} pairs without a certified overlap left out]"
    if kind == "every":
        return (
            f"{head} is exactly equivariant at every measured shift: its map moves with the input (exact "
            f"test: largest per-pair aligned_rel {fmt(ex['max_aligned'])} over {ex['n_alignable']} shifts, "
            f"below {fmt(ex['tol'])}: exact)."
        )
    if kind == "stride":
        return _stride_sentence(t, layer, ex, head)
    if kind in ("partial", "none"):
        where = ("at any alignable shift" if kind == "none"
                 else f"at only {ex['n_exact']} of {ex['n_alignable']} alignable shifts")
        return (
            f"{head} is **not** exactly equivariant {where}: per-pair aligned_rel reaches "
            f"{fmt(ex['max_aligned'])} (at shift {ex['worst_shift']}, threshold {fmt(ex['tol'])}: not exact)."
        )
    if ex["no_overlap"]:
        return (
            f"{head}: exact equivariance could not be tested: at every measured shift that is a multiple of "
            "its stride, no map position whose receptive field lies inside the image in both maps remains "
            "(its receptive field is too wide for this image)."
        )
    return (f"{head}: no measured shift is a multiple of its stride, so exact equivariance could not be "
           "tested.")


def _trend(t: Mapping, layer: str, metric: str, name: str) -> str:
    """``name falls from a ± h at radius 1 to b ± h at radius 4`` over the non-zero radii."""
    rows = v.radius_points(t, layer, metric)
    if not rows:
        return f"{name} n/a"
    first, last = rows[0], rows[-1]
    r0, r1 = int(first["param"]), int(last["param"])
    v0, v1 = get(first, layer, metric), get(last, layer, metric)
    if r0 == r1:
        return f"{name} {val(first, layer, metric)} at radius {r0}"
    if abs(v1 - v0) <= 1e-3:
        return f"{name} stays at about {val(first, layer, metric)} from radius {r0} to {r1}"
    verb = "falls" if v1 < v0 else "rises"
    return (f"{name} {verb} from {val(first, layer, metric)} at radius {r0} to {val(last, layer, metric)} at "
            f"radius {r1}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


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


def _inits_phrase(t: Mapping, layer: str, metric: str) -> str:
    """``; over K untrained initialisations: mean m, sd s, range lo to hi`` when K > 1 were measured."""
    inits = t.get("untrained_inits") or {}
    k = inits.get("k")
    stats = (((inits.get("summary") or {}).get(layer) or {}).get(metric)) or {}
    if not k or int(k) < 2 or finite(stats.get("mean")) is None:
        return ""
    return (
        f"; over {int(k)} untrained initialisations: mean {fmt(stats.get('mean'))}, sd "
        f"{fmt(stats.get('std'))}, range {fmt(stats.get('min'))} to {fmt(stats.get('max'))}"
    )


def _vs(a: Mapping | None, b: Mapping | None, layer: str, metric: str, template: str = "{}") -> str:
    """``template`` with ``a's value vs b's`` (each with its ``±``) at ``{}``; ``""`` without either."""
    if get(a, layer, metric) is None or get(b, layer, metric) is None:
        return ""
    return template.format(f"{val(a, layer, metric)} vs {val(b, layer, metric)}")


def _disagreement_sentence(t: Mapping, layer: str, dis: Mapping) -> str:
    un = t["untrained"]
    summary, usummary = t.get("summary"), un.get("summary")
    verb = "raised" if dis["direction"] > 0 else "lowered"
    text = (
        f"Training {verb} its invariance score ({_vs(summary, usummary, layer, 'invariance_score')} "
        f"**untrained**{_inits_phrase(t, layer, 'invariance_score')}) but also {verb} its relative change "
        f"under shifts (rel {_vs(summary, usummary, layer, 'rel')}"
    )
    if dis["radii"]:
        r = dis["radii"][-1]
        a, b = v.block(t, "radius", r), v.block(un, "radius", r)
        text += (f"; at radius {r}: score {_vs(a, b, layer, 'invariance_score')}, "
                 f"rel {_vs(a, b, layer, 'rel')}")
    text += ("): **the two disagree, and both are true**. The score divides by the distance between "
             "unrelated images")
    control = _ratio(get(t.get("control"), layer, "dist"), get(un.get("control"), layer, "dist"))
    pair = _ratio(get(summary, layer, "dist"), get(usummary, layer, "dist"))
    if control is not None and pair is not None:
        text += (
            f", which training multiplied by {fmt(control)} ({fmt(get(un.get('control'), layer, 'dist'))} → "
            f"{fmt(get(t.get('control'), layer, 'dist'))}), against {fmt(pair)} for the distance between "
            "shifted copies"
        )
    where = _radii_phrase(dis["radii"])
    if dis["direction"] > 0:
        return text + (
            f": trained {layer} tells different digits apart far better, yet a shift moves its vector by a "
            f"larger fraction of the vector's length{where}. Read the score as \"a shift vs a different "
            "digit\", not as \"less sensitive to shifts\"."
        )
    return text + (
        f": unrelated digits came closer still in trained {layer}, so its score fell although a shift moves "
        f"its vector by a smaller fraction of the vector's length{where}."
    )


def _training_effect(t: Mapping, layer: str) -> str:
    """One sentence comparing the layer's invariance with the untrained network's ('' without one)."""
    un = t.get("untrained")
    if not un:
        return ""
    summary, usummary = t.get("summary"), un.get("summary")
    if get(summary, layer, "invariance_score") is None or get(usummary, layer, "invariance_score") is None:
        return ""
    dis = v.invariance_disagreement(t, layer)
    if dis:
        return " " + _disagreement_sentence(t, layer, dis)
    score, _ = v.training_effect(summary, usummary, layer)
    effect = {1: "training made it more invariant", -1: "training made it less invariant",
              0: "training changed its invariance little"}[score]
    rel = _vs(summary, usummary, layer, "rel", "; rel {} agrees")
    return (
        f" Over all non-zero shifts its invariance score is {val(summary, layer, 'invariance_score')} "
        f"trained vs {val(usummary, layer, 'invariance_score')} **untrained** "
        f"({effect}{rel}{_inits_phrase(t, layer, 'invariance_score')})."
    )


def _if_measured(block: Mapping | None, layer: str, metric: str, template: str, pct: bool = False) -> str:
    """``template`` with the metric (and its ``±``) at ``{}``; ``""`` where the block does not have it."""
    return "" if get(block, layer, metric) is None else template.format(val(block, layer, metric, pct))


def _consistency_at(b: Mapping, layer: str) -> str:
    return (f"{val(b, layer, 'consistency', pct=True)} of images at radius {b['param']}"
            + _if_measured(b, layer, "consistency_correct", " ({} of the correctly classified ones)", pct=True))


def _classifier_sentence(t: Mapping, layer: str) -> str:
    rows = v.radius_points(t, layer, "consistency")
    if not rows:
        return ""
    first, last = rows[0], rows[-1]
    text = f" The predicted class is unchanged for {_consistency_at(first, layer)}"
    if last is not first:
        text += f" and {_consistency_at(last, layer)}"
    summary, acc = t.get("summary"), fmt_pm(t.get("accuracy"), accuracy_halfwidth(t))
    text += _if_measured(summary, layer, "shifted_acc", f"; accuracy on shifted images is {{}} (unshifted {acc})")
    text += _if_measured(summary, layer, "consistency_two_shifts",
                         "; two random shifts of one image get the same prediction {} of the time", pct=True)
    return text + "."


def _invariance_sentence(t: Mapping, layer: str) -> str:
    prof = v.invariance_profile(t, layer)
    text = f"**{layer}** is {prof['verdict']}: {_trend(t, layer, 'invariance_score', 'invariance score')}"
    if prof["verdict"] == "exactly invariant":
        text += f" (max rel {fmt(prof['max_rel'])})"
    elif any(get(b, layer, "rel") is not None for b in v.blocks(t, "radius")):
        text += f"; {_trend(t, layer, 'rel', 'its relative change under a shift (rel)')}"
    text += "."
    note = v.geometry(t, layer).get("note")
    if note:
        text += f" (A {layer} map, but {note}.)"
    is_classifier = layer == v.classifier(t)
    text += (_classifier_sentence(t, layer) if is_classifier else "") + _training_effect(t, layer)
    return text + (_consistency_comparison(t, layer) if is_classifier else "")


def prediction_warnings(t: Mapping) -> list[str]:
    """A warning per network whose predictions are near-constant (``predictions.near_constant``)."""
    out = []
    layer = v.classifier(t)
    for name, net in v.networks(t):
        if not v.near_constant(net):
            continue
        summary = net.get("summary")
        text = (
            f"**Warning: the {name} network's predictions are near-constant**: it predicts "
            f"{_predictions_phrase(net['predictions'])}, at accuracy {fmt(net.get('accuracy'))}. Its "
            f"consistency ({val(summary, layer, 'consistency')}) is therefore meaningless: a network that "
            "predicts one class for every image is perfectly consistent whatever the shift."
        )
        if get(summary, layer, "consistency_correct") is not None:
            text += (
                " Consistency among correctly classified images, which compares networks of different "
                "accuracy fairly: "
                + "; ".join(f"{n} {val(r.get('summary'), layer, 'consistency_correct')}"
                            for n, r in v.networks(t))
                + f". Even this says little for the {name} network: its correctly classified images are "
                "mostly of the class it predicts anyway. Compare it by its layer scores (invariance score, "
                "rel) instead."
            )
        else:
            text += (
                " (Consistency among correctly classified images is not in this results.json.) Compare it "
                "by its layer scores (invariance score, rel) instead."
            )
        out.append(text)
    return out


def _consistency_comparison(t: Mapping, layer: str) -> str:
    un = t.get("untrained")
    if not un or get(un.get("summary"), layer, "consistency") is None:
        return ""
    summary, usummary = t.get("summary"), un.get("summary")
    text = (
        f" Consistency over all non-zero shifts: {val(summary, layer, 'consistency')} trained vs "
        f"{val(usummary, layer, 'consistency')} untrained"
    )
    text += _vs(summary, usummary, layer, "consistency_correct", "; among correctly classified images {}")
    flagged = [name for name, net in v.networks(t) if v.near_constant(net)]
    if flagged:
        text += (
            f" (the {' and '.join(flagged)} network's predictions are near-constant, see the warning: its "
            "consistency says nothing about shifts)"
        )
    return text + "."


def _untrained_sentences(t: Mapping) -> list[str]:
    un = t.get("untrained")
    convs = [layer for layer in v.conv_layers(t) if layer in un.get("layers", t["layers"])] if un else []
    if not convs:
        return []
    mine = {layer: v.conv_exactness(t, layer) for layer in convs}
    theirs = {layer: v.conv_exactness(un, layer) for layer in convs}
    desc = ", ".join(f"{layer} {exactness_phrase(theirs[layer])}" for layer in convs)
    if all(mine[layer]["kind"] == theirs[layer]["kind"] for layer in convs):
        return [f"The same exact equivariance holds in the **untrained** network ({desc}): "
                "it comes from the architecture, not from training."]
    trained = ", ".join(f"{layer} {exactness_phrase(mine[layer])}" for layer in convs)
    return [f"In the **untrained** network exact equivariance differs: {desc} (trained: {trained})."]


def _intervals_sentence(t: Mapping) -> str:
    if not v.has_intervals(t):
        return (
            "**How sure**: this results.json carries no standard errors or intervals (it was written by an "
            "older version), so no figure here has a ± and no difference can be called real; measure again "
            "to get them."
        )
    text = (
        f"**How sure**: every ± is the half-width of a 95 % interval over the {t.get('n_images')} test "
        "images (scores: the interval of a ratio of two means over the same images; other means: 1.96 "
        "standard errors)."
    )
    widest = v.largest_halfwidth(t)
    if widest is not None:
        hw, layer, metric, radius = widest
        words = "sorting hint" if metric == "equivariance_score" else metric.replace("_", " ")
        text += (
            " radial.png draws them as bands around each profile (the widest on a key score: "
            f"±{fmt(hw, 2)}, {layer}'s {words} at radius {radius}); heatmaps.png states each panel's widest."
        )
    if t.get("untrained"):
        k = int((t.get("untrained_inits") or {}).get("k") or 1)
        if k > 1:
            text += (
                f" The untrained network was measured at {k} initialisations; their spread (sd) shows how "
                "much an untrained figure depends on the seed."
            )
        else:
            text += (
                " The untrained network is one initialisation, one sample: its ± covers the images, not the "
                "seed (`callbacks.shift_probe.untrained_inits=K` measures K)."
            )
    return text


# -- other families -------------------------------------------------------------------------------
def _labels(section: Mapping, params) -> str:
    labels = [param_label(section, p) for p in params]
    return ", ".join(labels[:-1]) + f" and {labels[-1]}" if len(labels) > 1 else "".join(labels)


def all_phrase(section: Mapping) -> str:
    """Every parameter of the section, in words (``every quarter turn (k = 1, 2, 3)``)."""
    kind, params = kind_of(section), [b.get("param") for b in v.blocks(section)]
    if kind == "rot90":
        return f"every quarter turn (k = {', '.join(str(p) for p in params)})"
    if kind == "flip":
        return "both flips" if len(params) == 2 else f"the {params[0]} flip" if params else "no flip"
    if kind == "rotation":
        largest = max((abs(finite(p) or 0) for p in params), default=0)
        return f"every rotation measured (0° < |angle| ≤ {largest:g}°)"
    if kind == "subpixel":
        return "every sub-pixel shift measured"
    return f"every {section.get('parameter', 'parameter')} measured"


def columns(section: Mapping) -> list[tuple[str, str, str]]:
    """``(layer, metric, header)`` of a family table, in layer order."""
    out = []
    for layer in section.get("layers", []):
        extra = SPATIAL_COLUMNS if v.is_spatial(section, layer) else ()
        extra += CLASSIFIER_COLUMNS if layer == section.get("classifier") else ()
        out.append((layer, "invariance_score", f"{layer} invariance"))
        out += [(layer, m, f"{layer} {label}") for m, label in extra if v.has_value(section, layer, m)]
    return out


def _parameter_header(section: Mapping) -> str:
    kind = section.get("parameter")
    if kind == "offset_px":
        return "offset (oy, ox)" if section.get("dims") == 2 else "offset"
    return {"k": "quarter turns", "angle_deg": "angle", "flip": "flip"}.get(kind, kind or "parameter")


def family_table(section: Mapping) -> list[str]:
    """One row per parameter, then ``all`` (the summary): ``trained [interval] / untrained``."""
    un = section.get("untrained") or None
    un_blocks = {repr(b.get("param")): b for b in v.blocks(un)}
    cols = columns(section)

    def cell(b: Mapping | None, other: Mapping | None, layer: str, metric: str) -> str:
        return score_text(b, layer, metric) + (f" / {fmt(get(other, layer, metric))}" if un else "")

    pairs = [(param_label(section, b.get("param")), b, un_blocks.get(repr(b.get("param"))))
             for b in v.blocks(section)]
    pairs.append(("**all**", section.get("summary") or {}, (un or {}).get("summary")))
    rows = [[label] + [cell(b, other, layer, m) for layer, m, _ in cols] for label, b, other in pairs]
    return table([_parameter_header(section), *[header for _, _, header in cols]], rows)


def invariance_sentences(section: Mapping) -> list[str]:
    """Layers whose mean relative change stays below the tolerance at every parameter (or at some)."""
    tol, out = v.exact_tol(section), []
    for layer in section.get("layers", []):
        rels = [(b.get("param"), get(b, layer, "rel")) for b in v.blocks(section)]
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
                f"{layer} is invariant at {_labels(section, below)} only (rel below {fmt(tol)}); at the "
                f"other parameters its mean relative change reaches {fmt(largest)}."
            )
    return out


def exact_sentences(section: Mapping) -> list[str]:
    """The exact test of spatial layers (``exact``): at every, some or no parameter."""
    tol, out = v.exact_tol(section), []
    for layer, ex in (section.get("exact") or {}).items():
        worst = [(b.get("param"), w) for b in v.blocks(section)
                 if (w := get(b, layer, "aligned_rel_max")) is not None]
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
                f"{layer} is exactly equivariant at {_labels(section, hits)} only (aligned_rel below "
                f"{fmt(tol)}); not at {_labels(section, [p for p, _ in misses])} (aligned_rel up to "
                f"{fmt(max(w for _, w in misses))})."
            )
        else:
            out.append(
                f"{layer} is not exactly equivariant at any parameter: at each, the largest aligned_rel over "
                f"the image pairs is at least {fmt(min(w for _, w in worst))} (exact below {fmt(tol)})."
            )
    return out


def _compare_phrase(layer: str, a_label: str, a: Mapping, b_label: str, b: Mapping) -> str | None:
    """``the invariance score of <layer> falls from 0.9 [..] at 5° to 0.4 [..] at 45°`` (or rises / stays)."""
    metric = "invariance_score"
    if get(a, layer, metric) is None or get(b, layer, metric) is None:
        return None
    ta, tb = score_text(a, layer, metric), score_text(b, layer, metric)
    d, why = v.interval_compare(b, a, layer, metric)
    if d is None:
        return f"the invariance score of {layer} is {ta} at {a_label} and {tb} at {b_label} ({why})"
    if d == 0:
        return f"the invariance score of {layer} stays about the same from {a_label} ({ta}) to {b_label} " \
               f"({tb}): {why}"
    verb = "rises" if d > 0 else "falls"
    return f"the invariance score of {layer} {verb} from {ta} at {a_label} to {tb} at {b_label}"


def numeric_series(section: Mapping) -> dict[str, list[tuple[float, Mapping]]]:
    """Blocks of a 1-D numeric family by curve: ``{"": [(angle, block), ...]}`` for rotations,
    ``{"x": ..., "y": ...}`` for sub-pixel shifts along axes; empty for others."""
    series: dict[str, list[tuple[float, Mapping]]] = {}
    if section.get("dims", 1) != 1:
        return series
    for b in v.blocks(section):
        p = b.get("param")
        if isinstance(p, Mapping) and finite(p.get("offset")) is not None:
            series.setdefault(str(p.get("axis")), []).append((float(p["offset"]), b))
        elif section.get("parameter") in ("angle_deg", "offset_px") and finite(p) is not None:
            series.setdefault("", []).append((float(p), b))
    return {key: sorted(points, key=lambda pb: pb[0]) for key, points in series.items()}


def trend_sentences(section: Mapping) -> list[str]:
    """Rotations: each vector layer's score at the smallest against the largest angle (positive angles).
    Sub-pixel shifts along axes: the half-pixel against the one-pixel shift where both were measured,
    else the smallest against the largest offset."""
    out, series = [], numeric_series(section)
    for layer in v.vector_layers(section) if series else []:
        if "" in series:  # rotations: one side (positive angles if any)
            pts = sorted([(p, b) for p, b in series[""] if p > 0]
                         or [(-p, b) for p, b in series[""] if p < 0],
                         key=lambda pb: pb[0])
            text = _compare_phrase(layer, param_label(section, pts[0][0]), pts[0][1],
                                   param_label(section, pts[-1][0]), pts[-1][1]) if len(pts) >= 2 else None
            out += [text[0].upper() + text[1:] + "."] if text else []
            continue
        half_one = {axis: (dict(pts).get(0.5), dict(pts).get(1.0)) for axis, pts in series.items()}
        if all(h is not None and o is not None for h, o in half_one.values()):
            out.append(_half_one_sentence(layer, half_one))
            continue
        for axis, pts in sorted(series.items()):
            text = _compare_phrase(layer, f"{pts[0][0]:g} px", pts[0][1], f"{pts[-1][0]:g} px", pts[-1][1]) \
                if len(pts) >= 2 else None
            out += [f"Along {axis}, {text}."] if text else []
    return out


def _half_one_sentence(layer: str, half_one: Mapping[str, tuple[Mapping, Mapping]]) -> str:
    """Is ``layer`` more sensitive to a half-pixel shift than to a one-pixel one, per axis?"""
    metric = "invariance_score"
    words = {
        1: f"the half-pixel shift changes {layer} more than the one-pixel shift",
        -1: f"the half-pixel shift changes {layer} less than the one-pixel shift",
        0: f"the half-pixel and one-pixel shifts change {layer} about alike",
        None: f"{layer} at half a pixel and at one pixel",
    }
    said, numbers = {}, {}
    for axis, (half, one) in sorted(half_one.items()):
        d, why = v.interval_compare(one, half, layer, metric)
        said[axis] = words[d] + (f" ({why})" if why else "")
        numbers[axis] = f"{score_text(half, layer, metric)} vs {score_text(one, layer, metric)} along {axis}"
    if len(set(said.values())) == 1:  # every axis alike: said once
        text = next(iter(said.values())) + ": invariance score " + "; ".join(numbers.values())
    else:
        text = "; ".join(f"along {axis}, {said[axis]}: {numbers[axis]}" for axis in said)
    return text[0].upper() + text[1:] + "."


def grid_sentences(section: Mapping) -> list[str]:
    """A 2-D family: where each vector layer's score is lowest and highest on the grid."""
    out = []
    for layer in v.vector_layers(section) if section.get("dims", 1) == 2 else []:
        scored = [(s, b) for b in v.blocks(section) if (s := get(b, layer, "invariance_score")) is not None]
        if len(scored) < 2:
            continue
        low, high = min(scored, key=lambda sb: sb[0])[1], max(scored, key=lambda sb: sb[0])[1]
        out.append(
            f"The invariance score of {layer} is lowest at {param_label(section, low['param'])} "
            f"({score_text(low, layer, 'invariance_score')}) and highest at "
            f"{param_label(section, high['param'])} ({score_text(high, layer, 'invariance_score')})."
        )
    return out


def classifier_sentences(section: Mapping) -> list[str]:
    clf = section.get("classifier")
    summary = section.get("summary") or {}
    c = get(summary, clf, "consistency") if clf else None
    if c is None:
        return []
    scored = [(got, b) for b in v.blocks(section) if (got := get(b, clf, "consistency")) is not None]
    worst = min(scored, key=lambda sb: sb[0])
    text = (
        f"{clf}: the predicted class stays the same for "
        f"{fmt_pm(c, halfwidth(summary, clf, 'consistency'), pct=True)} of the transformed images on average "
        f"over {all_phrase(section)}, lowest at {param_label(section, worst[1]['param'])} "
        f"({fmt_pct(worst[0])})"
    )
    acc = get(summary, clf, "shifted_acc")
    if acc is not None:
        text += (
            "; accuracy on transformed images "
            f"{fmt_pm(acc, halfwidth(summary, clf, 'shifted_acc'), pct=True)} against "
            f"{fmt_pct(section.get('accuracy'))} untransformed"
        )
    return [text + "."] + [
        f"The {name} network's predictions are near-constant (mostly one class): its consistency says "
        "little, a constant classifier is perfectly consistent; read its invariance scores instead."
        for name, net in v.networks(section) if v.near_constant(net)
    ]


def training_sentences(section: Mapping) -> list[str]:
    """Trained against untrained: each vector layer's score over every parameter."""
    un, out = section.get("untrained") or {}, []
    family = FAMILY_TITLES.get(kind_of(section), section.get("family", "")).lower()
    a, b = section.get("summary"), un.get("summary")
    for layer in v.vector_layers(section) if un else []:
        if get(a, layer, "invariance_score") is None or get(b, layer, "invariance_score") is None:
            continue
        d, why = v.interval_compare(a, b, layer)
        numbers = (f"{score_text(a, layer, 'invariance_score')} vs "
                   f"{score_text(b, layer, 'invariance_score')} untrained")
        if d is None:
            out.append(f"The invariance score of {layer} over every parameter: {numbers} ({why}).")
        elif d == 0:
            out.append(f"Training left the invariance of {layer} to {family} about the same ({why}): "
                       f"{numbers}.")
        else:
            more = "more" if d > 0 else "less"
            out.append(f"Training made {layer} {more} invariant to {family}: {numbers}.")
    return out


def family_sentences(section: Mapping) -> list[str]:
    return (invariance_sentences(section) + exact_sentences(section) + trend_sentences(section)
            + grid_sentences(section) + classifier_sentences(section) + training_sentences(section))


def _timing(section: Mapping) -> str:
    parts = [f"{s:.1f} s ({name})" for name, net in v.networks(section)
             if (s := finite(net.get("seconds"))) is not None]
    return ", ".join(parts) or "n/a"


def family_section_lines(name: str, section: Mapping) -> list[str]:
    """``## <title>``: settings, images and time, how to read, the table, what it shows."""
    shown = {k: "[" + ",".join(map(str, x)) + "]" if isinstance(x, (list, tuple)) else x
             for k, x in (section.get("config") or {}).items() if k not in ("kind", "name")}
    n_params = len(v.blocks(section))
    lines = [
        f"## {title_of(name, section)}",
        "",
        f"- **Settings**: {', '.join(f'{k}={x}' for k, x in shown.items()) or 'none'}; {n_params} "
        f"parameter{'s' if n_params != 1 else ''} measured (the identity left out)",
        f"- **Images**: {section.get('n_images')}; accuracy (untransformed) "
        f"{se_pm(section.get('accuracy'), section.get('accuracy_se'))}",
        f"- **Measurement time**: {_timing(section)}",
        "",
        "Each cell: trained score [95 % interval]" + (" / untrained" if section.get("untrained") else "")
        + ". Invariance score = 1 - dist / control dist (1 = unchanged, 0 = as different as unrelated "
        "images); sorted equivariance = the sorting test (the family permutes pixels); aligned_rel = "
        "relative difference between f(Tx) and f(x) transformed on the map"
        + (f" (exact below {fmt(v.exact_tol(section))})." if section.get("exact")
           else " (a measure, not an exact test)."),
        "",
        *family_table(section),
    ]
    actions = (section.get("map_action") or {}).items()
    notes = [f"{layer}: no map action ({ma['note']})" for layer, ma in actions
             if not ma.get("defined") and ma.get("note")]
    if notes:
        lines += ["", "aligned_rel is undefined for " + "; ".join(notes) + "."]
    sentences = family_sentences(section)
    return lines + (["", "What this shows:", ""] + [f"- {s}" for s in sentences] if sentences else [])


def family_markdown_lines(results: Mapping) -> list[str]:
    """A section per family but translation and the Lie derivative; [] when there is none."""
    return [line for name, s in v.transform_families(results).items()
            for line in [*family_section_lines(name, s), ""]]


def _families_header(results: Mapping) -> list[str]:
    """The head of results.md of a run that measured no translation (e.g. ``transform=rot90``)."""
    subset = results.get("subset") or {}
    lines = ["# shiftprobe: how invariant / equivariant is each layer?", ""]
    if subset.get("how") == "seeded random subset":
        lines.append(f"- **Images**: a seeded random subset (seed {subset.get('seed')}) of "
                     f"{subset.get('n_images')} of the {subset.get('of')} test images")
    if results.get("untrained_origin"):
        lines.append(f"- **Untrained control's weights**: {results['untrained_origin']}")
    total = finite(results.get("seconds_total"))
    if total is not None:
        lines.append(f"- **Measurement time**: {total:.1f} s for every family, trained and untrained")
    return lines + [f"- **Families**: {', '.join(v.transform_families(results))} (no translation measured: "
                    "add it with transform=[translation,...])", ""]


# -- the Lie derivative ---------------------------------------------------------------------------
def _lie_header(first: list[str], section: Mapping) -> list[str]:
    units = v.config(section, "units") or {}
    return first + [f"{g} ({UNIT_SHORT.get(units.get(g), units.get(g) or '?')})"
                    for g in v.config(section, "generators") or []]


def _lie_cell(entry: Mapping | None) -> str:
    return se_pm(entry.get("rel"), entry.get("rel_se")) if entry else "n/a"


def _measures(section: Mapping, layer: str) -> str:
    what, stride = v.map_action(section, layer).get("measures") or "?", v.geometry(section, layer).get("stride")
    return what + (f" (stride {'x'.join(map(str, stride))})" if what == "equivariance" and stride else "")


def lie_derivative_lines(section: Mapping | None) -> list[str]:
    """A ``## Lie derivative`` section: how to read, the table of layers x generators (trained and untrained),
    the layer-wise decomposition when measured; ``[]`` without a Lie derivative section."""
    if not section:
        return []
    generators = list(v.config(section, "generators") or [])
    lines = [
        "", "## Lie derivative (infinitesimal transformations)", "",
        "Each cell is rel: how fast the layer's representation changes under an infinitesimal "
        "transformation (per unit of its parameter, in the header: per input pixel for a translation, per "
        "radian for a rotation), the root mean square of its derivative over that of the activation (maps "
        "are moved back first, so a map scores its equivariance and a vector its invariance), 0 meaning "
        f"exact to first order, ± the 95 % half-width over {fmt(section.get('n_images'))} images "
        f"({(section.get('config') or {}).get('method', 'bilinear')} interpolation).",
        "",
    ]
    rows, notes = [], []
    for layer in section.get("layers") or []:
        rows += [[layer, name, _measures(net, layer),
                  *[_lie_cell((v.block(net, "param", g) or {}).get(layer)) for g in generators]]
                 for name, net in v.networks(section) if layer in net.get("layers", [])]
        note = v.map_action(section, layer).get("note")
        notes += [f"- {layer}: {note}"] if note else []
    lines += table(_lie_header(["layer", "network", "measures"], section), rows)
    return lines + (["", *notes] if notes else []) + _layerwise_lines(section, generators)


def _layerwise_rows(section: Mapping, generators: list[str]) -> list[list[str]]:
    def row(label: str, name: str, entry: Mapping) -> list[str]:
        return [label, name, *[_lie_cell((entry.get(g) or {}).get("contribution")) for g in generators]]

    nets = v.networks(section)
    rows = [row(module, name, v.layerwise(net, "layerwise", module))
            for module in v.layerwise(section, "layerwise") for name, net in nets]
    for label in v.layerwise(section, "layerwise_between"):
        entries = [(name, v.layerwise(net, "layerwise_between", label)) for name, net in nets]
        if any(v.has_contribution(entry, generators) for _, entry in entries):  # an empty gap is exactly 0
            rows += [row(label, name, entry) for name, entry in entries]
    for key, label in TOTAL_ROWS:
        rows += [[f"*{label}*", name, *[_lie_cell(v.layerwise(net, "layerwise_total", g).get(key))
                                         for g in generators]] for name, net in nets]
    return rows


def _layerwise_lines(section: Mapping, generators: list[str]) -> list[str]:
    if not v.layerwise(section, "layerwise"):
        return []
    lines = [
        "", "### Layer-wise decomposition (lie_layerwise.png)", "",
        "Each cell is a module's contribution to the output's Lie derivative: its own Lie derivative (its "
        "input transformed, its output transformed back) carried to the output through the rest of the "
        "network, rel to the root mean square of the output, ± the 95 % half-width over the images. "
        "Rows `a → b`: the operations between two modules (functional calls such as a ReLU or a flatten; "
        "shown where not exactly 0). The contributions add up, as vectors, to the end-to-end value "
        "(the last row is the round-off); their rel values do not add.",
        "", *table(_lie_header(["module", "network"], section), _layerwise_rows(section, generators)), "",
    ]
    ranking = v.layerwise(section, "layerwise_ranking")
    parts = {**v.layerwise(section, "layerwise"), **v.layerwise(section, "layerwise_between")}
    for g in generators:  # a part at 0 is not among the largest
        top = [m for m in ranking.get(g, []) if v.has_contribution(parts.get(m) or {}, [g])][:TOP]
        lines.append(f"- largest for {g} (trained): {', '.join(top) or 'n/a'}")
    return lines + [f"- {note}" for note in (section.get("layerwise") or {}).get("layerwise_notes") or []]


# -- the console ----------------------------------------------------------------------------------
def _translation_console(t: Mapping) -> list[str]:
    un = t.get("untrained") or {}
    summary, usummary = t.get("summary"), un.get("summary")
    def pair(layer: str, metric: str) -> str:
        return val(summary, layer, metric) + (f" (untrained {val(usummary, layer, metric)})" if un else "")

    acc = f"accuracy {fmt(t.get('accuracy'))}" + (f" (untrained {fmt(un.get('accuracy'))})" if un else "")
    seconds = finite(t.get("seconds"))
    out = [f"{acc}; {v.config(t, 'mode')} shifts, {v.config(t, 'pattern')} pattern, |shift| <= "
           f"{v.config(t, 'max_shift')}, {t.get('n_images')} images"
           + ("" if seconds is None else f", {seconds:.1f} s")]
    width = max((len(layer) for layer in t.get("layers", [])), default=0)
    for layer in t.get("layers", []):
        if v.is_conv(t, layer):  # the exact test first, the sorted score only as the lab's hint
            ex = v.conv_exactness(t, layer)
            out.append(f"{layer:<{width}}  {exactness_phrase(ex)} (max aligned_rel "
                       f"{fmt(ex['max_aligned'])}); sorting hint {pair(layer, 'equivariance_score')}")
            continue
        text = f"{layer:<{width}}  invariance {pair(layer, 'invariance_score')}"
        if get(summary, layer, "rel") is not None:  # beside the score, as results.md words it
            text += f", rel {pair(layer, 'rel')}"
        if layer == v.classifier(t):
            text += f"; consistency {val(summary, layer, 'consistency')}"
            text += _if_measured(summary, layer, "consistency_correct", " ({} among correct)")
            text += f", shifted acc {val(summary, layer, 'shifted_acc')}"
            text += "".join(f"; {name} predictions near-constant" for name, net in v.networks(t)
                            if v.near_constant(net))
        out.append(text)
    return out


def _family_console(name: str, section: Mapping) -> str:
    """``rot90: 3 parameters, 2.5 s (trained); invariance score (untrained), rel (untrained): ...``."""
    un = (section.get("untrained") or {}).get("summary")
    summary = section.get("summary")

    def pair(layer: str, metric: str) -> str:
        return fmt(get(summary, layer, metric)) + (f" ({fmt(get(un, layer, metric))})" if un else "")

    scores = [f"{layer} {pair(layer, 'invariance_score')}"
              + (f" rel {pair(layer, 'rel')}" if get(summary, layer, "rel") is not None else "")
              for layer in section.get("layers", [])]
    what = "invariance score" + (" (untrained)" if un else "") + ", rel" + (" (untrained)" if un else "")
    return f"{name}: {len(v.blocks(section))} parameters, {_timing(section)}; {what}: " + ", ".join(scores)
