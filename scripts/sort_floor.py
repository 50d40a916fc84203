#!/usr/bin/env python
"""The CPU time NumPy's sort needs for what the default measurement sorts (issue 12's target 2 floor).

MNIST_ROOT=../shared/data python scripts/sort_floor.py [--images 200]

The sorting test sorts each channel of every shifted map: for the lab CNN and the default 9x9 crop
grid, 81 x (10 x 576 conv1 + 20 x 64 conv2) values per image. This script builds those maps for real
test images (the crop fast path, seed-0 weights), sorts them as the engine does (NumPy, in place, one
thread; best of 5) and prints the CPU time per image and for the 20,000 image-network measurements
of ``bench.json``'s ``measurement.both_networks_seconds``.

Sorting every window is not the floor: the windows of one padded map can share one sort
(``shiftprobe.probe.window_sort.sorted_windows``, the same values). The last line times it on the same
maps (``method="auto"``: the shared sort for conv1's 24x24 windows of 32x32 maps, per-window sorts for
conv2's 8x8 windows of 12x12 maps, where selecting costs more than sorting); it starts from the padded
maps, so it includes the windows' copying that the per-window sort above does not. The two are timed
in alternation (best of 5 each), so a busy machine slows both alike.
"""

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import _network, _test_set  # noqa: E402

from shiftprobe.probe.window_sort import sorted_windows  # noqa: E402


def shared_sort_jobs(net, x, shifts) -> list:
    """``sorted_windows`` calls for conv1's and conv2's windows of ``x``'s padded maps, as callables."""
    m = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    windows = net.crop_windows()
    basis = windows.basis(torch.nn.functional.pad(x, (m, m, m, m)), m)
    jobs = []
    for name in ("conv1", "conv2"):
        by_source = {}
        for dy, dx in shifts:
            source, y0, x0 = windows.source(basis, name, dy, dx)
            by_source.setdefault(id(source), (source, []))[1].append((y0, x0))
        side = basis["sides"][name]
        jobs += [functools.partial(sorted_windows, source, origins, side, side) for source, origins in by_source.values()]
    return jobs


def best_cpu_seconds(runs: dict, repeats: int = 5) -> dict:
    """Best CPU seconds of each callable of ``runs``, called in alternation ``repeats`` times (a busy
    machine slows them alike)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", "data"), help="folder holding MNIST/raw/")
    parser.add_argument("--images", type=int, default=200, help="test images (default 200)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    images, _ = _test_set(args.root, args.images)
    x = images.unsqueeze(1).float() / 255
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    net = _network()
    with torch.inference_mode():
        windows = _network().crop_windows()
        maps = windows.shifted(windows.basis(torch.nn.functional.pad(x, (4, 4, 4, 4)), 4), shifts)
    rows = {name: maps[name].contiguous().numpy() for name in ("conv1", "conv2")}
    rows = {name: a.reshape(-1, a.shape[-2] * a.shape[-1]) for name, a in rows.items()}
    with torch.inference_mode():
        jobs = shared_sort_jobs(net, x, shifts)
        copies = []
        best = best_cpu_seconds({
            "copy": lambda: copies.__setitem__(slice(None), [a.copy() for a in rows.values()]),
            "sort": lambda: [a.sort(axis=-1) for a in copies],  # the copies just made, in place
            "shared": lambda: [job() for job in jobs],
        })
    per_image, shared = best["sort"] / len(images), best["shared"] / len(images)
    values = sum(a.size for a in rows.values()) / len(images)
    print(f"{values:,.0f} values per image; {per_image * 1e3:.2f} ms CPU per image ({per_image / values * 1e9:.2f} ns per value)")
    print(f"20,000 image-network measurements: {per_image * 20000:.1f} CPU s = {per_image * 10000:.1f} s on 2 cores")
    print(f"shared sort (sorted_windows, from the padded maps): {shared * 1e3:.2f} ms CPU per image "
          f"({shared / values * 1e9:.2f} ns per value): {per_image / shared:.2f}x less; "
          f"{shared * 10000:.1f} s on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
