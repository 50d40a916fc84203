"""A fake but structurally valid results dict (the schema of results.json), for report/plot tests.

Numbers are plausible and deterministic: scores fall linearly with the Chebyshev radius, conv1 is
aligned to ``conv1_aligned`` at every shift, conv2 to ``conv2_aligned`` at even shifts and ``None``
at odd ones (stride 2). Groups (radial, parity, summary) are count-weighted means of the shifts.

With ``engine_keys=True`` the dict also carries what the engine writes beside the figures:
``classifier``, ``precision`` (for ``dtype``) and ``geometry`` (the lab CNN's inferred geometry).
Off by default, so tests of older results files keep their shape.
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

    def block(s, conv=False, stride=1):
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

    logits = block(score(slope * 0.7))
    logits["consistency"] = 1.0 - (1.0 - logits["invariance_score"]) * 0.6
    logits["shifted_acc"] = 0.99 * logits["consistency"]
    return {
        "dy": dy,
        "dx": dx,
        "count": count,
        "conv1": block(score(slope * 1.5), True, 1),
        "conv2": block(score(slope * 1.2), True, 2),
        "fc1": block(score(slope)),
        "logits": logits,
    }


def _group(entries: list[dict]) -> dict:
    out = {"count": sum(e["count"] for e in entries)}
    for layer in LAYERS:
        keys = entries[0][layer].keys()
        block = {}
        for key in keys:
            vals = [(e[layer][key], e["count"]) for e in entries if e[layer][key] is not None]
            w = sum(c for _, c in vals)
            block[key] = sum(v * c for v, c in vals) / w if w else None
        out[layer] = block
    return out


def _one_network(
    max_shift, pattern, mode, n_images, seed, slope, accuracy, conv1_aligned, conv2_aligned, n_random
):
    shifts = _shift_list(max_shift, pattern, seed, n_random)
    rng = random.Random(seed + 1)
    count = n_images if pattern != "random" else max(1, n_images // max(1, len(shifts)))
    entries = [
        _shift_entry(dy, dx, count, slope, conv1_aligned, conv2_aligned, rng.uniform(-0.01, 0.01))
        for dy, dx in shifts
    ]
    radial = []
    for r in range(max_shift + 1):
        group = [e for e in entries if max(abs(e["dy"]), abs(e["dx"])) == r]
        if group:
            radial.append({"radius": r, **_group(group)})
    nonzero = [e for e in entries if (e["dy"], e["dx"]) != (0, 0)]
    parity = {}
    even = [e for e in nonzero if e["dy"] % 2 == 0 and e["dx"] % 2 == 0]
    odd = [e for e in nonzero if e["dy"] % 2 or e["dx"] % 2]
    if even:
        parity["even"] = _group(even)
    if odd:
        parity["odd"] = _group(odd)
    summary = _group(nonzero)
    summary["logits"]["consistency_two_shifts"] = summary["logits"]["consistency"] - 0.02
    control = {"offset": 1234}
    for layer in LAYERS:
        control[layer] = {"dist": 3.0, "cos": 0.3, "rel": 1.1}
        if layer in STRIDES:
            control[layer]["sorted_rel"] = 0.5
    control["logits"]["consistency"] = 0.11
    return {
        "accuracy": accuracy,
        "shift_mode": mode,
        "shift_pattern": pattern,
        "max_shift": max_shift,
        "n_images": n_images,
        "layers": list(LAYERS),
        "strides": dict(STRIDES),
        "control": control,
        "shifts": entries,
        "radial": radial,
        "parity": parity,
        "summary": summary,
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
    """A trained network's results (plus an ``untrained`` block unless ``untrained=False``)."""
    nets = [_one_network(max_shift, pattern, mode, n_images, seed, slope, 0.989, conv1_aligned, conv2_aligned, n_random)]
    if untrained:
        nets.append(_one_network(max_shift, pattern, mode, n_images, seed, slope * 0.6, 0.101, 4e-7, 1e-7, n_random))
    if engine_keys:
        for net in nets:
            net["classifier"] = "logits"
            net["precision"] = {"dtype": dtype, "exact_tol": EXACT_TOL[dtype]}
            net["geometry"] = {layer: dict(GEOMETRY[layer]) for layer in LAYERS}
    res = nets[0]
    if untrained:
        res["untrained"] = nets[1]
    res["seconds"] = 41.2
    return res
