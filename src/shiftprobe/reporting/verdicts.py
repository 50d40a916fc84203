"""Reading a schema-3 results dict (``families[name]`` is a section, docs/measurement.md), and the verdicts
the report words, as data, by the named thresholds of ``shiftprobe.probe.thresholds``. A conv layer is a
spatial layer with a stride: its headline is the exact test (``aligned_rel``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shiftprobe.probe.thresholds import EXACT_TOL, NEAR_INVARIANT, PARTLY_INVARIANT, SAME_SCORE
from shiftprobe.reporting.format import finite, get, halfwidth, interval


# -- sections and their groups --------------------------------------------------------------------
def families(results: Mapping) -> dict[str, Mapping]:
    return {name: s for name, s in (results.get("families") or {}).items() if isinstance(s, Mapping)}


def translation(results: Mapping) -> Mapping | None:
    return families(results).get("translation")


def transform_families(results: Mapping) -> dict[str, Mapping]:
    """Every measured family but translation and the Lie derivative, in measurement order."""
    return {name: s for name, s in families(results).items()
            if name != "translation" and s.get("kind", "transform") == "transform"}


def lie_section(results: Mapping) -> Mapping | None:
    return next((s for s in families(results).values() if s.get("kind") == "lie_derivative"), None)


def networks(section: Mapping | None) -> list[tuple[str, Mapping]]:
    """``[("trained", section), ("untrained", its untrained section)]``, the second only if measured."""
    if not section:
        return []
    un = section.get("untrained")
    return [("trained", section)] + ([("untrained", un)] if un else [])


def blocks(section: Mapping | None, group: str = "param") -> list[Mapping]:
    return list(((section or {}).get("groups") or {}).get(group) or [])


def block(section: Mapping | None, group: str, param) -> Mapping | None:
    """The block of ``group`` whose parameter is ``param`` (a radius, ``"even"``), None if not measured."""
    return next((b for b in blocks(section, group) if b.get("param") == param), None)


def shift_of(entry: Mapping) -> tuple[int, int]:
    dy, dx = entry["param"]
    return int(dy), int(dx)


def nonzero_shifts(section: Mapping) -> list[Mapping]:
    return [b for b in blocks(section) if shift_of(b) != (0, 0)]


def radii(*sections: Mapping | None) -> list[int]:
    return sorted({int(b["param"]) for s in sections for b in blocks(s, "radius")})


def config(section: Mapping, key: str):
    return (section.get("config") or {}).get(key)


# -- layers ---------------------------------------------------------------------------------------
def strides(section: Mapping) -> dict:
    """The conv layers' strides as results.json wrote them before schema 3: ``2``, or ``[sy, sx]``."""
    spatial = {name: g["stride"] for name, g in (section.get("geometry") or {}).items()
               if g.get("kind") == "spatial" and g.get("stride") is not None}
    return {name: s[0] if s[0] == s[1] else list(s) for name, s in spatial.items()}


def is_conv(section: Mapping, layer: str) -> bool:
    return layer in strides(section)


def conv_layers(section: Mapping) -> list[str]:
    convs = strides(section)
    return [layer for layer in section.get("layers", []) if layer in convs]


def stride_of(section: Mapping, layer: str):
    stride = strides(section).get(layer, 1)
    return int(stride) if not isinstance(stride, list) else tuple(int(v) for v in stride)


def geometry(section: Mapping, layer: str) -> Mapping:
    return (section.get("geometry") or {}).get(layer) or {}


def map_action(section: Mapping, layer: str) -> Mapping:
    """A layer's ``map_action`` entry: ``defined``, ``note`` and, for the Lie derivative, ``measures``."""
    return (section.get("map_action") or {}).get(layer) or {}


def is_spatial(section: Mapping, layer: str) -> bool:
    return geometry(section, layer).get("kind") == "spatial"


def vector_layers(section: Mapping) -> list[str]:
    return [layer for layer in section.get("layers", []) if not is_spatial(section, layer)]


def circular(section: Mapping, layer: str) -> bool:
    return bool(geometry(section, layer).get("circular"))


def classifier(section: Mapping) -> str | None:
    return section.get("classifier")


def key_metric(section: Mapping, layer: str) -> str:
    """The headline score of a layer: equivariance for conv layers, invariance otherwise."""
    return "equivariance_score" if is_conv(section, layer) else "invariance_score"


def exact_tol(section: Mapping) -> float:
    """The relative error below which this measurement counts as exact (depends on its precision)."""
    return finite((section.get("precision") or {}).get("exact_tol")) or EXACT_TOL


