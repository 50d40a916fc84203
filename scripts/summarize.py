#!/usr/bin/env python
"""Summarise a sweep: python scripts/summarize.py outputs/multirun/<date>/<time> [--out DIR]

Reads every job's results.json and .hydra/overrides.yaml and writes summary.csv, summary.md and
summary_radial.png (invariance vs radius, one line per configuration, per layer).
"""

import argparse
import sys

from shiftprobe.reporting.sweep_summary import summarize_sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/multirun/2026-11-24/12-00-00")
    parser.add_argument("--out", default=None, help="where to write the summary (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        summary = summarize_sweep(args.sweep_dir, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir
    print(f"{len(summary.rows)} job(s) summarised into {out}/summary.md, summary.csv, summary_radial.png")
    for job in summary.broken:
        print(f"  skipped {job.path}: {job.problem}")
    print()
    print(open(f"{out}/summary.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
