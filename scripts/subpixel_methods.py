#!/usr/bin/env python
"""Half-pixel against one-pixel shifts, bilinear against Fourier, on a sweep's trained networks:

    python scripts/subpixel_methods.py outputs/multirun/<date>/<time> [--config "experiment=lab"] [--max-images 1000] [--out DIR]

For every job of the configuration (its ``checkpoints/best.ckpt``), measures ``SubpixelTranslation`` with
``method="bilinear"`` and ``method="fourier"`` (crop mode, 1/8-px steps up to 1 px, along x and y) on the
same seeded subset of MNIST's test images (``$MNIST_ROOT``), then writes ``subpixel_methods.md``: per
method the mean over seeds (95 % t-interval) of each figure at 0.5 and 1 px, and the paired difference
half- minus one-pixel, seed by seed. A bilinear half-pixel shift also blurs the image (it averages two
neighbours); the Fourier shift moves it without blurring, so the two methods separate "sub-pixel"
from "smoothed".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import shiftprobe
from shiftprobe.atomic import write_text
from shiftprobe.data.mnist import load_split
from shiftprobe.reporting.sweep_summary import labelled_jobs, paired_difference, t_interval

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_findings import FIGURES, _cell, _verdict_cell, subpixel_by_offset  # noqa: E402

METHODS = ("bilinear", "fourier")


def measure_job(ckpt: Path, images: torch.Tensor, labels: torch.Tensor, max_images: int, seed: int) -> dict:
    """``{method: {(layer, metric, offset): value}}`` for one checkpoint."""
    net = shiftprobe.load_network(ckpt)
    out = {}
    for method in METHODS:
        family = shiftprobe.SubpixelTranslation(method=method, mode="crop")
        res = shiftprobe.measure(net, images, labels, transform=family, max_images=max_images, control_seed=seed)
        section = res.families["subpixel"]
        out[method] = {
            (layer, metric, offset): value
            for layer, metric in FIGURES
            for offset, value in subpixel_by_offset(section, layer, metric).items()
        }
    return out


def methods_markdown(per_seed: dict, config: str) -> str:
    """``per_seed[seed][method][(layer, metric, offset)]`` as tables."""
    lines = [f"# Half-pixel against one-pixel shifts, bilinear and Fourier (`{config}`)", "",
             f"Seeds: {', '.join(sorted(per_seed))}. Mean over seeds ± half-width of the 95 % t-interval; "
             "the last row is the paired difference half- minus one-pixel (verdict).", ""]
    header = "| method | offset | " + " | ".join(f"{layer} {metric.replace('_', ' ')}" for layer, metric in FIGURES) + " |"
    lines += [header, "|---" * (len(FIGURES) + 2) + "|"]
    for method in METHODS:
        for offset in (0.5, 1.0):
            cells = [_cell(t_interval([per_seed[s][method].get((layer, metric, offset)) for s in per_seed]))
                     for layer, metric in FIGURES]
            lines.append(f"| {method} | {offset:g} px | " + " | ".join(cells) + " |")
        cells = []
        for layer, metric in FIGURES:
            one = {s: per_seed[s][method].get((layer, metric, 1.0)) for s in per_seed}
            half = {s: per_seed[s][method].get((layer, metric, 0.5)) for s in per_seed}
            cells.append(_verdict_cell(paired_difference(one, half).diff))
        lines.append(f"| {method} | 0.5 − 1 px | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--config", default="experiment=lab", help="the configuration's label (default experiment=lab)")
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--out", default=None, help="folder for subpixel_methods.md (default: the sweep folder)")
    args = parser.parse_args(argv)
    jobs, _ = labelled_jobs(args.sweep_dir)
    chosen = [j for j in jobs if j.config == args.config and (j.path / "checkpoints" / "best.ckpt").is_file()]
    if not chosen:
        labels = sorted({j.config for j in jobs})
        print(f"error: no job of --config {args.config!r} with checkpoints/best.ckpt; configurations: {labels}", file=sys.stderr)
        return 1
    images, labels = load_split(os.environ.get("MNIST_ROOT", "data"), train=False)
    per_seed = {}
    for job in chosen:
        print(f"measuring {job.path} (seed {job.seed})", flush=True)
        per_seed[job.seed] = measure_job(job.path / "checkpoints" / "best.ckpt", images, labels, args.max_images,
                                         int(job.seed) if job.seed.isdigit() else 0)
    out = Path(args.out or args.sweep_dir)
    write_text(out / "subpixel_methods.md", methods_markdown(per_seed, args.config))
    print(f"wrote {out / 'subpixel_methods.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
