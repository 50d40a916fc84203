"""results.json written by shiftprobe 0.2 (no ``schema_version``) -> schema 3, every number unchanged
(docs/measurement.md, "Results files"). ``migrate(data)`` returns a new dict (a schema-3 file as it is); it
adds only ``exact`` for translation, from the stored per-shift maxima (:func:`exact_summary`). Files from
before 0.2 get each layer's kind and stride from their ``strides``, their last probe point as classifier."""

from __future__ import annotations

import math
from collections.abc import Mapping

SCHEMA_VERSION = 3
#: keys of a 0.2 translation result that schema 3 keeps in a section as they are
_KEPT = ("accuracy", "accuracy_se", "predictions", "n_images", "layers", "classifier", "geometry", "control",
         "summary", "precision", "fast_path", "seconds", "untrained_inits")


def schema_version(data: Mapping) -> int:
    """The schema of a results dict: 3 (or later) when it says so, else 2 (shiftprobe 0.2 and before)."""
    version = data.get("schema_version")
    return int(version) if isinstance(version, int) and not isinstance(version, bool) else 2


def exact_summary(blocks: list[Mapping], layers, tol: float) -> dict:
    """``exact``: per layer with an ``aligned_rel_max`` in some parameter block, the parameters whose worst
    pair is within ``tol``, and whether that holds for every parameter (an undefined one is not exact)."""
    out = {}
    for layer in layers:
        worst = [(b.get("param"), (b.get(layer) or {}).get("aligned_rel_max")) for b in blocks]
        if all(w is None for _, w in worst):
            continue
        hits = [p for p, w in worst if w is not None and w <= tol]
        out[layer] = {"exact_params": hits, "all": len(hits) == len(worst)}
    return out


def _block(entry: Mapping, drop: tuple[str, ...], param) -> dict:
    return {"param": param, **{k: v for k, v in entry.items() if k not in drop}}


def _translation_section(old: Mapping, seed=None) -> dict:
    """A 0.2 translation result (the top level, or its ``untrained``) as a schema-3 section."""
    groups = {"param": [_block(e, ("dy", "dx"), [e["dy"], e["dx"]]) for e in old.get("shifts", [])]}
    groups["radius"] = [_block(e, ("radius",), e["radius"]) for e in old.get("radial", [])]
    groups["parity"] = [_block(block, (), name) for name, block in (old.get("parity") or {}).items()]
    section = {
        "family": "translation",
        "kind": "transform",
        "config": {"max_shift": old.get("max_shift"), "mode": old.get("shift_mode"),
                   "pattern": old.get("shift_pattern"), "seed": seed},
        "parameter": "shift",
        "dims": 2,
        **{k: old[k] for k in _KEPT if k in old},
        "groups": groups,
    }
    if "geometry" not in old:  # before 0.2: the conv layers' strides only
        section["geometry"] = _geometry_from_strides(old)
    if "classifier" not in old and old.get("layers") and "strides" in old:  # before 0.2: the last probe point
        section["classifier"] = old["layers"][-1]
    tol = (old.get("precision") or {}).get("exact_tol", 1e-5)
    section["exact"] = exact_summary(groups["param"], old.get("layers", []), tol)
    if isinstance(old.get("untrained"), Mapping):
        section["untrained"] = _translation_section(old["untrained"], seed)
    return section


def _geometry_from_strides(old: Mapping) -> dict:
    """Each layer's kind and stride from a file written before the geometry was inferred (``strides``:
    the conv layers', ``2`` or ``[sy, sx]``)."""
    strides = old.get("strides") or {}
    out = {}
    for layer in old.get("layers", []):
        s = strides.get(layer)
        stride = [int(x) for x in s] if isinstance(s, (list, tuple)) else None if s is None else [int(s)] * 2
        out[layer] = {"name": layer, "kind": "spatial" if stride else "vector", "stride": stride}
    return out


def _family_section(old: Mapping) -> dict:
    """A 0.2 family section (``entries``) as a schema-3 section."""
    section = {k: v for k, v in old.items() if k not in ("entries", "untrained")}
    section["kind"] = "transform"
    section["groups"] = {"param": [dict(e) for e in old.get("entries", [])]}
    if isinstance(old.get("untrained"), Mapping):
        section["untrained"] = _family_section(old["untrained"])
    return section


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return math.fsum(values) / len(values) if values else None


def lie_section(old: Mapping) -> dict:
    """The Lie derivative's dict (``shiftprobe.lie_derivative``'s 0.2 shape) as a schema-3 section: a
    block per generator with each layer's ``abs``/``rel`` and their standard errors; the summary is the
    mean over the generators (a layer with an undefined generator has none)."""
    generators, layers = list(old.get("generators", [])), list(old.get("layers", []))
    n = int(old.get("n_images", 0))
    blocks = []
    for g in generators:
        block = {"param": g, "count": n}
        for layer in layers:
            entry = (old.get(layer) or {}).get(g)
            if entry is not None:
                block[layer] = dict(entry)
        blocks.append(block)
    summary: dict = {"count": n * len(generators)}
    for layer in layers:
        rows = [b.get(layer) for b in blocks]
        if rows and all(rows):
            summary[layer] = {m: _mean([r.get(m) for r in rows]) for m in ("abs", "rel")}
    config = {k: old[k] for k in ("generators", "method", "norm", "units", "flows") if k in old}
    section = {
        "family": "lie_derivative", "kind": "lie_derivative", "config": config, "parameter": "generator",
        "dims": 1, "n_images": n, "layers": layers, "classifier": None, "geometry": old.get("geometry", {}),
        "groups": {"param": blocks}, "summary": summary, "seconds": old.get("seconds"),
        "map_action": {name: {"measures": g.get("measures"), "note": g.get("note")}
                       for name, g in (old.get("geometry") or {}).items()},
    }
    extra = {k: v for k, v in old.items() if k.startswith("layerwise")}
    if extra:
        section["layerwise"] = extra
    return section


def migrate(data: Mapping) -> dict:
    """``data`` (a results dict of schema 3 or older) in schema 3; a later schema is a ValueError."""
    if schema_version(data) > SCHEMA_VERSION:
        raise ValueError(f"results of schema_version {schema_version(data)} come from a newer shiftprobe (this one "
                         f"reads up to {SCHEMA_VERSION}): read them with the shiftprobe that wrote them, or a newer one")
    if schema_version(data) == SCHEMA_VERSION:
        return dict(data)
    families: dict = {}
    old_families = data.get("families") or {}
    if "shifts" in data:
        families["translation"] = _translation_section(data)
    for name, old in old_families.items():
        if name != "translation" and isinstance(old, Mapping):
            families[name] = _family_section(old)
    lie = data.get("lie_derivative")
    if isinstance(lie, Mapping):
        families["lie_derivative"] = lie_section(lie)
        untrained_lie = (data.get("untrained") or {}).get("lie_derivative")
        if isinstance(untrained_lie, Mapping):
            families["lie_derivative"]["untrained"] = lie_section(untrained_lie)
    out = {"schema_version": SCHEMA_VERSION, "migrated_from": "0.2",
           "primary": next(iter(families), None), "families": families}
    for key in ("subset", "seconds_total", "untrained_origin"):
        if key in data:
            out[key] = data[key]
    return out
