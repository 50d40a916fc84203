"""The accumulated sums as the results structure of ``results.json``, and the ``Results`` object.

Means are pooled over pairs (sum over the group's pairs / number of pairs), so a group's figure is
the mean over every image-shift pair in it. Scores use the layer's control (unrelated image pairs):
``invariance_score = 1 - dist / control.dist`` and, for spatial layers,
``equivariance_score = 1 - sorted_rel / control.sorted_rel``. ``aligned_rel`` and
``nearest_aligned_rel`` are means over the pairs where they are defined; ``<metric>_no_overlap``
counts the pairs left out because no map position is certified (the shift pushes everything out).

Uncertainty over images (``shiftprobe.probe.stats``): every mean of a group block gets ``<metric>_se``,
the standard error over the group's images of each image's mean over its pairs in the group; every
score gets ``<score>_ci`` = ``[lo, hi]``, a 95 % delta-method interval for ``1 - pair / control`` (a
ratio of two means over the same images). ``sorted_rel_certified`` is the sorting test on the certified
region, scored as ``equivariance_score_certified``. ``predictions`` describes the unshifted images'
predicted classes (a near-constant classifier is consistent whatever it does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shiftprobe.atomic import write_text
from shiftprobe.probe.accumulator import MASKED, SCORE_CONTROL
from shiftprobe.probe.inputs import nonfinite_message
from shiftprobe.probe.migrate import SCHEMA_VERSION, migrate
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
    """The measurement as ``results.json`` holds it: a read-only mapping, with helpers.

    Schema 3 (``shiftprobe.probe.migrate``, docs/measurement.md) stores every measured family once
    under ``families``, in one shape; ``primary`` names the first family measured. ``summary`` is the
    primary family's summary; ``families[name]`` is a ``Results`` of that family's section;
    ``untrained`` the primary section's untrained network; ``res[key]`` falls back to the primary
    section for a key not at the top level (``res["geometry"]``, ``res["layers"]``). A ``Results`` of one
    section (``res.families["rot90"]``) reads that section the same way.

    Examples
    --------
    >>> rot90 = {"layers": ["fc1"], "summary": {"fc1": {"invariance_score": 0.5}}}
    >>> res = Results({"schema_version": 3, "primary": "rot90", "families": {"rot90": rot90}})
    >>> res.summary["fc1"]["invariance_score"], res["layers"]
    (0.5, ['fc1'])
    """

    def __init__(self, data: Mapping):
        self.data = dict(data)

    def _primary(self) -> Mapping | None:
        families = self.data.get("families") or {}
        return families.get(self.data.get("primary")) or next(iter(families.values()), None)

    def __getitem__(self, key):
        if key in self.data:
            return self.data[key]
        primary = self._primary()
        if isinstance(primary, Mapping) and key in primary:
            return primary[key]
        raise KeyError(key)

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return (f"Results(layers=[{', '.join(self.get('layers') or [])}], n_images={self.get('n_images')}, "
                f"untrained={self.untrained is not None})")

    @property
    def summary(self) -> dict:
        """The primary family's summary (of this section, for a section's ``Results``)."""
        return self.data["summary"] if "summary" in self.data else (self._primary() or {}).get("summary", {})

    @property
    def families(self) -> dict[str, Results]:
        """Each measured family's section by name, in measurement order."""
        return {name: Results(section) for name, section in (self.data.get("families") or {}).items()}

    @property
    def untrained(self) -> Results | None:
        """The untrained network's section of the primary family, None when none was measured."""
        un = self.data["untrained"] if "untrained" in self.data else (self._primary() or {}).get("untrained")
        return Results(un) if un else None

    def to_dict(self) -> dict:
        """Exactly what ``results.json`` holds (JSON types only)."""
        return to_jsonable(self.data)

    def save(self, path: str | Path) -> Path:
        """Write ``results.json`` (NaN and infinities become ``null``) atomically: a temporary file in the
        same folder renamed into place (``shiftprobe.atomic``); a full disk or a read-only folder raises a
        one-line ``WriteError`` (an ``OSError``)."""
        return write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def to_dataframe(self):
        """A tidy pandas frame: one row per network x family x group x parameter x layer x metric.

        Columns ``network`` (trained, untrained), ``family``, ``group``, ``layer``, ``dy``, ``dx``,
        ``radius``, ``param``, ``metric``, ``value``. Translation's rows per shift have ``group="shift"``
        with ``dy``, ``dx`` and ``radius``; its ``group="radius"`` rows have ``radius``, its
        ``group="parity"`` rows ``param`` ``"even"`` / ``"odd"``. Every other family's rows have
        ``group="param"`` with ``param`` as results.json writes it (``1``, ``"horizontal"``, ``-45.0``,
        ``"x:0.5"`` for a sub-pixel offset along x, ``"0.5,-0.25"`` for a 2-D grid cell; the Lie
        derivative's generator, ``"rotate"``). Each section's summary rows have ``group="summary"``.
        Values that are not numbers (intervals) are NaN.
        """
        import pandas as pd

        columns = ["network", "family", "group", "layer", "dy", "dx", "radius", "param", "metric", "value"]
        rows = [dict(zip(columns, row, strict=True)) for row in _frame_rows(_whole(self.data))]
        frame = pd.DataFrame(rows, columns=columns)
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        return frame

    def markdown(self) -> str:
        """``results.md``: tables and plain-language conclusions."""
        from shiftprobe.reporting.markdown import results_markdown

        return results_markdown(_whole(self.data))


