"""``Results``: a measurement as ``results.json`` holds it (schema 3, ``docs/api.md``), and its reading.

``load_results`` migrates files of older schemas (``shiftprobe.probe.migrate``); the sums become
sections in ``shiftprobe.probe.section``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shiftprobe.atomic import write_text
from shiftprobe.probe.migrate import SCHEMA_VERSION, migrate


def to_jsonable(obj: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None, tuples -> lists, tensors/numpy scalars -> Python numbers."""
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
    """The measurement as ``results.json`` holds it (schema 3: every family's section once under ``families``,
    ``primary`` the first): a read-only mapping whose ``res[key]`` falls back to the primary section for a key
    not at the top level (``res["layers"]``); a ``Results`` of one section reads that section the same way."""

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
        """Write ``results.json`` (NaN and infinities become ``null``) atomically (``shiftprobe.atomic``); a
        full disk or a read-only folder raises a one-line ``WriteError`` (an ``OSError``)."""
        return write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def to_dataframe(self):
        """A tidy pandas frame, one row per network x family x group x parameter x layer x metric
        (docs/measurement.md); translation's per-shift rows have ``group="shift"`` with ``dy``, ``dx``,
        ``radius``; values that are not numbers (intervals) are NaN."""
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
    are migrated to schema 3 (``shiftprobe.probe.migrate``), every number unchanged; any other file is
    refused in one line."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a shiftprobe results.json: not JSON ({err})") from None
    data = migrate(data) if isinstance(data, Mapping) else None
    if not (data or {}).get("families"):
        why = "not a JSON object" if data is None else "no measured family (read a run's or Results.save's file)"
        raise ValueError(f"{path} is not a shiftprobe results.json: {why}")
    return Results(data)
