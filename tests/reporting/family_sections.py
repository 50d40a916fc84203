"""Hand-built family sections of results.json (schema 3: ``families.<name>``, docs/measurement.md), for
the report and figure tests: structurally what the engine writes for a family, with numbers chosen so
the expected sentences are known. ``results(*sections)`` wraps them in a results dict.

``score_of(layer, param)`` gives each layer's invariance score; the interval is ``score ± hw`` (``hw``
per section). Spatial layers get the sorting test (``permutes``) and ``aligned_rel`` where ``aligned``
gives a value; the classifier gets consistency and shifted accuracy.
"""

from __future__ import annotations

import copy
import math

from results_factory import GEOMETRY

LAYERS = ["conv1", "conv2", "fc1", "logits"]
TOL = 1e-5


def _block(layer, score, hw, *, permutes, aligned, classifier, consistency):
    rel = max(0.0, (1.0 - score) * 0.8)
    block = {
        "cos": 1.0 - 0.5 * rel, "cos_se": 0.001, "dist": rel * 3.0, "dist_se": 0.01, "rel": rel, "rel_se": 0.002,
        "invariance_score": score, "invariance_score_ci": [score - hw, score + hw],
    }
    if GEOMETRY[layer]["kind"] == "spatial":
        if permutes:
            eq = 1.0 - (1.0 - score) * 0.5
            block.update(sorted_rel=rel * 0.5, sorted_rel_se=0.001, equivariance_score=eq,
                         equivariance_score_ci=[eq - hw, eq + hw])
        if aligned is not None:
            block.update(aligned_rel=aligned, aligned_rel_se=aligned / 10, aligned_rel_max=aligned * 3)
    if layer == classifier:
        block.update(consistency=consistency, consistency_se=0.004, consistency_correct=consistency,
                     consistency_correct_se=0.004, shifted_acc=0.9 * consistency, shifted_acc_se=0.005)
    return block


def section(family, parameter, config, params, score_of, *, dims=1, permutes=False, aligned_of=None,
            exact_test=True, hw=0.02, consistency_of=None, seconds=2.5, untrained=None) -> dict:
    """One family section; ``untrained`` (a dict of the same keyword arguments) adds the untrained one."""
    aligned_of = aligned_of or (lambda layer, p: None)
    consistency_of = consistency_of or (lambda p: 0.95)

    def blocks(p):
        return {
            layer: _block(layer, score_of(layer, p), hw, permutes=permutes, aligned=aligned_of(layer, p),
                          classifier="logits", consistency=consistency_of(p))
            for layer in LAYERS
        }

    entries = [{"param": p, "count": 100, **blocks(p)} for p in params]
    summary = {"count": 100 * len(params)}
    for layer in LAYERS:
        block = {}
        for key in entries[0][layer]:
            values = [e[layer][key] for e in entries]
            if key.endswith("_ci"):
                block[key] = [sum(v[0] for v in values) / len(values), sum(v[1] for v in values) / len(values)]
            elif key.endswith("_max"):
                block[key] = max(values)
            else:
                block[key] = sum(values) / len(values)
        summary[layer] = block
    exact = {}
    if exact_test:
        for layer in LAYERS:
            if "aligned_rel_max" in entries[0][layer]:
                hits = [e["param"] for e in entries if e[layer]["aligned_rel_max"] <= TOL]
                exact[layer] = {"exact_params": hits, "all": len(hits) == len(entries)}
    map_action = {
        layer: {"defined": "aligned_rel" in entries[0][layer],
                "note": None if "aligned_rel" in entries[0][layer] else "the map's grid is not symmetric"}
        for layer in LAYERS if GEOMETRY[layer]["kind"] == "spatial"
    }
    out = {
        "family": family, "kind": "transform", "config": {"kind": family, **config, "name": family}, "dims": dims,
        "parameter": parameter, "n_images": 100, "layers": list(LAYERS), "classifier": "logits",
        "accuracy": 0.97, "accuracy_se": 0.017, "geometry": copy.deepcopy({k: GEOMETRY[k] for k in LAYERS}),
        "control": {layer: {"dist": 3.0, "sorted_rel": 0.4, "cos": 0.5, "rel": 1.0} for layer in LAYERS} | {"offset": 1},
        "groups": {"param": entries}, "summary": summary, "exact": exact, "map_action": map_action,
        "precision": {"dtype": "float32", "exact_tol": TOL}, "seconds": seconds,
    }
    if untrained is not None:
        out["untrained"] = section(family, parameter, config, params, **untrained)
    return out


def results(*sections: dict, **top) -> dict:
    """A schema-3 results dict of ``sections`` (each under its family's name; the first is primary)."""
    families = {s["family"]: s for s in sections}
    return {"schema_version": 3, "primary": next(iter(families), None), "families": families, **top}


def param_blocks(section: dict) -> list[dict]:
    return section["groups"]["param"]


