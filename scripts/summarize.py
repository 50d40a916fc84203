#!/usr/bin/env python
"""Summarise a sweep: python scripts/summarize.py outputs/multirun/<date>/<time> [--baseline "<configuration>"] [--out DIR]

Reads every job's results.json and .hydra/overrides.yaml and writes summary.md (per configuration: mean
and 95 % Student-t interval over seeds; each configuration's paired difference to the baseline over the
seeds both ran, with its 95 % interval and a verdict: higher, lower or no detectable difference),
summary.csv (one row per job, with its configuration's _mean, _ci_low, _ci_high, _n and _diff_*,
_verdict columns) and summary_radial.png (score vs radius per layer, one line and interval band per
configuration).

The baseline is a configuration label as summary.md prints it (the overrides without seed and without
those every job shares), e.g. --baseline "experiment=lab"; default: the first configuration.
"""

import argparse
import sys

from shiftprobe.reporting.sweep_summary import UnknownBaseline, summarize_sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/multirun/2026-11-24/12-00-00")
    parser.add_argument("--out", default=None, help="where to write the summary (default: the sweep folder)")
    parser.add_argument(
        "--baseline",
        default=None,
        help='the configuration the others are compared with, e.g. "experiment=lab" (default: the first one)',
    )
    args = parser.parse_args(argv)
    try:
        summary = summarize_sweep(args.sweep_dir, args.out, baseline=args.baseline)
    except (FileNotFoundError, UnknownBaseline) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir
    print(f"{len(summary.rows)} job(s) summarised into {out}/summary.md, summary.csv, summary_radial.png")
    if summary.baseline is not None and len(summary.configs) > 1:
        print(f"paired differences against the baseline {summary.baseline!r} (--baseline to choose another)")
    for job in summary.broken:
        print(f"  skipped {job.path}: {job.problem}")
    print()
    print(open(f"{out}/summary.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
