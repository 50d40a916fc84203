#!/usr/bin/env python
"""The ``scale`` section of the benchmark: memory and time at realistic sizes, in child processes.

    python scripts/bench_scale.py [--quick] [--out scale.json]    # this section alone (a few minutes on 2 cores)
    (scripts/bench.py runs it too, as result["scale"])

* **resnet18**: torchvision ``resnet18`` (random weights, seed 0) on 16 random 3x224x224 uint8 images,
  81 shifts (``Translation(max_shift=4)``, crop mode): ``shiftprobe.measure`` at its default settings
  (default probe points, default memory budget) against plain forward passes over the same shifted images
  (``net(T(s) x)`` for each shift, the 16 images a batch, ``inference_mode``, no metrics, one shift per core in
  threads at one torch thread each: on a shared machine torch's own threads lose far more to contention).
  Each runs in its
  own child process; the time is the work alone (model built, images made), the memory is the child's peak
  resident set size (``ru_maxrss`` read by a launcher process: ``benchlib._run_child``).
* **streamed**: a synthetic map-style ``Dataset`` of ``N`` 1x28x28 images (made from their index, never held
  together; N = 50,000 by default) through a ``DataLoader`` into ``measure`` on the lab CNN with 9 shifts
  (``max_shift=1``): pairs/s and the child's peak RSS. A 224-pixel model over 50,000 images would take hours
  on 2 cores; the lab CNN at 28 pixels shows the streaming (the peak does not grow with N).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from benchlib import _child_env, _run_child  # noqa: E402

from shiftprobe.atomic import write_text  # noqa: E402

RESNET_IMAGES, RESNET_SIZE, MAX_SHIFT = 16, 224, 4
STREAM_IMAGES, STREAM_SHIFT = 50_000, 1


def _resnet(n: int, size: int, arch: str = "resnet18"):
    """torchvision's ``arch`` (random weights, seed 0) and ``n`` seeded random uint8 images of 3 x size x size."""
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def child_measure(n: int, size: int) -> dict:
    import shiftprobe

    net, images = _resnet(n, size)
    start = time.perf_counter()
    res = shiftprobe.measure(net, images, transform=shiftprobe.Translation(max_shift=MAX_SHIFT), examples=False,
                             progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pairs": n * (2 * MAX_SHIFT + 1) ** 2, "layers": len(res.summary)}


def child_forward(n: int, size: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from shiftprobe.probe.resample import shift_images_per_sample
    from shiftprobe.probe.translation import shift_grid

    net, images = _resnet(n, size)
    threads = torch.get_num_threads()

    def one(shift):
        with torch.inference_mode():
            net(shift_images_per_sample(x, torch.tensor([shift]).expand(n, 2), "crop"))

    torch.set_num_threads(1)  # one shift per core, as shiftprobe runs one batch per core
    start = time.perf_counter()
    x = images.float().div_(255)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, shift_grid(MAX_SHIFT)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pairs": n * (2 * MAX_SHIFT + 1) ** 2}


class Synthetic(torch.utils.data.Dataset):
    """``n`` seeded 1x28x28 uint8 images with labels, each made from its index when asked for."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        return torch.randint(0, 256, (1, 28, 28), generator=g, dtype=torch.uint8), int(i) % 10


def child_stream(n: int) -> dict:
    import shiftprobe

    torch.manual_seed(0)
    net = shiftprobe.LabCNN().eval()
    loader = torch.utils.data.DataLoader(Synthetic(n))
    start = time.perf_counter()
    shiftprobe.measure(net, loader, transform=shiftprobe.Translation(max_shift=STREAM_SHIFT), examples=False,
                       progress=False)
    seconds = time.perf_counter() - start
    pairs = n * (2 * STREAM_SHIFT + 1) ** 2
    return {"seconds": seconds, "pairs": pairs, "pairs_per_s": pairs / seconds}


def _child(workdir: Path, tag: str, *args) -> dict:
    out = workdir / f"{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", tag, "--child-out", str(out), *map(str, args)]
    run = _run_child(cmd, workdir / f"{tag}.log", env=_child_env())
    return {**json.loads(out.read_text()), "peak_rss_bytes": run["peak_rss_bytes"], "wall_s": run["wall_s"]}


def scale_bench(workdir: Path, quick: bool = False, log=print) -> dict:
    """The ``scale`` section (``quick``: tiny sizes, figures not meaningful)."""
    workdir.mkdir(parents=True, exist_ok=True)
    n, size = (4, 64) if quick else (RESNET_IMAGES, RESNET_SIZE)
    log(f"scale: resnet18, {n} images of 3x{size}x{size}, {(2 * MAX_SHIFT + 1) ** 2} shifts: shiftprobe, then "
        "plain forward passes (child processes)")
    probe = _child(workdir, "measure", n, size)
    plain = _child(workdir, "forward", n, size)
    stream_n = 200 if quick else STREAM_IMAGES
    log(f"scale: streamed Dataset of {stream_n:,} 1x28x28 images, lab CNN, {(2 * STREAM_SHIFT + 1) ** 2} shifts")
    stream = _child(workdir, "stream", stream_n)
    return {
        "resnet18": {"images": n, "size": size, "shifts": (2 * MAX_SHIFT + 1) ** 2, "shiftprobe": probe,
                     "plain": plain, "time_ratio": probe["seconds"] / plain["seconds"],
                     "peak_rss_ratio": probe["peak_rss_bytes"] / plain["peak_rss_bytes"]},
        "streamed": {"images": stream_n, "shifts": (2 * STREAM_SHIFT + 1) ** 2, "model": "LabCNN 1x28x28", **stream},
        "memory": "peak RSS of each child process (ru_maxrss via a launcher)",
    }


def scale_table(s: dict) -> str:
    r, st = s["resnet18"], s["streamed"]
    gb = 2**30
    return "\n".join([
        f"| resnet18, {r['images']} images 3x{r['size']}x{r['size']}, {r['shifts']} shifts | shiftprobe | plain "
        "forward passes | ratio |",
        "|---|---:|---:|---:|",
        f"| seconds | {r['shiftprobe']['seconds']:.1f} | {r['plain']['seconds']:.1f} | {r['time_ratio']:.2f} |",
        f"| peak RSS | {r['shiftprobe']['peak_rss_bytes'] / gb:.2f} GiB | {r['plain']['peak_rss_bytes'] / gb:.2f} GiB | "
        f"{r['peak_rss_ratio']:.2f} |",
        "",
        f"| streamed Dataset: {st['images']:,} images, {st['model']}, {st['shifts']} shifts | value |",
        "|---|---:|",
        f"| throughput | {st['pairs_per_s']:,.0f} pairs/s ({st['seconds']:.0f} s) |",
        f"| peak RSS | {st['peak_rss_bytes'] / gb:.2f} GiB |",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a benchmark")
    parser.add_argument("--out", default="scale.json")
    parser.add_argument("--child", choices=["measure", "forward", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("sizes", nargs="*", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run = {"measure": child_measure, "forward": child_forward, "stream": child_stream}[args.child]
        write_text(args.child_out, json.dumps(run(*args.sizes)))
        return 0
    with tempfile.TemporaryDirectory(prefix="shiftprobe-scale-") as tmp:
        result = scale_bench(Path(tmp), args.quick, log=lambda m: print(m, file=sys.stderr, flush=True))
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(scale_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
