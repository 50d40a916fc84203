"""A fake but structurally valid results dict (schema 3 of results.json: ``families.translation``, see
``shiftprobe.probe.migrate``), for report and figure tests.

Numbers are plausible and deterministic: scores fall linearly with the Chebyshev radius, conv1 is
aligned to ``conv1_aligned`` at every shift, conv2 to ``conv2_aligned`` at even shifts and ``None``
at odd ones (stride 2). Groups (radius, parity, summary) are count-weighted means of the shifts.

With ``engine_keys=True`` the section also carries what the engine writes beside the figures:
``precision`` (for ``dtype``) and the lab CNN's inferred ``geometry``; without, the section is what a
file from before 0.2 migrates to (each layer's kind and stride only).
"""

from __future__ import annotations

import random

STRIDES = {"conv1": 1, "conv2": 2}
LAYERS = ["conv1", "conv2", "fc1", "logits"]
#: the exact-test tolerance by dtype (shiftprobe.probe.thresholds)
EXACT_TOL = {"float32": 1e-5, "float64": 1e-9, "float16": 1e-2, "bfloat16": 5e-2}
#: the lab CNN's geometry as results.json writes it (shiftprobe.probe.geometry.LayerGeometry.to_dict)
GEOMETRY = {
    "conv1": {"name": "conv1", "kind": "spatial", "shape": [10, 24, 24], "stride": [1, 1],
              "receptive_field": {"y": [0, 4], "x": [0, 4], "size": [5, 5]},
              "interior": {"y": [0, 23], "x": [0, 23]}, "circular": False, "note": None},
    "conv2": {"name": "conv2", "kind": "spatial", "shape": [20, 8, 8], "stride": [2, 2],
              "receptive_field": {"y": [0, 13], "x": [0, 13], "size": [14, 14]},
              "interior": {"y": [0, 7], "x": [0, 7]}, "circular": False, "note": None},
    "fc1": {"name": "fc1", "kind": "vector", "shape": [50], "stride": None, "receptive_field": None,
            "interior": None, "circular": False, "note": None},
    "logits": {"name": "logits", "kind": "vector", "shape": [10], "stride": None, "receptive_field": None,
               "interior": None, "circular": False, "note": None},
}
#: what a file without the inferred geometry migrates to: each layer's kind and stride
OLD_GEOMETRY = {layer: {"name": layer, "kind": "spatial" if layer in STRIDES else "vector",
                        "stride": [STRIDES[layer]] * 2 if layer in STRIDES else None} for layer in LAYERS}


# -- reading the dict in tests --------------------------------------------------------------------
def translation(res: dict) -> dict:
    return res["families"]["translation"]


def group(section: dict, name: str = "param") -> list[dict]:
    return section["groups"][name]


def block(section: dict, name: str, param) -> dict:
    """The block of group ``name`` whose parameter is ``param`` (``[dy, dx]``, a radius, ``"even"``)."""
    return next(b for b in section["groups"][name] if b["param"] == param)


def shift(section: dict, dy: int, dx: int) -> dict:
    return block(section, "param", [dy, dx])


# -- building it ----------------------------------------------------------------------------------
def _shift_list(max_shift: int, pattern: str, seed: int, n_random: int) -> list[tuple[int, int]]:
    r = range(-max_shift, max_shift + 1)
    if pattern == "grid":
        return [(dy, dx) for dy in r for dx in r]
    if pattern == "axis":
        return [(0, dx) for dx in r]
    if pattern == "random":  # a sparse subset of non-zero shifts, as drawn for a small n_images
        rng = random.Random(seed)
        cells = [(dy, dx) for dy in r for dx in r if (dy, dx) != (0, 0)]
        return sorted(rng.sample(cells, min(n_random, len(cells))))
    raise ValueError(pattern)


