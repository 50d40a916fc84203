#!/usr/bin/env python
"""The Lie-derivative findings from a sweep of runs with ``callbacks.shift_probe.lie_derivative=[...]``:

    python scripts/lie_findings.py SWEEP_DIR [--out DIR]

Reads every job's results.json (``families.lie_derivative``: the trained network and its ``untrained``
section) and writes ``lie.md``:

* per probe point and generator, the end-to-end ``rel`` (docs/measurement.md: per image, the RMS of
  d/dt over the layer's elements / the RMS of the layer's activation) of the trained and the untrained
  network, each the mean over seeds with its 95 % Student-t interval, and the paired difference trained
  minus untrained, seed by seed, with its verdict;
* with ``lie_derivative_layerwise=true``: per module and generator, its contribution to the output's
  Lie derivative (``layerwise.<module>.<generator>.contribution.rel``), with the same intervals, the
  modules that carry most, and the sum of the parts against the end-to-end value.

Verdicts (``higher`` / ``lower`` / no detectable difference) are those of ``scripts/summarize.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shiftprobe.atomic import write_text
from shiftprobe.reporting.sweep_summary import Interval, labelled_jobs, paired_difference, t_interval


def short(iv: Interval, sign: bool = False) -> str:
    """``0.762 ± 0.008`` (the mean and the half-width of its 95 % interval); one seed: the value."""
    if iv.mean is None:
        return "n/a"
    mean = f"{iv.mean:{'+' if sign else ''}.3g}"
    return mean if iv.half is None else f"{mean} ± {iv.half:.2g}"


def lie_sections(sweep_dir) -> list[tuple[str, dict]]:
    """``[(seed, lie_derivative section)]`` of every job that measured the Lie derivative."""
    jobs, _ = labelled_jobs(sweep_dir)
    out = []
    for job in jobs:
        section = ((job.results or {}).get("families") or {}).get("lie_derivative")  # unfinished: no results
        if section:
            out.append((str(job.seed), section))
    return out


def end_to_end(section: dict, layer: str, generator: str) -> float | None:
    """``rel`` of ``layer`` under ``generator`` (the section's per-generator group)."""
    for entry in (section.get("groups") or {}).get("param", []):
        if entry.get("param") == generator:
            return (entry.get(layer) or {}).get("rel")
    return None


def contribution(section: dict, part: str, generator: str) -> float | None:
    """``rel`` of a module's contribution, or of a gap's (``"a → b"``: what runs between two modules)."""
    lw = section.get("layerwise") or {}
    entry = (lw.get("layerwise") or {}).get(part) or (lw.get("layerwise_between") or {}).get(part) or {}
    return ((entry.get(generator) or {}).get("contribution") or {}).get("rel")


def total(section: dict, generator: str, part: str) -> float | None:
    return ((((section.get("layerwise") or {}).get("layerwise_total") or {}).get(generator) or {}).get(part) or {}).get("rel")


def _cells(trained: dict, untrained: dict) -> list[str]:
    """Trained, untrained, and the paired difference with its verdict: three table cells."""
    diff = paired_difference(untrained, trained)
    return [short(t_interval(list(trained.values()))), short(t_interval(list(untrained.values()))),
            f"{short(diff.diff, sign=True)}, {diff.verdict}"]


def end_to_end_table(sections, layers, generators) -> list[str]:
    lines = ["| layer | generator | trained rel | untrained rel | trained − untrained |", "|---|---|---|---|---|"]
    for layer in layers:
        for g in generators:
            tr = {s: end_to_end(sec, layer, g) for s, sec in sections}
            un = {s: end_to_end(sec.get("untrained") or {}, layer, g) for s, sec in sections}
            lines.append(f"| {layer} | {g} | " + " | ".join(_cells(tr, un)) + " |")
    return lines


def layerwise_table(sections, generators) -> list[str]:
    lw = sections[0][1].get("layerwise") or {}
    gaps = [g for g in (lw.get("layerwise_between") or {})  # the gaps with anything in them
            if any(contribution(sec, g, gen) for _, sec in sections for gen in generators)]
    modules = list(lw.get("layerwise") or {}) + gaps
    if not modules:
        return ["(no layer-wise decomposition: run with callbacks.shift_probe.lie_derivative_layerwise=true)"]
    lines = ["| module | " + " | ".join(generators) + " |", "|---|" + "---|" * len(generators)]
    for m in modules:
        cells = [short(t_interval([contribution(sec, m, g) for _, sec in sections])) for g in generators]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for part in ("modules", "between", "end_to_end"):
        cells = [short(t_interval([total(sec, g, part) for _, sec in sections])) for g in generators]
        lines.append(f"| *{part}* | " + " | ".join(cells) + " |")
    lines += ["", "Modules and gaps (``a → b``: the functional calls between two modules, e.g. ReLU, flatten) that "
              "carry most (largest mean contribution over seeds), per generator:", ""]
    for g in generators:
        means = {m: t_interval([contribution(sec, m, g) for _, sec in sections]).mean for m in modules}
        top = sorted((m for m in means if means[m]), key=lambda m: -means[m])[:3]  # none, or 0: left out
        lines.append(f"- {g}: " + ", ".join(f"{m} ({means[m]:.3f})" for m in top))
    return lines


def lie_markdown(sections) -> str:
    first = sections[0][1]
    generators = [e["param"] for e in (first.get("groups") or {}).get("param", [])]
    layers = list(first.get("layers") or [])
    seeds = ", ".join(s for s, _ in sections)
    return "\n".join([
        "# The Lie derivative across seeds", "",
        f"{len(sections)} job(s), seeds {seeds}; each figure: the mean over seeds ± the half-width of its 95 % "
        "Student-t interval; differences paired by seed.", "",
        "## End to end, per probe point (rel)", "", *end_to_end_table(sections, layers, generators), "",
        "## Layer-wise contributions to the output's Lie derivative (trained network, rel)", "",
        *layerwise_table(sections, generators), "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default=None, help="folder for lie.md (default: the sweep folder)")
    args = parser.parse_args(argv)
    sections = lie_sections(args.sweep_dir)
    if not sections:
        print(f"error: no job in {args.sweep_dir} measured the Lie derivative "
              "(callbacks.shift_probe.lie_derivative=[...])", file=sys.stderr)
        return 1
    out = Path(args.out or args.sweep_dir)
    write_text(out / "lie.md", lie_markdown(sections))
    print(f"wrote {out / 'lie.md'} ({len(sections)} job(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