def exactness(aligned_rel, tol: float = EXACT_TOL) -> str:
    """``exact`` / ``not exact`` / ``n/a`` (no exact alignment exists) for one ``aligned_rel``."""
    v = finite(aligned_rel)
    return "n/a" if v is None else ("exact" if v < tol else "not exact")


def near_constant(section: Mapping) -> bool:
    return bool((section.get("predictions") or {}).get("near_constant"))


def has_intervals(section: Mapping) -> bool:
    """Whether the section carries any ``_se`` / ``_ci`` (newer results) at all."""
    return any(isinstance(b, Mapping) and any(k.endswith(("_se", "_ci")) for k in b)
               for b in (section.get("summary") or {}).values())


def has_metric(section: Mapping, metric: str) -> bool:
    """Whether the summary or a radius block of the trained or untrained network has ``metric``."""
    return any(isinstance(e, Mapping) and finite(e.get(metric)) is not None for _, net in networks(section)
               for b in [net.get("summary") or {}, *blocks(net, "radius")] for e in b.values())


def has_value(section: Mapping, layer: str, metric: str) -> bool:
    """Whether some parameter block of the trained or untrained network has ``layer``'s ``metric``."""
    return any(get(b, layer, metric) is not None for _, net in networks(section) for b in blocks(net))


# -- conv layers: the exact test ------------------------------------------------------------------
def worst(entry: Mapping | None, layer: str) -> float | None:
    """The largest per-pair aligned_rel of a block (the mean where the maximum was not recorded)."""
    w = get(entry, layer, "aligned_rel_max")
    return w if w is not None else get(entry, layer, "aligned_rel")


def _weighted_mean(entries: Iterable[Mapping], layer: str, metric: str) -> float | None:
    weighted = [(float(e.get("count") or 1), v) for e in entries if (v := get(e, layer, metric)) is not None]
    weight = sum(w for w, _ in weighted)
    return sum(w * v for w, v in weighted) / weight if weight else None


def conv_exactness(section: Mapping, layer: str) -> dict:
    """What holds exactly for a conv layer, from the per-shift ``aligned_rel`` of non-zero shifts: ``kind``
    ``every`` (exact at every measured shift), ``stride`` (exact at every shift the stride divides, no exact
    alignment at the rest), ``partial`` / ``none`` (some / no alignable shift is exact) or ``untestable``."""
    tol = exact_tol(section)
    shifts = nonzero_shifts(section)
    scored = [(s, worst(s, layer)) for s in shifts]
    unalignable = [s for s, v in scored if v is None]
    alignable = [(s, v) for s, v in scored if v is not None]
    exact = [v for _, v in alignable if v < tol]
    top = max(alignable, key=lambda sv: sv[1]) if alignable else None
    if not alignable:
        kind = "untestable"
    elif len(exact) == len(alignable):
        kind = "every" if not unalignable else "stride"
    else:
        kind = "partial" if exact else "none"
    return {
        "layer": layer, "stride": stride_of(section, layer), "kind": kind, "n_shifts": len(shifts),
        "n_alignable": len(alignable), "n_exact": len(exact), "max_aligned": top[1] if top else None,
        "tol": tol,
        "no_overlap": sum(int((s.get(layer) or {}).get("aligned_rel_no_overlap") or 0) for s in shifts),
        "worst_shift": shift_of(top[0]) if top else None,
        "eq_alignable": _weighted_mean([s for s, _ in alignable], layer, "equivariance_score"),
        "eq_unalignable": _weighted_mean(unalignable, layer, "equivariance_score"),
    }


def alignable_block(section: Mapping, ex: Mapping) -> Mapping | None:
    """The group block pooling exactly the shifts the exact test checks (for its ``±``), if one exists."""
    if ex["n_alignable"] and ex["n_alignable"] == ex["n_shifts"]:
        return section.get("summary")
    if ex["stride"] in (2, (2, 2)):
        return block(section, "parity", "even")
    return None


# -- invariance layers ----------------------------------------------------------------------------
def radius_points(section: Mapping, layer: str, metric: str) -> list[Mapping]:
    """The non-zero radius blocks where ``layer`` has ``metric``."""
    return [b for b in blocks(section, "radius") if int(b["param"]) > 0 and get(b, layer, metric) is not None]


