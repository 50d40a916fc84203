"""Turn the accumulated sums into the results structure written to ``results.json``.

Means are pooled over pairs (sum over the group's pairs / number of pairs), so a group's figure is
the mean over every image-shift pair in it. Scores use the layer's control (unrelated image pairs):
``invariance_score = 1 - dist / control.dist`` and, for conv layers,
``equivariance_score = 1 - sorted_rel / control.sorted_rel``.
"""

from __future__ import annotations

import torch

from shiftprobe.paired import ShiftPlan


def _mean(total: torch.Tensor, count: torch.Tensor) -> float | None:
    c = float(count.sum())
    return float(total.sum()) / c if c > 0 else None


def control_block(raw: dict, layers, conv_layers) -> dict:
    n = float(raw["images"])
    out = {}
    for layer in layers:
        keys = [k for k in raw if isinstance(k, tuple) and k[0] == "control" and k[1] == layer]
        out[layer] = {k[2]: (float(raw[k]) / n if n else None) for k in keys}
    return out


def group_metrics(raw: dict, ids: torch.Tensor, layers, conv_layers, control: dict) -> dict:
    """Pooled means of every metric over the pairs whose shift id is in ``ids``."""
    count = raw["pair_count"][ids]
    out: dict = {"count": int(count.sum())}
    for layer in layers:
        block = {}
        for key, total in raw.items():
            if not (isinstance(key, tuple) and key[0] == "pair" and key[1] == layer):
                continue
            metric = key[2]
            if metric == "aligned_count":
                continue
            if metric == "aligned_rel":
                block[metric] = _mean(total[ids], raw["pair", layer, "aligned_count"][ids])
            elif metric == "shifted_correct":
                block["shifted_acc"] = _mean(total[ids], count)
            else:
                block[metric] = _mean(total[ids], count)
        ctrl = control[layer]
        block["invariance_score"] = _score(block.get("dist"), ctrl.get("dist"))
        if layer in conv_layers:
            block["equivariance_score"] = _score(block.get("sorted_rel"), ctrl.get("sorted_rel"))
        out[layer] = block
    return out


def _score(value, control_value):
    if value is None or control_value is None or control_value == 0:
        return None
    return 1.0 - value / control_value


def build_results(raw: dict, plan: ShiftPlan, layers, strides: dict, control_offset: int) -> dict:
    """The nested results dict (see the README, "Results files")."""
    layers = tuple(layers)
    conv_layers = tuple(strides)
    control = control_block(raw, layers, conv_layers)
    control["offset"] = int(control_offset)
    present = torch.nonzero(raw["pair_count"] > 0).flatten().tolist()

    def ids_where(pred) -> torch.Tensor:
        return torch.tensor([i for i in present if pred(*plan.id_to_shift(i))], dtype=torch.long)

    shifts = []
    for sid in present:
        dy, dx = plan.id_to_shift(sid)
        entry = {"dy": dy, "dx": dx}
        entry.update(group_metrics(raw, torch.tensor([sid]), layers, conv_layers, control))
        shifts.append(entry)
    radial = []
    for r in range(plan.max_shift + 1):
        ids = ids_where(lambda dy, dx, r=r: max(abs(dy), abs(dx)) == r)
        if len(ids):
            radial.append({"radius": r, **group_metrics(raw, ids, layers, conv_layers, control)})
    nonzero = lambda dy, dx: (dy, dx) != (0, 0)  # noqa: E731
    parity = {}
    for name, pred in (
        ("even", lambda dy, dx: nonzero(dy, dx) and dy % 2 == 0 and dx % 2 == 0),
        ("odd", lambda dy, dx: nonzero(dy, dx) and (dy % 2 or dx % 2)),
    ):
        ids = ids_where(pred)
        if len(ids):
            parity[name] = group_metrics(raw, ids, layers, conv_layers, control)
    summary_ids = ids_where(nonzero)
    summary = group_metrics(raw, summary_ids, layers, conv_layers, control) if len(summary_ids) else {"count": 0}
    n = float(raw["images"])
    if "logits" in summary:
        summary["logits"]["consistency_two_shifts"] = float(raw["two_shift_agree"]) / n if n else None
    return {
        "accuracy": float(raw["correct"]) / n if n else None,
        "shift_mode": plan.mode,
        "shift_pattern": plan.pattern,
        "max_shift": plan.max_shift,
        "n_images": int(n),
        "layers": list(layers),
        "strides": dict(strides),
        "control": control,
        "shifts": shifts,
        "radial": radial,
        "parity": parity,
        "summary": summary,
    }

