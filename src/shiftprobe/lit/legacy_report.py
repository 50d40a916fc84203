"""TEMPORARY (issue 19): results.json schema 3 -> the 0.2 shape today's reporting reads.

The reporting part of issue 19 makes ``shiftprobe.reporting`` read schema 3; at that merge the callback
passes its results to the reporting directly and this module is deleted. Pure data, numbers unchanged.
"""

from __future__ import annotations

import torch


def _translation(section: dict) -> dict:
    """A schema-3 translation section in the 0.2 top-level shape."""
    out = {k: v for k, v in section.items() if k not in ("groups", "config", "family", "kind", "examples", "exact")}
    config, groups = section["config"], section["groups"]
    out.update(shift_mode=config["mode"], shift_pattern=config["pattern"], max_shift=config["max_shift"])
    out["strides"] = {name: (g["stride"][0] if g["stride"][0] == g["stride"][1] else g["stride"])
                      for name, g in section["geometry"].items() if g["kind"] == "spatial" and g["stride"] is not None}
    out["shifts"] = [{"dy": b["param"][0], "dx": b["param"][1], **{k: v for k, v in b.items() if k != "param"}}
                     for b in groups.get("param", [])]
    out["radial"] = [{"radius": b["param"], **{k: v for k, v in b.items() if k != "param"}}
                     for b in groups.get("radius", [])]
    out["parity"] = {b["param"]: {k: v for k, v in b.items() if k != "param"} for b in groups.get("parity", [])}
    if "untrained" in section:
        out["untrained"] = _translation(section["untrained"])
    return out


def _family(section: dict) -> dict:
    out = {k: v for k, v in section.items() if k not in ("groups", "kind", "untrained")}
    out["entries"] = section["groups"].get("param", [])
    if "untrained" in section:
        out["untrained"] = _family(section["untrained"])
    return out


def to_v02(results: dict) -> dict:
    """The 0.2 shape of a schema-3 results dict (translation at the top level, ``families``, ``lie_derivative``)."""
    from shiftprobe.probe.lie import lie_result

    families = results["families"]
    out = _translation(families["translation"]) if "translation" in families else {}
    for key in ("subset", "seconds_total", "untrained_origin"):
        if key in results:
            out[key] = results[key]
    others = {name: _family(s) for name, s in families.items() if s["kind"] == "transform" and name != "translation"}
    if others:
        out["families"] = {name: dict(out) if name == "translation" else others[name] for name in families
                           if name == "translation" or name in others}
    lie = families.get("lie_derivative")
    if lie is not None:
        out["lie_derivative"] = lie_result(lie)
        if "untrained" in lie and "untrained" in out:
            out["untrained"]["lie_derivative"] = lie_result(lie["untrained"])
    return out


def examples_of(results: dict) -> dict | None:
    """The translation section's example pairs with tensors, as today's figure draws them."""
    examples = (results["families"].get("translation") or {}).get("examples")
    if examples is None:
        return None
    keys = ("x", "tx", "f_x", "f_t", "aligned_diff")
    pairs = [{k: (torch.tensor(v, dtype=torch.float32) if k in keys and v is not None else v) for k, v in p.items()}
             for p in examples["pairs"]]
    return {**examples, "pairs": pairs}