def _shift_entry(dy, dx, count, slope, conv1_aligned, conv2_aligned, jitter) -> dict:
    radius = max(abs(dy), abs(dx))
    odd = bool(dy % 2 or dx % 2)

    def score(base):
        return max(-0.2, 1.0 - base * radius * (1.3 if odd else 1.0) + (jitter if radius else 0.0))

    def layer_block(s, conv=False, stride=1):
        rel = (1.0 - s) * 0.8
        b = {"cos": 1.0 - 0.5 * rel, "dist": rel * 3.0, "rel": rel, "invariance_score": s}
        if conv:
            b["sorted_rel"] = rel * 0.5
            b["equivariance_score"] = 1.0 - (1.0 - s) * 0.5
            divides = dy % stride == 0 and dx % stride == 0
            if radius == 0:
                b["aligned_rel"] = 0.0
            elif not divides:
                b["aligned_rel"] = None
            else:
                b["aligned_rel"] = conv1_aligned if stride == 1 else conv2_aligned
        return b

    logits = layer_block(score(slope * 0.7))
    logits["consistency"] = 1.0 - (1.0 - logits["invariance_score"]) * 0.6
    logits["shifted_acc"] = 0.99 * logits["consistency"]
    return {
        "param": [dy, dx],
        "count": count,
        "conv1": layer_block(score(slope * 1.5), True, 1),
        "conv2": layer_block(score(slope * 1.2), True, 2),
        "fc1": layer_block(score(slope)),
        "logits": logits,
    }


def _group(param, entries: list[dict]) -> dict:
    out = {"param": param, "count": sum(e["count"] for e in entries)}
    for layer in LAYERS:
        layer_block = {}
        for key in entries[0][layer]:
            vals = [(e[layer][key], e["count"]) for e in entries if e[layer][key] is not None]
            w = sum(c for _, c in vals)
            layer_block[key] = sum(v * c for v, c in vals) / w if w else None
        out[layer] = layer_block
    return out


def _one_network(max_shift, pattern, mode, n_images, seed, slope, accuracy, conv1_aligned, conv2_aligned, n_random):
    shifts = _shift_list(max_shift, pattern, seed, n_random)
    rng = random.Random(seed + 1)
    count = n_images if pattern != "random" else max(1, n_images // max(1, len(shifts)))
    entries = [_shift_entry(dy, dx, count, slope, conv1_aligned, conv2_aligned, rng.uniform(-0.01, 0.01))
               for dy, dx in shifts]
    radius = [_group(r, members) for r in range(max_shift + 1)
              if (members := [e for e in entries if max(abs(e["param"][0]), abs(e["param"][1])) == r])]
    nonzero = [e for e in entries if e["param"] != [0, 0]]
    even = [e for e in nonzero if e["param"][0] % 2 == 0 and e["param"][1] % 2 == 0]
    odd = [e for e in nonzero if e["param"][0] % 2 or e["param"][1] % 2]
    parity = [_group(name, members) for name, members in (("even", even), ("odd", odd)) if members]
    summary = _group(None, nonzero)
    del summary["param"]
    summary["logits"]["consistency_two_shifts"] = summary["logits"]["consistency"] - 0.02
    control = {"offset": 1234}
    for layer in LAYERS:
        control[layer] = {"dist": 3.0, "cos": 0.3, "rel": 1.1}
        if layer in STRIDES:
            control[layer]["sorted_rel"] = 0.5
    control["logits"]["consistency"] = 0.11
    return {
        "family": "translation", "kind": "transform",
        "config": {"max_shift": max_shift, "mode": mode, "pattern": pattern, "seed": seed},
        "parameter": "shift", "dims": 2, "accuracy": accuracy, "n_images": n_images, "layers": list(LAYERS),
        "classifier": "logits",
        "geometry": {layer: dict(OLD_GEOMETRY[layer]) for layer in LAYERS}, "control": control,
        "groups": {"param": entries, "radius": radius, "parity": parity}, "summary": summary,
    }


def make_fake_results(
    max_shift: int = 2,
    pattern: str = "grid",
    mode: str = "crop",
    n_images: int = 100,
    seed: int = 0,
    slope: float = 0.12,
    conv1_aligned: float | None = 3e-7,
    conv2_aligned: float | None = 2e-7,
    untrained: bool = True,
    n_random: int = 10,
    engine_keys: bool = False,
    dtype: str = "float32",
) -> dict:
    """Results of a trained network (plus its ``untrained`` section unless ``untrained=False``)."""
    nets = [_one_network(max_shift, pattern, mode, n_images, seed, slope, 0.989, conv1_aligned, conv2_aligned, n_random)]
    if untrained:
        nets.append(_one_network(max_shift, pattern, mode, n_images, seed, slope * 0.6, 0.101, 4e-7, 1e-7, n_random))
    for net in nets:
        if engine_keys:
            net["precision"] = {"dtype": dtype, "exact_tol": EXACT_TOL[dtype]}
            net["geometry"] = {layer: dict(GEOMETRY[layer]) for layer in LAYERS}
    section = nets[0]
    if untrained:
        section["untrained"] = nets[1]
    section["seconds"] = 41.2
    return {"schema_version": 3, "primary": "translation", "families": {"translation": section}}
