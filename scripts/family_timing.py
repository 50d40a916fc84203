#!/usr/bin/env python
"""Measurement time of each transformation family on MNIST's test images, one network:

    python scripts/family_timing.py [CHECKPOINT] [--max-images N]

Measures the network (a train.py checkpoint; default: the lab CNN at seed-0 random weights) under each
family's default settings (translation: the 9x9 crop grid) with ``shiftprobe.measure`` on
``$MNIST_ROOT``'s test images, one family at a time, and prints a markdown table of parameters, pairs and
seconds (wall clock, this machine, threads as torch's default).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import shiftprobe
from shiftprobe.data.mnist import load_split

FAMILIES = {
    "translation": lambda: shiftprobe.Translation(max_shift=4),
    "rot90": shiftprobe.Rotation90,
    "flip": shiftprobe.Flip,
    "rotation": shiftprobe.Rotation,
    "subpixel": shiftprobe.SubpixelTranslation,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=None)
    parser.add_argument("--max-images", type=int, default=None, help="a seeded random subset (default: all 10,000)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = shiftprobe.load_network(args.checkpoint) if args.checkpoint else shiftprobe.LabCNN()
    images, labels = load_split(os.environ.get("MNIST_ROOT", "data"), train=False)
    n = min(len(images), args.max_images or len(images))
    print(f"| family | parameters | pairs ({n:,} images) | seconds |\n|---|---|---|---|")
    for name, make in FAMILIES.items():
        family = make()
        params = (2 * family.max_shift + 1) ** 2 if name == "translation" else len(family.params())  # the grid holds 0
        start = time.perf_counter()
        shiftprobe.measure(net, images, labels, transform=family, max_images=args.max_images)
        seconds = time.perf_counter() - start
        print(f"| {name} | {params} | {n * params:,} | {seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
