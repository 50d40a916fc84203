"""Raw accumulator sums -> one section of results.json: pooled means, standard errors, score intervals.

Means are pooled over pairs (sum over the group's pairs / number of pairs). Scores use the layer's
control (unrelated image pairs): ``invariance_score = 1 - dist / control.dist`` and, for spatial layers,
``equivariance_score = 1 - sorted_rel / control.sorted_rel``. Every mean gets ``<metric>_se`` (over the
group's images) and every score ``<score>_ci`` (``shiftprobe.probe.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from shiftprobe.probe.accumulator import MASKED, SCORE_CONTROL
from shiftprobe.probe.inputs import nonfinite_message
from shiftprobe.probe.plan import ShiftPlan
from shiftprobe.probe.stats import mean_se, ratio_se, score_interval
from shiftprobe.probe.thresholds import NEAR_CONSTANT_ENTROPY_FRACTION, NEAR_CONSTANT_TOP_SHARE


def _mean(total: torch.Tensor, count: torch.Tensor) -> float | None:
    c = float(count.sum())
    return float(total.sum()) / c if c > 0 else None


def control_block(raw: dict, layers) -> dict:
    n = float(raw["images"])
    out = {}
    for layer in layers:
        keys = [k for k in raw if isinstance(k, tuple) and k[0] == "control" and k[1] == layer]
        block = {}
        for k in keys:
            block[k[2]] = float(raw[k]) / n if n else None
            if ("control_sq", *k[1:]) in raw:
                block[f"{k[2]}_se"] = mean_se(n, raw[k], raw[("control_sq", *k[1:])])
        out[layer] = block
    return out


def _image_se(raw: dict, layer: str, metric: str, col: int | None) -> float | None:
    stats = raw.get(("image", layer, metric))
    if stats is None or col is None:
        return None
    return mean_se(stats[0, col], stats[1, col], stats[2, col])


def _score_ci(raw: dict, layer: str, metric: str, col: int | None, score_value) -> list[float] | None:
    """The 95 % interval of ``1 - metric / control`` over the group ``col`` (``shiftprobe.probe.stats``)."""
    stats = raw.get(("image", layer, metric))
    control = SCORE_CONTROL[metric]
    if stats is None or col is None or ("control_sq", layer, control) not in raw:
        return None
    n_a, sum_a, sumsq_a, sum_ac, sum_c_a = (float(v) for v in stats[:, col])
    r_se = ratio_se(
        n_a, sum_a, sumsq_a, sum_ac, sum_c_a, float(raw["images"]), float(raw["control", layer, control]),
        float(raw["control_sq", layer, control]),
    )
    return score_interval(score_value, r_se)


def group_metrics(raw: dict, ids: torch.Tensor, layers, spatial, control: dict, col: int | None = None) -> dict:
    """Pooled means of every metric over the pairs whose shift id is in ``ids``, with standard errors
    and score intervals over images from the per-image statistics of group column ``col``."""
    count = raw["pair_count"][ids]
    out: dict = {"count": int(count.sum())}
    for layer in layers:
        block = {}
        for key, total in raw.items():
            if not (isinstance(key, tuple) and key[0] == "pair" and key[1] == layer):
                continue
            metric = key[2]
            if metric.endswith("_count"):
                continue
            if metric.endswith("_max"):
                if float(raw["pair", layer, metric.replace("_max", "_count")][ids].sum()) > 0:
                    block[metric] = float(total[ids].max())
                continue
            if metric.endswith("_no_overlap"):
                n_out = int(total[ids].sum())
                if n_out:
                    block[metric] = n_out
                continue
            if metric in MASKED:
                value = _mean(total[ids], raw["pair", layer, f"{metric}_count"][ids])
            else:
                value = _mean(total[ids], count)
            name = "shifted_acc" if metric == "shifted_correct" else metric
            block[name] = value
            if ("image", layer, metric) in raw:
                block[f"{name}_se"] = _image_se(raw, layer, metric, col) if value is not None else None
        ctrl = control[layer]
        scores = [("invariance_score", "dist")]
        if layer in spatial:
            scores.append(("equivariance_score", "sorted_rel"))
            if "sorted_rel_certified" in block:
                scores.append(("equivariance_score_certified", "sorted_rel_certified"))
        for name, metric in scores:
            block[name] = score(block.get(metric), ctrl.get(SCORE_CONTROL[metric]))
            if ("image", layer, metric) in raw:
                block[f"{name}_ci"] = _score_ci(raw, layer, metric, col, block[name])
        out[layer] = block
    return out


def predictions_block(hist: torch.Tensor | None) -> dict | None:
    """The unshifted images' predicted-class histogram, its entropy and whether it is near-constant
    (entropy below ``NEAR_CONSTANT_ENTROPY_FRACTION`` of ``log2(K)`` or one class above
    ``NEAR_CONSTANT_TOP_SHARE`` of the images)."""
    if hist is None:
        return None
    counts = [int(round(float(v))) for v in hist]
    total = sum(counts)
    k = len(counts)
    max_bits = math.log2(k) if k else 0.0
    if total == 0:
        return {"histogram": counts, "entropy_bits": None, "max_entropy_bits": max_bits, "top_class_share": None,
                "near_constant": None}
    shares = [c / total for c in counts]
    entropy = -sum(p * math.log2(p) for p in shares if p > 0)
    entropy = max(0.0, entropy)  # -0.0 for a single class
    top = max(shares)
    near = entropy < NEAR_CONSTANT_ENTROPY_FRACTION * max_bits or top > NEAR_CONSTANT_TOP_SHARE
    return {"histogram": counts, "entropy_bits": entropy, "max_entropy_bits": max_bits, "top_class_share": top,
            "near_constant": bool(near)}


def inits_summary(runs: list[Mapping]) -> dict:
    """``untrained_inits``: mean, sample sd, min and max over independent initialisations (one
    results dict per initialisation, one sample each) of every figure of the summary blocks (standard
    errors, intervals and counts left out); ``std`` is None with one initialisation."""
    first = runs[0]
    out: dict = {}
    for layer in first.get("layers", []):
        block = {}
        for metric, value in (first.get("summary", {}).get(layer) or {}).items():
            if metric.endswith("_se") or not (value is None or isinstance(value, float)):
                continue  # standard errors, intervals (lists) and counts (ints)
            values = [(r.get("summary", {}).get(layer) or {}).get(metric) for r in runs]
            values = [float(v) for v in values if isinstance(v, float) and math.isfinite(v)]
            if not values:
                continue
            mean = math.fsum(values) / len(values)
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            block[metric] = {"mean": mean, "std": std, "min": min(values), "max": max(values)}
        out[layer] = block
    return {"k": len(runs), "summary": out}


def score(value, control_value):
    if value is None or control_value is None or control_value == 0:
        return None
    return 1.0 - value / control_value


def check_finite_sums(raw: dict, layers) -> None:
    """A ValueError naming the layers whose activations were NaN or infinite on some pair or control
    image: their ``dist`` sums are then not finite. (Without this check a NaN ``aligned_rel`` would be
    counted as a pair without a certified overlap, and every figure there shown as n/a.)"""
    bad = [
        name for name in layers
        if any(key in raw and not bool(torch.isfinite(raw[key]).all()) for key in (("pair", name, "dist"), ("control", name, "dist")))
    ]
    if bad:
        raise ValueError(nonfinite_message(bad, " while measuring"))


def build_results(raw: dict, plan: ShiftPlan, layers, geometry: Mapping, control_offset: int, classifier: str | None) -> dict:
    """The nested results dict (docs/measurement.md, "The results file"); refuses non-finite activations
    (``check_finite_sums``)."""
    layers = tuple(layers)
    check_finite_sums(raw, layers)
    spatial = tuple(name for name in layers if geometry[name].spatial)
    strides = {
        name: (geometry[name].stride[0] if geometry[name].stride[0] == geometry[name].stride[1] else list(geometry[name].stride))
        for name in spatial
        if geometry[name].stride is not None
    }
    control = control_block(raw, layers)
    control["offset"] = int(control_offset)
    present = set(torch.nonzero(raw["pair_count"] > 0).flatten().tolist())
    columns = {g: col for col, g in enumerate(plan.groups())}

    def group(key: tuple):
        """The block of one group of ``plan.groups()``, or None when none of its shifts was measured."""
        ids = [sid for sid in plan.group_shift_ids(key) if sid in present]
        if not ids:
            return None
        return group_metrics(raw, torch.tensor(ids, dtype=torch.long), layers, spatial, control, columns[key])

    shifts = []
    for sid in sorted(present):
        dy, dx = plan.id_to_shift(sid)
        shifts.append({"dy": dy, "dx": dx, **group(("shift", sid))})
    radial = []
    for r in range(plan.max_shift + 1):
        block = group(("radius", r))
        if block is not None:
            radial.append({"radius": r, **block})
    parity = {}
    for name in ("even", "odd"):
        block = group(("parity", name))
        if block is not None:
            parity[name] = block
    summary = group(("summary",)) or {"count": 0}
    n = float(raw["images"])
    if classifier is not None and classifier in summary:
        agree = float(raw["two_shift_agree"])
        summary[classifier]["consistency_two_shifts"] = agree / n if n else None
        summary[classifier]["consistency_two_shifts_se"] = mean_se(n, agree, agree)  # 0/1 values: sum of squares = sum
    labelled = classifier is not None and ("pair", classifier, "shifted_correct") in raw
    correct = float(raw["correct"])
    return {
        "accuracy": correct / n if n and labelled else None,
        "accuracy_se": mean_se(n, correct, correct) if labelled else None,
        "predictions": predictions_block(raw.get("pred_hist")),
        "shift_mode": plan.mode,
        "shift_pattern": plan.pattern,
        "max_shift": plan.max_shift,
        "n_images": int(n),
        "layers": list(layers),
        "classifier": classifier,
        "strides": strides,
        "geometry": {name: geometry[name].to_dict() for name in layers},
        "control": control,
        "shifts": shifts,
        "radial": radial,
        "parity": parity,
        "summary": summary,
    }