def invariance_profile(section: Mapping, layer: str) -> dict:
    """The verdict on a layer's invariance (by named thresholds on its lowest score over the non-zero radii)
    and its largest rel over the non-zero shifts."""
    scores = [get(b, layer, "invariance_score") for b in radius_points(section, layer, "invariance_score")]
    rels = [v for v in (get(s, layer, "rel") for s in nonzero_shifts(section)) if v is not None]
    lowest = min(scores, default=None)
    if rels and max(rels) < exact_tol(section):
        verdict = "exactly invariant"
    elif lowest is None:
        verdict = "unmeasured"
    elif lowest >= NEAR_INVARIANT:
        verdict = "nearly (not exactly) invariant"
    elif lowest >= PARTLY_INVARIANT:
        verdict = "only partly invariant"
    else:
        verdict = "not invariant"
    return {"max_rel": max(rels) if rels else None, "verdict": verdict}


def training_effect(trained: Mapping | None, untrained: Mapping | None, layer: str) -> tuple[int, int]:
    """(direction of the invariance score, direction of rel), trained vs untrained, for one group block:
    +1 / -1 where trained is above / below by more than SAME_SCORE and both half-widths; 0 otherwise."""
    def one(metric: str) -> int:
        a, b = get(trained, layer, metric), get(untrained, layer, metric)
        if a is None or b is None:
            return 0
        hw = (halfwidth(trained, layer, metric) or 0.0) + (halfwidth(untrained, layer, metric) or 0.0)
        margin = max(SAME_SCORE, hw)
        return 1 if a - b > margin else (-1 if b - a > margin else 0)

    return one("invariance_score"), one("rel")


def invariance_disagreement(section: Mapping, layer: str) -> dict | None:
    """Where training moves the invariance score and rel the same way (opposite stories: "more invariant"
    but "changes more"): the summary's direction and the non-zero radii where they disagree; else None."""
    un = section.get("untrained")
    if not un:
        return None
    score, rel = training_effect(section.get("summary"), un.get("summary"), layer)
    if not score or score != rel:
        return None
    found = []
    for b in blocks(section, "radius"):
        r, other = int(b["param"]), block(un, "radius", b["param"])
        if r > 0 and other is not None and (s_r := training_effect(b, other, layer))[0] and s_r[0] == s_r[1]:
            found.append(r)
    return {"direction": score, "radii": found}


def largest_halfwidth(section: Mapping) -> tuple[float, str, str, int] | None:
    """The widest 95 % half-width of a layer's key score over the non-zero radius blocks:
    ``(half-width, layer, metric, radius)``; None where the results carry no interval."""
    found = []
    for b in blocks(section, "radius"):
        for layer in section.get("layers", []) if int(b["param"]) else []:
            metric = key_metric(section, layer)
            if (hw := halfwidth(b, layer, metric)) is not None:
                found.append((hw, layer, metric, int(b["param"])))
    return max(found, key=lambda f: f[0], default=None)


# -- other families: comparisons by their intervals -----------------------------------------------
def interval_compare(a: Mapping | None, b: Mapping | None, layer: str,
                     metric: str = "invariance_score") -> tuple[int | None, str]:
    """Is ``a``'s score above (+1) or below (-1) ``b``'s? Only when their 95 % intervals do not overlap
    and the scores differ by at least ``SAME_SCORE``; else 0 and why; None where an interval is missing."""
    ia, ib = interval(a, layer, metric), interval(b, layer, metric)
    if ia is None or ib is None:
        return None, "no intervals in these results"
    if ia[1] >= ib[0] and ia[0] <= ib[1]:
        return 0, "the 95 % intervals overlap"
    if abs(get(a, layer, metric) - get(b, layer, metric)) < SAME_SCORE:
        return 0, f"they differ by less than {SAME_SCORE:g}"
    return (1 if ia[0] > ib[1] else -1), ""


# -- the Lie derivative's layer-wise decomposition ------------------------------------------------
def layerwise(section: Mapping | None, key: str, name: str | None = None) -> Mapping:
    """The decomposition's ``key`` block of a Lie derivative section (``layerwise``, ``layerwise_between``,
    ``layerwise_total``, ``layerwise_ranking``), or its entry ``name``; ``{}`` where absent."""
    out = ((section or {}).get("layerwise") or {}).get(key) or {}
    return (out.get(name) or {}) if name is not None else out


def has_contribution(entry: Mapping, generators: list[str]) -> bool:
    """Whether a module's (or a gap's) contribution is non-zero for some generator."""
    return any((finite(((entry.get(g) or {}).get("contribution") or {}).get("rel")) or 0) > 0
               for g in generators)
