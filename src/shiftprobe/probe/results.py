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

from shiftprobe.atomic import write_text


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
        """The translation's summary; without one (no translation measured), the single family's."""
        if "summary" in self.data:
            return self.data["summary"]
        families = self.data.get("families") or {}
        if len(families) == 1:
            return next(iter(families.values())).get("summary", {})
        return {}

    @property
    def families(self) -> dict[str, Results]:
        """Each measured family's section by name (``transform=[...]``); empty for a single Translation."""
        return {name: Results(section) for name, section in (self.data.get("families") or {}).items()}

    @property
    def untrained(self) -> Results | None:
        un = self.data.get("untrained")
        return Results(un) if un is not None else None

    def to_dict(self) -> dict:
        """Exactly what ``results.json`` holds (JSON types only)."""
        return to_jsonable(self.data)

    def save(self, path: str | Path) -> Path:
        """Write ``results.json`` (NaN and infinities become ``null``) atomically: a temporary file in the
        same folder renamed into place (``shiftprobe.atomic``); a full disk or a read-only folder raises a
        one-line ``WriteError`` (an ``OSError``)."""
        return write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def to_dataframe(self):
        """A tidy pandas frame: one row per network x family x layer x transform x metric.

        Translation rows have ``group="shift"`` with ``dy``, ``dx`` and ``radius``; every other family's
        rows have ``group="param"`` with ``param`` (its parameter as results.json writes it: ``1``,
        ``"horizontal"``, ``-45.0``, ``"x:0.5"`` for a sub-pixel offset along x, ``"0.5,-0.25"`` for a
        2-D grid cell); each family's summary rows have ``group="summary"``.
        """
        import pandas as pd

        rows = []

        def add(network: str, family: str, res: Mapping) -> None:
            for entry in res.get("shifts", []):
                for layer in res.get("layers", []):
                    for metric, value in (entry.get(layer) or {}).items():
                        rows.append(
                            {"network": network, "family": family, "group": "shift", "layer": layer,
                             "dy": entry["dy"], "dx": entry["dx"], "radius": max(abs(entry["dy"]), abs(entry["dx"])),
                             "param": None, "metric": metric, "value": value}
                        )
            for entry in res.get("entries", []):
                for layer in res.get("layers", []):
                    for metric, value in (entry.get(layer) or {}).items():
                        rows.append(
                            {"network": network, "family": family, "group": "param", "layer": layer, "dy": None,
                             "dx": None, "radius": None, "param": _param_label(entry.get("param")), "metric": metric,
                             "value": value}
                        )
            for layer, block in (res.get("summary") or {}).items():
                if isinstance(block, Mapping):
                    for metric, value in block.items():
                        rows.append(
                            {"network": network, "family": family, "group": "summary", "layer": layer,
                             "dy": None, "dx": None, "radius": None, "param": None, "metric": metric, "value": value}
                        )

        for network, res in (("trained", self.data), ("untrained", self.data.get("untrained"))):
            if res and res.get("shifts") is not None:
                add(network, res.get("family", "translation"), res)
        for name, section in (self.data.get("families") or {}).items():
            if name == "translation" or not isinstance(section, Mapping):
                continue  # translation's rows are the top level's
            add("trained", name, section)
            if section.get("untrained"):
                add("untrained", name, section["untrained"])
        columns = ["network", "family", "group", "layer", "dy", "dx", "radius", "param", "metric", "value"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        return frame

    def markdown(self) -> str:
        """``results.md``: tables and plain-language conclusions."""
        from shiftprobe.reporting.markdown import results_markdown

        return results_markdown(self.data)


def _param_label(param) -> str | int | float | None:
    """A family parameter as one frame cell: numbers and names as they are, ``{"axis": "x", "offset":
    0.5}`` as ``"x:0.5"``, a 2-D ``[oy, ox]`` as ``"oy,ox"``."""
    if isinstance(param, Mapping):
        return f"{param.get('axis')}:{param.get('offset')}"
    if isinstance(param, (list, tuple)):
        return ",".join(str(v) for v in param)
    return param


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` written by :meth:`Results.save` (or by a run)."""
    return Results(json.loads(Path(path).read_text(encoding="utf-8")))
