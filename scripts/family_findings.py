#!/usr/bin/env python
"""The README's transformation-family findings from a sweep:

    python scripts/family_findings.py outputs/multirun/<date>/<time> [--baseline "experiment=lab"] [--out DIR]

Reads every job's results.json (``families.subpixel`` and ``families.rotation``) and writes
``families.md``: per configuration, the mean over seeds and its 95 % Student-t interval of

* sub-pixel shifts: a layer's invariance score and the logits' consistency at each offset (the mean of
  the shift along x and along y), and the paired difference half-pixel minus one-pixel, seed by seed;
* rotations: the same at each |angle| (the mean of +angle and -angle), and each configuration's paired
  difference to the baseline configuration, seed by seed.

Verdicts (``higher`` / ``lower`` / no detectable difference) are those of ``scripts/summarize.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from shiftprobe.atomic import write_text
from shiftprobe.reporting.sweep_summary import Interval, labelled_jobs, paired_difference, t_interval, verdict

#: (layer, metric) pairs reported for every family
FIGURES = (("fc1", "invariance_score"), ("logits", "invariance_score"), ("logits", "consistency"))


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return math.fsum(vals) / len(vals) if vals else None


def subpixel_by_offset(section: dict, layer: str, metric: str) -> dict[float, float]:
    """``{offset: value}``: the mean over the axes (x, y) of ``layer.metric`` at each offset."""
    per_offset: dict[float, list] = defaultdict(list)
    for entry in (section.get("groups") or {}).get("param", []):  # schema 3 (labelled_jobs migrates)
        param = entry.get("param")
        if isinstance(param, dict) and "offset" in param:
            per_offset[float(param["offset"])].append((entry.get(layer) or {}).get(metric))
    return {o: m for o, values in sorted(per_offset.items()) if (m := _mean(values)) is not None}


def rotation_by_angle(section: dict, layer: str, metric: str) -> dict[float, float]:
    """``{|angle|: value}``: the mean of ``layer.metric`` at +angle and -angle."""
    per_angle: dict[float, list] = defaultdict(list)
    for entry in (section.get("groups") or {}).get("param", []):  # schema 3 (labelled_jobs migrates)
        param = entry.get("param")
        if isinstance(param, (int, float)):
            per_angle[abs(float(param))].append((entry.get(layer) or {}).get(metric))
    return {a: m for a, values in sorted(per_angle.items()) if (m := _mean(values)) is not None}


READERS = {"subpixel": subpixel_by_offset, "rotation": rotation_by_angle}


def collect(sweep_dir) -> tuple[dict, dict]:
    """``values[family][config][(layer, metric, param)][seed]`` and each configuration's seeds."""
    jobs, _ = labelled_jobs(sweep_dir)
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    seeds: dict = defaultdict(set)
    for job in jobs:
        if job.results is None:
            continue
        seeds[job.config].add(job.seed)
        for family, read in READERS.items():
            section = (job.results.get("families") or {}).get(family)
            if not section:
                continue
            for layer, metric in FIGURES:
                for param, value in read(section, layer, metric).items():
                    values[family][job.config][layer, metric, param][job.seed] = value
    return values, seeds


def _cell(iv: Interval, sign: bool = False) -> str:
    """``mean ± half-width`` (``mean`` alone with one seed, ``n/a`` with none)."""
    if iv.mean is None:
        return "n/a"
    mean = f"{iv.mean:+.3f}" if sign else f"{iv.mean:.3f}"
    return mean if iv.half is None else f"{mean} ± {iv.half:.3f}"


def _verdict_cell(diff: Interval) -> str:
    text = f"{_cell(diff, sign=True)}, {verdict(diff).replace('no detectable difference', 'none')}"
    return f"**{text}**" if diff.low is not None and (diff.low > 0 or diff.high < 0) else text


def _params(block: dict) -> list[float]:
    return sorted({key[2] for key in block})


def _fmt_param(family: str, p: float) -> str:
    return f"{p:g} px" if family == "subpixel" else f"±{p:g}°"


def family_tables(family: str, per_config: dict, baseline: str | None) -> list[str]:
    lines = []
    for config, block in per_config.items():
        params = _params(block)
        lines += [f"#### `{config}`", "", "| " + ("offset" if family == "subpixel" else "angle") + " | "
                  + " | ".join(f"{layer} {metric.replace('_', ' ')}" for layer, metric in FIGURES) + " |",
                  "|---" * (len(FIGURES) + 1) + "|"]
        for p in params:
            cells = [_cell(t_interval(block.get((layer, metric, p), {}).values())) for layer, metric in FIGURES]
            lines.append(f"| {_fmt_param(family, p)} | " + " | ".join(cells) + " |")
        lines.append("")
        if family == "subpixel" and 0.5 in params and 1.0 in params:
            lines += ["Half-pixel minus one-pixel shift, seed by seed (95 % t-interval, verdict):", "",
                      "| " + " | ".join(f"{layer} {metric.replace('_', ' ')}" for layer, metric in FIGURES) + " |",
                      "|---" * len(FIGURES) + "|"]
            cells = [_verdict_cell(paired_difference(block.get((layer, metric, 1.0), {}),
                                                     block.get((layer, metric, 0.5), {})).diff)
                     for layer, metric in FIGURES]
            lines += ["| " + " | ".join(cells) + " |", ""]
    if baseline in per_config and len(per_config) > 1:
        base = per_config[baseline]
        for config, block in per_config.items():
            if config == baseline:
                continue
            params = [p for p in _params(block) if p in _params(base)]
            lines += [f"Paired difference `{config}` minus `{baseline}` (95 % t-interval, verdict):", "",
                      "| " + ("offset" if family == "subpixel" else "angle") + " | "
                      + " | ".join(f"{layer} {metric.replace('_', ' ')}" for layer, metric in FIGURES) + " |",
                      "|---" * (len(FIGURES) + 1) + "|"]
            for p in params:
                cells = [_verdict_cell(paired_difference(base.get((layer, metric, p), {}),
                                                         block.get((layer, metric, p), {})).diff)
                         for layer, metric in FIGURES]
                lines.append(f"| {_fmt_param(family, p)} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def findings_markdown(sweep_dir, baseline: str | None = None) -> str:
    values, seeds = collect(sweep_dir)
    lines = ["# Transformation families across seeds", "",
             f"Sweep: `{sweep_dir}`. Each cell: mean over seeds ± half-width of the 95 % t-interval. "
             "Invariance score = 1 - dist / control dist (1 = unchanged, 0 = as different as unrelated images).", ""]
    for config, s in sorted(seeds.items()):
        lines.append(f"- `{config}`: seeds {', '.join(sorted(s))}")
    lines.append("")
    titles = {"subpixel": "Sub-pixel shifts (mean of x and y)", "rotation": "Rotations (mean of +angle and -angle)"}
    for family in READERS:
        if family not in values:
            continue
        per_config = dict(sorted(values[family].items()))
        base = baseline if baseline in per_config else next(iter(per_config))
        lines += [f"### {titles[family]}", ""] + family_tables(family, per_config, base)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--baseline", default=None, help='e.g. "experiment=lab" (default: the first configuration)')
    parser.add_argument("--out", default=None, help="folder for families.md (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        text = findings_markdown(args.sweep_dir, args.baseline)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out or args.sweep_dir)
    write_text(out / "families.md", text)
    print(f"wrote {out / 'families.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