# -- the families ----------------------------------------------------------------------------------
def rot90(untrained: bool = True, logits_rel: float = 3e-7) -> dict:
    """``model=rot_pool``-like: logits invariant to every quarter turn (rel ``logits_rel``), conv1
    exactly equivariant at k=2 only, fc1 partly invariant."""

    def score(layer, k):
        if layer == "logits":
            return 1.0 - logits_rel / 0.8
        return {"conv1": 0.3, "conv2": 0.35, "fc1": 0.5}[layer] + 0.05 * (k == 2)

    def aligned(layer, k):
        if layer == "conv1":
            return 2e-7 if k == 2 else 0.3
        return None  # conv2: the grid is not symmetric

    un = dict(score_of=lambda layer, k: 0.2, permutes=True, aligned_of=aligned, consistency_of=lambda k: 0.6,
              seconds=2.0)
    return section("rot90", "k", {}, [1, 2, 3], score, permutes=True, aligned_of=aligned,
                   consistency_of=lambda k: 1.0, untrained=un if untrained else None)


def rotation(untrained: bool = True) -> dict:
    """fc1's score falls from 0.9 at 5 degrees to 0.4 at 45 (intervals ± 0.02); conv1 has an
    approximate map action (no exact test)."""
    angles = [float(a) for a in range(-45, 50, 5) if a != 0]

    def score(layer, a):
        base = 0.9 - (abs(a) - 5) * (0.5 / 40)
        return {"conv1": base - 0.1, "conv2": base - 0.05, "fc1": base, "logits": base + 0.05}[layer]

    un = dict(score_of=lambda layer, a: 0.5 - abs(a) / 200, aligned_of=lambda layer, a: 0.5 if layer == "conv1" else None,
              seconds=3.0)
    return section("rotation", "angle_deg", {"max_angle": 45.0, "step": 5.0}, angles, score,
                   aligned_of=lambda layer, a: 0.1 * abs(a) / 45 if layer == "conv1" else None, exact_test=False,
                   consistency_of=lambda a: 1.0 - abs(a) / 100, untrained=un if untrained else None)


def subpixel(untrained: bool = True, half: float = 0.62, one: float = 0.71, hw: float = 0.02) -> dict:
    """axes=xy: fc1 scores ``half`` at 0.5 px and ``one`` at 1 px (± ``hw``) along both axes."""
    offsets = [k / 8 for k in range(1, 9)]
    params = [{"axis": axis, "offset": t} for axis in ("x", "y") for t in offsets]

    def score(layer, p):
        t = p["offset"]
        fc1 = half + (one - half) * abs(t - 0.5) / 0.5 if t >= 0.5 else 1.0 - (1.0 - half) * t / 0.5
        return {"conv1": fc1 - 0.2, "conv2": fc1 - 0.1, "fc1": fc1, "logits": min(0.99, fc1 + 0.1)}[layer]

    un = dict(score_of=lambda layer, p: 0.6, aligned_of=lambda layer, p: 0.05 if layer == "conv1" else None, hw=hw)
    return section("subpixel", "offset_px",
                   {"max_offset": 1.0, "step": 0.125, "axes": "xy", "method": "bilinear", "mode": "crop"},
                   params, score, hw=hw, aligned_of=lambda layer, p: 0.02 if layer == "conv1" else None,
                   untrained=un if untrained else None)


def subpixel_grid(untrained: bool = False) -> dict:
    """axes=both: a 5x5 grid of (oy, ox) in [-0.5, 0.5], step 0.25; lowest fc1 score at (0.5, 0.5)."""
    ts = [-0.5, -0.25, 0.0, 0.25, 0.5]
    params = [[oy, ox] for oy in ts for ox in ts if (oy, ox) != (0.0, 0.0)]

    def score(layer, p):
        base = 1.0 - 0.8 * math.hypot(p[0], p[1]) + 0.01 * (p[0] > 0) + 0.005 * (p[1] > 0)
        return {"conv1": base - 0.2, "conv2": base - 0.1, "fc1": base, "logits": base}[layer]

    un = dict(score_of=lambda layer, p: 0.5, dims=2)
    return section("subpixel", "offset_px",
                   {"max_offset": 0.5, "step": 0.25, "axes": "both", "method": "fourier", "mode": "roll"},
                   params, score, dims=2, aligned_of=lambda layer, p: 1e-7 if layer == "conv1" else None,
                   untrained=un if untrained else None)


def flip(untrained: bool = False) -> dict:
    def score(layer, p):
        return {"conv1": 0.3, "conv2": 0.4, "fc1": 0.6 if p == "horizontal" else 0.7, "logits": 0.8}[layer]

    return section("flip", "flip", {"axes": ["horizontal", "vertical"]}, ["horizontal", "vertical"], score,
                   permutes=True, aligned_of=lambda layer, p: 1e-7 if layer == "conv1" else None,
                   untrained=dict(score_of=lambda layer, p: 0.5, permutes=True) if untrained else None)
