"""The accumulated sums as the results structure of ``results.json``, and the ``Results`` object.

Means are pooled over pairs (sum over the group's pairs / number of pairs), so a group's figure is
the mean over every image-shift pair in it. Scores use the layer's control (unrelated image pairs):
``invariance_score = 1 - dist / control.dist`` and, for spatial layers,
``equivariance_score = 1 - sorted_rel / control.sorted_rel``. ``aligned_rel`` and
``nearest_aligned_rel`` are means over the pairs where they are defined; ``<metric>_no_overlap``
counts the pairs left out because no map position is certified (the shift pushes everything out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shiftprobe.probe.accumulator import COUNTED
from shiftprobe.probe.plan import ShiftPlan


def _mean(total: torch.Tensor, count: torch.Tensor) -> float | None:
    c = float(count.sum())
    return float(total.sum()) / c if c > 0 else None


def control_block(raw: dict, layers) -> dict:
    n = float(raw["images"])
    out = {}
    for layer in layers:
        keys = [k for k in raw if isinstance(k, tuple) and k[0] == "control" and k[1] == layer]
        out[layer] = {k[2]: (float(raw[k]) / n if n else None) for k in keys}
    return out


def group_metrics(raw: dict, ids: torch.Tensor, layers, spatial, control: dict) -> dict:
    """Pooled means of every metric over the pairs whose shift id is in ``ids``."""
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
            if metric in COUNTED:
                block[metric] = _mean(total[ids], raw["pair", layer, f"{metric}_count"][ids])
            elif metric == "shifted_correct":
                block["shifted_acc"] = _mean(total[ids], count)
            else:
                block[metric] = _mean(total[ids], count)
        ctrl = control[layer]
        block["invariance_score"] = score(block.get("dist"), ctrl.get("dist"))
        if layer in spatial:
            block["equivariance_score"] = score(block.get("sorted_rel"), ctrl.get("sorted_rel"))
        out[layer] = block
    return out


def score(value, control_value):
    if value is None or control_value is None or control_value == 0:
        return None
    return 1.0 - value / control_value


def build_results(raw: dict, plan: ShiftPlan, layers, geometry: Mapping, control_offset: int, classifier: str | None) -> dict:
    """The nested results dict (docs/measurement.md, "The results file")."""
    layers = tuple(layers)
    spatial = tuple(name for name in layers if geometry[name].spatial)
    strides = {
        name: (geometry[name].stride[0] if geometry[name].stride[0] == geometry[name].stride[1] else list(geometry[name].stride))
        for name in spatial
        if geometry[name].stride is not None
    }
    control = control_block(raw, layers)
    control["offset"] = int(control_offset)
    present = torch.nonzero(raw["pair_count"] > 0).flatten().tolist()

    def ids_where(pred) -> torch.Tensor:
        return torch.tensor([i for i in present if pred(*plan.id_to_shift(i))], dtype=torch.long)

    def group(ids):
        return group_metrics(raw, ids, layers, spatial, control)

    shifts = []
    for sid in present:
        dy, dx = plan.id_to_shift(sid)
        shifts.append({"dy": dy, "dx": dx, **group(torch.tensor([sid]))})
    radial = []
    for r in range(plan.max_shift + 1):
        ids = ids_where(lambda dy, dx, r=r: max(abs(dy), abs(dx)) == r)
        if len(ids):
            radial.append({"radius": r, **group(ids)})
    nonzero = lambda dy, dx: (dy, dx) != (0, 0)  # noqa: E731
    parity = {}
    for name, pred in (
        ("even", lambda dy, dx: nonzero(dy, dx) and dy % 2 == 0 and dx % 2 == 0),
        ("odd", lambda dy, dx: nonzero(dy, dx) and (dy % 2 or dx % 2)),
    ):
        ids = ids_where(pred)
        if len(ids):
            parity[name] = group(ids)
    summary_ids = ids_where(nonzero)
    summary = group(summary_ids) if len(summary_ids) else {"count": 0}
    n = float(raw["images"])
    if classifier is not None and classifier in summary:
        summary[classifier]["consistency_two_shifts"] = float(raw["two_shift_agree"]) / n if n else None
    return {
        "accuracy": float(raw["correct"]) / n if n and classifier is not None else None,
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


# -- the Results object ---------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None, tuples -> lists, tensors/numpy scalars -> Python numbers."""
    if isinstance(obj, Results):
        return to_jsonable(obj.data)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"cannot write {type(obj).__name__} to results.json: {obj!r}")


class Results(Mapping):
    """The measurement of one network (and, under ``"untrained"``, of its untrained control).

    A read-only mapping over exactly what ``results.json`` holds, with helpers:

    Examples
    --------
    >>> res = Results({"summary": {"fc1": {"invariance_score": 0.5}}, "layers": ["fc1"]})
    >>> res.summary["fc1"]["invariance_score"]
    0.5
    """

    def __init__(self, data: Mapping):
        self.data = dict(data)

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        layers = ", ".join(self.data.get("layers", []))
        return f"Results(layers=[{layers}], n_images={self.data.get('n_images')}, untrained={'untrained' in self.data})"

    @property
    def summary(self) -> dict:
        return self.data.get("summary", {})

    @property
    def untrained(self) -> Results | None:
        un = self.data.get("untrained")
        return Results(un) if un is not None else None

    def to_dict(self) -> dict:
        """Exactly what ``results.json`` holds (JSON types only)."""
        return to_jsonable(self.data)

    def save(self, path: str | Path) -> Path:
        """Write ``results.json`` (NaN and infinities become ``null``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path

    def to_dataframe(self):
        """A tidy pandas frame: one row per network x layer x shift x metric (plus the summary rows,
        ``dy``/``dx`` empty, ``group="summary"``)."""
        import pandas as pd

        rows = []
        for network, res in (("trained", self.data), ("untrained", self.data.get("untrained"))):
            if not res:
                continue
            family = res.get("family", "translation")
            for entry in res.get("shifts", []):
                for layer in res.get("layers", []):
                    for metric, value in (entry.get(layer) or {}).items():
                        rows.append(
                            {"network": network, "family": family, "group": "shift", "layer": layer,
                             "dy": entry["dy"], "dx": entry["dx"], "radius": max(abs(entry["dy"]), abs(entry["dx"])),
                             "metric": metric, "value": value}
                        )
            for layer, block in (res.get("summary") or {}).items():
                if isinstance(block, Mapping):
                    for metric, value in block.items():
                        rows.append(
                            {"network": network, "family": family, "group": "summary", "layer": layer,
                             "dy": None, "dx": None, "radius": None, "metric": metric, "value": value}
                        )
        frame = pd.DataFrame(rows, columns=["network", "family", "group", "layer", "dy", "dx", "radius", "metric", "value"])
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        return frame

    def markdown(self) -> str:
        """``results.md``: tables and plain-language conclusions."""
        from shiftprobe.reporting.markdown import results_markdown

        return results_markdown(self.data)


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` written by :meth:`Results.save` (or by a run)."""
    return Results(json.loads(Path(path).read_text(encoding="utf-8")))
