#!/usr/bin/env python
"""Where the lab's measurement time goes: CPU time by phase of one network's default measurement.

MNIST_ROOT=../shared/data python scripts/measure_profile.py [--images 2000] [--train-batches 200]

Measures the lab CNN (trained by ``benchlib.bare_training`` for ``--train-batches`` batches, seed 0; 0 =
untrained seed-0 weights) on the first ``--images`` test images, 9x9 crop grid, fast path on, exactly as
``measure_network`` does by default, but serially (one worker, one torch thread) so that every phase's
time is CPU time of one core. The engine is not edited: its functions and the model's crop-window
methods are wrapped with timers for the run (``Phases``) and restored afterwards; each phase's time is
exclusive (a wrapped call inside another is counted in its own phase only). What no wrapper covers is
the engine's own Python (``python / other``). The 2-core estimate is the serial CPU time divided by 2
(the engine runs one batch per core); ``--compare`` also times the engine's real 2-thread run.

``--sort`` adds the sorting prototype's figure (``shiftprobe.probe.window_sort``) on the same maps.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import _network, _test_set, bare_training  # noqa: E402

#: the phases of the report (``_targets`` says which callables each one times)
PHASE_NAMES = (
    "forward: padded conv1/conv2 (basis)", "forward: stack windows", "forward: head (fc1, logits)",
    "forward: plain (x, control, two-shift)", "window products (FFT, integral image)", "window pair metrics",
    "window check (equal)", "pair metrics (fc1, logits)", "sorting: shifted conv1", "sorted_rel (diff, norm)",
    "aligned (shortcut) + certified", "accumulator update", "image means (matmul)", "batch stack / cat",
    "sorting: shifted conv2", "sorting: f(x), control",
)


def sort_phase(f, *args, **kwargs) -> str:
    """The sorting phase of a ``sort_channels`` call: the shifted maps (``B x S x C x h x w``) by layer
    (conv1: 10 channels), else the unshifted or control maps."""
    if f.dim() == 5:
        return PHASE_NAMES[8] if f.shape[2] == 10 else PHASE_NAMES[14]
    return PHASE_NAMES[15]


def _targets(net) -> dict:
    """Which callables each phase wraps (engine module names, methods of the model and the probe)."""
    from shiftprobe.probe import accumulator, capture, engine

    return {
        PHASE_NAMES[0]: [(net, "crop_shift_basis")],
        PHASE_NAMES[1]: [(net, "_stacked_windows")],
        PHASE_NAMES[2]: [(net, "crop_head")],
        PHASE_NAMES[3]: [(capture.LayerCapture, "run")],
        PHASE_NAMES[4]: [(engine, "window_products")],
        PHASE_NAMES[5]: [(engine, "window_pair_metrics")],
        PHASE_NAMES[6]: [(engine._Probe, "window_layers")],
        PHASE_NAMES[7]: [(engine, "pair_metrics")],
        sort_phase: [(engine, "sort_channels")],
        PHASE_NAMES[9]: [(engine, "sorted_rel")],
        PHASE_NAMES[10]: [(engine._Probe, "aligned")],
        PHASE_NAMES[11]: [(accumulator.PairMetricAccumulator, "update")],
        PHASE_NAMES[12]: [(engine, "image_update")],
        PHASE_NAMES[13]: [(engine, "batch_pair_update")],
    }


class Phases:
    """Exclusive CPU time (``time.thread_time``: not the time spent waiting for a core on a busy machine)
    per phase of wrapped callables; single-threaded use only."""

    def __init__(self):
        self.totals = dict.fromkeys(PHASE_NAMES, 0.0)
        self._stack: list[list[float]] = []  # per open call: [start, time of wrapped callees]
        self._saved: list[tuple] = []

    def wrap(self, phase, fn):
        """``fn`` timed into ``phase`` (a name, or a function of the call's arguments giving one)."""

        def timed(*args, **kwargs):
            frame = [time.thread_time(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.thread_time() - frame[0]
                self.totals[phase if isinstance(phase, str) else phase(*args, **kwargs)] += elapsed - frame[1]
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed

    @contextlib.contextmanager
    def installed(self, targets: dict):
        for phase, items in targets.items():
            for owner, attr in items:
                had = attr in vars(owner)
                self._saved.append((owner, attr, had, getattr(owner, attr)))
                setattr(owner, attr, self.wrap(phase, getattr(owner, attr)))
        try:
            yield self
        finally:
            for owner, attr, had, old in reversed(self._saved):
                if had:
                    setattr(owner, attr, old)
                else:
                    delattr(owner, attr)
            self._saved.clear()


def _trained(root: str, batches: int):
    if batches <= 0:
        return _network()
    return bare_training(root, batches, seed=0, keep_net=True)["net"]


def profile(net, images, labels) -> dict:
    """The serial, instrumented measurement of ``net``: CPU seconds by phase, total wall and CPU seconds."""
    from shiftprobe.probe.engine import measure_network
    from shiftprobe.probe.plan import ShiftPlan

    plan = ShiftPlan.build(4, "crop", "grid", 0, len(images))
    phases = Phases()
    with phases.installed(_targets(net)):
        start, cpu = time.perf_counter(), time.thread_time()
        res = measure_network(net, images, labels, plan, workers=1)
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    assert res["fast_path"], "the profile is of the crop fast path"
    return {"phases": phases.totals, "wall": wall, "cpu": cpu}


def engine_seconds(net, images, labels, threads: int = 2) -> float:
    """The engine's own run (``threads`` workers, as ``train.py`` runs it): wall seconds."""
    from shiftprobe.probe.engine import measure_network
    from shiftprobe.probe.plan import ShiftPlan

    plan = ShiftPlan.build(4, "crop", "grid", 0, len(images))
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        measure_network(net, images, labels, plan)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(1)


def window_sources(net, basis: dict, name: str, shifts: list) -> list:
    """``[(map, origins)]``: the padded maps ``name``'s windows come from and their corners (as the engine
    groups them in ``_Probe.window_products``)."""
    by_source = {}
    for dy, dx in shifts:
        source, y0, x0 = net.crop_window_source(basis, name, dy, dx)
        by_source.setdefault(id(source), (source, []))[1].append((y0, x0))
    return list(by_source.values())


def sort_methods(net, basis: dict, name: str, shifts: list) -> dict:
    """What each way of sorting ``name``'s shifted maps costs for one batch: callables by method."""
    from shiftprobe.probe.metrics import sort_channels
    from shiftprobe.probe.window_sort import sorted_windows

    side = basis["sides"][name]
    sources = window_sources(net, basis, name, shifts)

    def today():  # the engine: probe_crop_shifts' torch.stack of the windows, then sort_channels in place
        for source, origins in sources:
            stacked = torch.stack([source[:, :, y : y + side, x : x + side] for y, x in origins], dim=1)
            sort_channels(stacked, inplace=True)

    def method(kind):
        return lambda: [sorted_windows(source, origins, side, side, method=kind) for source, origins in sources]

    return {"today (torch.stack + sort)": today, "sort (np.stack + sort)": method("sort"), "select": method("select")}


def sort_bench(net, images, reps: int = 15) -> str:
    """ns per sorted value of each method on the first batch (64 images): medians of ``reps`` alternating
    rounds (CPU time, one thread), and the median over rounds of today's time over the method's."""
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    x = images[:64].unsqueeze(1).float() / 255
    lines = [f"{'layer':6s} {'method':28s} {'ns/value':>8s} {'x today':>8s} {'ms/img':>7s}"]
    with torch.inference_mode():
        basis = net.crop_shift_basis(x, 4)
        for name in ("conv1", "conv2"):
            methods = sort_methods(net, basis, name, shifts)
            times = {k: [] for k in methods}
            for _ in range(reps):
                for k, fn in methods.items():
                    start = time.process_time()
                    fn()
                    times[k].append(time.process_time() - start)
            values = len(x) * len(shifts) * int(basis["sides"][name]) ** 2 * _channels(basis, name)
            today = times["today (torch.stack + sort)"]
            for k, runs in times.items():
                sec = statistics.median(runs)
                gain = statistics.median(t / r for t, r in zip(today, runs, strict=True))
                lines.append(f"{name:6s} {k:28s} {sec / values * 1e9:8.2f} {gain:7.2f}x {sec / len(x) * 1e3:7.3f}")
    return "\n".join(lines)


def _channels(basis: dict, name: str) -> int:
    return basis["conv1"].shape[1] if name == "conv1" else basis["conv2_phases"][0, 0].shape[1]


def report(prof: dict, n_images: int) -> str:
    covered = sum(prof["phases"].values())
    rows = sorted(prof["phases"].items(), key=lambda kv: -kv[1]) + [("python / other", prof["cpu"] - covered)]
    scale = 20000 / n_images / 2  # 2 x 10,000 images on 2 cores
    lines = [f"{'phase (CPU time)':42s} {'s':>7s} {'share':>6s} {'ms/img':>7s} {'-> 2x10k on 2 cores':>20s}"]
    for name, sec in rows:
        lines.append(f"{name:42s} {sec:7.2f} {sec / prof['cpu']:6.1%} {sec / n_images * 1e3:7.3f} {sec * scale:19.1f}s")
    lines.append(f"{'total (CPU of the serial run)':42s} {prof['cpu']:7.2f} {'':6s} {prof['cpu'] / n_images * 1e3:7.3f} "
                 f"{prof['cpu'] * scale:19.1f}s  (wall {prof['wall']:.2f} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", "data"), help="folder holding MNIST/raw/")
    parser.add_argument("--images", type=int, default=2000, help="test images (default 2000)")
    parser.add_argument("--train-batches", type=int, default=200, help="training batches (0: untrained weights)")
    parser.add_argument("--compare", action="store_true", help="also time the engine's own 2-thread run")
    parser.add_argument("--sort", action="store_true", help="time the ways of sorting the crop windows")
    parser.add_argument("--no-profile", action="store_true", help="skip the phase profile")
    parser.add_argument("--reps", type=int, default=15, help="alternating rounds of --sort (default 15)")
    args = parser.parse_args(argv)
    net = _trained(args.root, args.train_batches).eval()
    torch.set_num_threads(1)
    images, labels = _test_set(args.root, args.images)
    if args.sort:
        print(f"sorting the shifted maps of one batch (64 test images, 81 shifts), lab CNN ({args.train_batches} "
              "training batches); CPU time, one thread")
        print(sort_bench(net, images, args.reps))
    if args.no_profile:
        return 0
    prof = profile(net, images, labels)
    print(f"lab CNN ({args.train_batches} training batches), {args.images} test images, 9x9 crop grid, fast path; "
          "serial (1 worker, 1 thread)")
    print(report(prof, args.images))
    if args.compare:
        wall2 = engine_seconds(net, images, labels)
        print(f"engine's own 2-thread run: {wall2:.2f} s wall ({prof['wall'] / wall2:.2f}x the serial run's wall; "
              f"{prof['cpu'] / wall2:.2f}x its CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
