"""Raw sums -> one section of results.json (schema 3): pooled means per group, standard errors, score intervals
(``invariance_score = 1 - dist / control.dist``, ``equivariance_score`` from ``sorted_rel``), the control block,
the exact verdicts and the map actions; ``results_dict``: the top level."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from shiftprobe.probe.accumulator import SCORE_CONTROL
from shiftprobe.probe.inputs import nonfinite_message
from shiftprobe.probe.migrate import SCHEMA_VERSION, exact_summary
from shiftprobe.probe.stats import mean_se, ratio_se, score_interval
from shiftprobe.probe.thresholds import (
    NEAR_CONSTANT_ENTROPY_FRACTION,
    NEAR_CONSTANT_TOP_SHARE,
    exact_tolerance,
)


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


def _image_se(raw: dict, layer: str, metric: str, col: int) -> float | None:
    stats = raw.get(("image", layer, metric))
    if stats is None:
        return None
    return mean_se(stats[0, col], stats[1, col], stats[2, col])


def _score_ci(raw: dict, layer: str, metric: str, col: int, score_value) -> list[float] | None:
    """The 95 % interval of ``1 - metric / control`` over the group ``col`` (``shiftprobe.probe.stats``)."""
    stats = raw.get(("image", layer, metric))
    control = SCORE_CONTROL[metric]
    if stats is None or ("control_sq", layer, control) not in raw:
        return None
    n_a, sum_a, sumsq_a, sum_ac, sum_c_a = (float(v) for v in stats[:, col])
    r_se = ratio_se(
        n_a, sum_a, sumsq_a, sum_ac, sum_c_a, float(raw["images"]), float(raw["control", layer, control]),
        float(raw["control_sq", layer, control]),
    )
    return score_interval(score_value, r_se)


def group_metrics(raw: dict, ids: torch.Tensor, layers, spatial, control: dict, col: int) -> dict:
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
            if ("pair", layer, f"{metric}_count") in raw:  # averaged over the pairs where it is defined
                value = _mean(total[ids], raw["pair", layer, f"{metric}_count"][ids])
            else:
                value = _mean(total[ids], count)
            name = "shifted_acc" if metric == "shifted_correct" else metric
            block[name] = value
            if ("image", layer, metric) in raw:
                block[f"{name}_se"] = _image_se(raw, layer, metric, col) if value is not None else None
        ctrl = control[layer]
        scores = [("invariance_score", "dist")] if ("pair", layer, "dist") in raw else []
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
    (entropy below ``NEAR_CONSTANT_ENTROPY_FRACTION`` of ``log2(K)`` or, with three classes or more, one class
    above ``NEAR_CONSTANT_TOP_SHARE`` of the images)."""
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
    # with two classes one of them always has more than half unless they split exactly: entropy alone decides
    near = entropy < NEAR_CONSTANT_ENTROPY_FRACTION * max_bits or (k > 2 and top > NEAR_CONSTANT_TOP_SHARE)
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
    """A ValueError naming the layers whose activations were NaN or infinite on some pair or control image:
    their ``dist`` sums are then not finite (else a NaN would pass for an undefined pair)."""
    bad = [name for name in layers
           if any((kind, name, "dist") in raw and not bool(torch.isfinite(raw[kind, name, "dist"]).all())
                  for kind in ("pair", "control"))]
    if bad:
        raise ValueError(nonfinite_message(bad, " while measuring"))


def group_blocks(raw: dict, plan, layers, scored, control: dict, to_json) -> tuple[dict, dict]:
    """``(groups, summary)`` of a section: a block per group of ``plan`` with measured pairs (the summary
    ``{"count": 0}`` when none), ``param`` labels written by ``to_json``."""
    present = set(torch.nonzero(raw["pair_count"] > 0).flatten().tolist())
    groups: dict = {}
    summary: dict = {"count": 0}
    for col, (name, label, ids) in enumerate(plan.groups):
        ids = [i for i in ids if i in present]
        if not ids:
            continue
        block = group_metrics(raw, torch.tensor(ids, dtype=torch.long), layers, scored, control, col)
        if name == "summary":
            summary = block
        else:
            groups.setdefault(name, []).append({"param": to_json(label) if name == "param" else label, **block})
    return groups, summary


def common_fields(raw: dict, net, control_offset: int) -> dict:
    """What every section states about the network and its images: counts, accuracy, predictions, probe
    points, geometry, the control block and the precision; refuses non-finite activations."""
    layers = tuple(net.names)
    check_finite_sums(raw, layers)
    control = control_block(raw, layers)
    control["offset"] = int(control_offset)
    n = float(raw["images"])
    labelled = net.classifier is not None and ("pair", net.classifier, "shifted_correct") in raw
    correct = float(raw["correct"])
    tol = exact_tolerance(net.dtype)
    return {
        "n_images": int(n), "layers": list(layers), "classifier": net.classifier,
        "accuracy": correct / n if n and labelled else None,
        "accuracy_se": mean_se(n, correct, correct) if labelled else None,
        "predictions": predictions_block(raw.get("pred_hist")),
        "geometry": {name: net.geometry[name].to_dict() for name in layers},
        "control": control,
        "precision": {"dtype": str(net.dtype).replace("torch.", ""), "exact_tol": tol},
    }


def build_section(raw: dict, transform, plan, net, control_offset: int, metrics: dict, image_size) -> dict:
    """The section of one network under one transform (results.json schema 3, docs/measurement.md)."""
    out = common_fields(raw, net, control_offset)
    layers = out["layers"]
    scored = tuple(n for n in layers if "sorted_rel" in metrics[n][0])
    groups, summary = group_blocks(raw, plan, layers, scored, out["control"], transform.param_to_json)
    cls, n = net.classifier, float(raw["images"])
    if cls is not None and cls in summary and plan.draws is not None:
        agree = float(raw["two_shift_agree"])
        summary[cls]["consistency_two_shifts"] = agree / n if n else None
        summary[cls]["consistency_two_shifts_se"] = mean_se(n, agree, agree)  # 0/1 values: sum of squares = sum
    tol = out["precision"]["exact_tol"]
    map_action = {
        name: {"defined": bool(transform.layer_map_metrics(geo, image_size)),
               "note": transform.map_action_note(geo, image_size)}
        for name, geo in net.geometry.items() if geo.spatial
    }
    return {
        "family": transform.name, "kind": "transform", "config": transform.to_dict(),
        "parameter": transform.parameter, "dims": transform.dims, **out, "groups": groups, "summary": summary,
        "exact": exact_summary(groups.get("param", []), layers, tol) if transform.exact_test else {},
        "map_action": map_action,
    }


def results_dict(families: dict, subset: dict, seconds_total: float) -> dict:
    """The top level of results.json (schema 3): every section once, ``primary`` the first."""
    from shiftprobe import __version__

    return {"schema_version": SCHEMA_VERSION, "shiftprobe_version": __version__,
            "primary": next(iter(families), None), "subset": subset, "seconds_total": seconds_total,
            "families": families}