def _whole(data: Mapping) -> dict:
    """A results dict of schema 3 from whole results of any schema, or from one section."""
    if "groups" in data and "families" not in data:  # a schema-3 section
        name = data.get("family") or "section"
        return {"schema_version": SCHEMA_VERSION, "primary": name, "families": {name: data}}
    if "entries" in data and "families" not in data:  # a 0.2 family section
        return migrate({"families": {data.get("family") or "section": data}})
    return migrate(data)


def _param_label(param) -> str | int | float | None:
    """A family parameter as one frame cell: numbers and names as they are, ``{"axis": "x", "offset":
    0.5}`` as ``"x:0.5"``, a 2-D ``[oy, ox]`` as ``"oy,ox"``."""
    if isinstance(param, Mapping):
        return f"{param.get('axis')}:{param.get('offset')}"
    if isinstance(param, (list, tuple)):
        return ",".join(str(v) for v in param)
    return param


def _frame_rows(results: Mapping):
    """``(network, family, group, layer, dy, dx, radius, param, metric, value)`` for every figure."""
    for family, section in (results.get("families") or {}).items():
        nets = [("trained", section), ("untrained", section.get("untrained"))]
        for network, net in (pair for pair in nets if pair[1]):
            for group, blocks in (net.get("groups") or {}).items():
                for block in blocks:
                    where = _frame_where(family, group, block.get("param"))
                    for layer in net.get("layers", []):
                        for metric, value in (block.get(layer) or {}).items():
                            yield (network, family, where[0], layer, *where[1:], metric, value)
            for layer, block in (net.get("summary") or {}).items():
                for metric, value in (block.items() if isinstance(block, Mapping) else ()):
                    yield network, family, "summary", layer, None, None, None, None, metric, value


def _frame_where(family: str, group: str, param) -> tuple:
    """``(group, dy, dx, radius, param)`` of a block's rows."""
    if family == "translation" and group == "param":
        dy, dx = param
        return "shift", dy, dx, max(abs(dy), abs(dx)), None
    if family == "translation" and group == "radius":
        return "radius", None, None, param, None
    return group, None, None, None, _param_label(param)


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` written by :meth:`Results.save` or by a run, of any schema: older files
    are migrated to schema 3 (``shiftprobe.probe.migrate``), every number unchanged."""
    return Results(migrate(json.loads(Path(path).read_text(encoding="utf-8"))))
