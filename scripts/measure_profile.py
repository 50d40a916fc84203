#!/usr/bin/env python
"""CPU time by phase of the lab's default measurement: MNIST_ROOT=../shared/data python scripts/measure_profile.py

One lab network (seed-0 weights, or ``--weights`` a state_dict), the default translation measurement
(9x9 crop grid) over the first ``--images`` test images, one thread and one worker, so that the phases'
CPU times add up. Each phase is a function of the engine, timed around every call (``time.process_time``);
nested phases (the shared sort inside a selection, for instance) are not subtracted from each other.
"""

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import _network, _test_set  # noqa: E402

import shiftprobe.probe.pairs as pairs  # noqa: E402
from shiftprobe.models.crop_windows import CropWindows  # noqa: E402
from shiftprobe.probe.measure import measure_family  # noqa: E402
from shiftprobe.probe.translation import Translation  # noqa: E402
from shiftprobe.probe.window_sort import WindowSorter  # noqa: E402

#: (owner, function, phase)
PHASES = [
    (WindowSorter, "__init__", "shared sort (once per batch and layer)"),
    (WindowSorter, "__call__", "selection of the windows' sorted values"),
    (pairs, "sort_channels", "per-window sorts (conv2, f(x), controls)"),
    (pairs, "sorted_rel", "sorted_rel: differences and norms"),
    (pairs.PairComputer, "window_products", "window products (FFT, box sums)"),
    (Translation, "map_values", "map metrics (aligned, nearest aligned)"),
    (CropWindows, "shifted", "shifted maps (stacking, the head per shift)"),
    (CropWindows, "basis", "basis (conv1, conv2 per pooling phase)"),
    (pairs.PairComputer, "_control_update", "control pairs"),
    (pairs.PairComputer, "batch_updates", "all of a batch's work"),
]


def timed(seconds: collections.Counter, real, phase: str):
    def run(*args, **kwargs):
        start = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            seconds[phase] += time.process_time() - start

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", "data"), help="folder holding MNIST/raw/")
    parser.add_argument("--images", type=int, default=2000, help="test images (default 2000)")
    parser.add_argument("--weights", help="a state_dict of the lab CNN (default: the seed-0 initial weights)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, labels = _test_set(args.root, args.images)
    net = _network()
    if args.weights:
        net.load_state_dict(torch.load(args.weights, weights_only=True))
    seconds = collections.Counter()
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in PHASES]
    try:
        for owner, name, phase in PHASES:
            setattr(owner, name, timed(seconds, getattr(owner, name), phase))
        start = time.process_time()
        measure_family(net, images, labels, Translation(4), workers=1)
        total = time.process_time() - start
    finally:
        for owner, name, real in saved:
            setattr(owner, name, real)
    print(f"{'phase':44s} {'CPU s':>7s} {'ms/image':>9s}")
    for _, _, phase in PHASES:
        print(f"{phase:44s} {seconds[phase]:7.2f} {1e3 * seconds[phase] / len(images):9.3f}")
    print(f"{'measure_family, in all':44s} {total:7.2f} {1e3 * total / len(images):9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
