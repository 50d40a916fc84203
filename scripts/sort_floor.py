#!/usr/bin/env python
"""The CPU time NumPy's sort needs for what the default measurement sorts (issue 12's target 2 floor).

MNIST_ROOT=../shared/data python scripts/sort_floor.py [--images 200]

The sorting test sorts each channel of every shifted map: for the lab CNN and the default 9x9 crop
grid, 81 x (10 x 576 conv1 + 20 x 64 conv2) values per image. This script builds those maps for real
test images (the crop fast path, seed-0 weights), sorts them as the engine does (NumPy, in place, one
thread; best of 3) and prints the CPU time per image and for the 20,000 image-network measurements
of ``bench.json``'s ``measurement.both_networks_seconds``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import _network, _test_set  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", "data"), help="folder holding MNIST/raw/")
    parser.add_argument("--images", type=int, default=200, help="test images (default 200)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, _ = _test_set(args.root, args.images)
    x = images.unsqueeze(1).float() / 255
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    with torch.inference_mode():
        windows = _network().crop_windows()
        maps = windows.shifted(windows.basis(torch.nn.functional.pad(x, (4, 4, 4, 4)), 4), shifts)
    rows = {name: maps[name].contiguous().numpy() for name in ("conv1", "conv2")}
    rows = {name: a.reshape(-1, a.shape[-2] * a.shape[-1]) for name, a in rows.items()}
    best = float("inf")
    for _ in range(3):
        copies = [a.copy() for a in rows.values()]
        start = time.process_time()
        for a in copies:
            a.sort(axis=-1)
        best = min(best, time.process_time() - start)
    per_image = best / len(images)
    values = sum(a.size for a in rows.values()) / len(images)
    print(f"{values:,.0f} values per image; {per_image * 1e3:.2f} ms CPU per image ({per_image / values * 1e9:.2f} ns per value)")
    print(f"20,000 image-network measurements: {per_image * 20000:.1f} CPU s = {per_image * 10000:.1f} s on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
