#!/usr/bin/env python
"""The GPU benchmark (a CUDA GPU): MNIST_ROOT=... python scripts/bench_gpu.py --out gpu.json

1. **agreement**: the lab CNN (seed 0, untrained) on 256 test images, 9x9 shifts, measured on the CPU and
   on the GPU; the largest difference of any summary figure (relative, the denominator at least 1e-3), and
   the exact test on the GPU.
2. **lab**: ``benchlib.gpu_bench``: one full epoch of the plain in-memory loop and of the project's loop
   (``trainer=gpu``), then the measurement of both networks (trained and untrained) on 10,000 test images.
3. **train.py**: ``python train.py trainer=gpu``, the default run end to end (a child process: wall time).
4. **resnet50**: torchvision ``resnet50`` (random weights, seed 0) on 128 random 3x224x224 images, 81 shifts:
   ``shiftprobe.measure`` against plain forward passes over the same shifted images (a batch per shift,
   ``inference_mode``, float32 without TF32, as the measurement runs); seconds of the second of two runs
   (the first warms cuDNN up) and the peak of ``torch.cuda.max_memory_allocated``. The measurement runs at
   budgets of 4 GB, its default (half the free memory, at most 16 GB) and 64 GB; the peak is compared with
   each budget.

A step that fails is recorded with its error and the next one runs. The table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from bench_scale import _resnet  # noqa: E402
from benchlib import PROJECT_ROOT, _network, _test_set, gpu_bench  # noqa: E402

from shiftprobe.atomic import write_text  # noqa: E402

RESNET_IMAGES, MAX_SHIFT = 128, 4


def agreement(root: str, devices=("cpu", "cuda"), n: int = 256) -> dict:
    import shiftprobe

    images, labels = _test_set(root, n)
    res = {dev: shiftprobe.measure(_network().to(dev), images, labels, examples=False, progress=False,
                                   device=dev).summary for dev in devices}
    worst, where = 0.0, None
    for layer, row in res["cpu"].items():
        for key, a in row.items() if isinstance(row, dict) else ():
            b = res[devices[-1]][layer][key]
            if isinstance(a, float) and isinstance(b, float):
                d = abs(a - b) / max(abs(a), abs(b), 1e-3)
                if d > worst:
                    worst, where = d, f"{layer}.{key}"
    return {"images": len(images), "worst_rel_difference": worst, "at": where,
            "conv1_aligned_rel_cuda": res[devices[-1]]["conv1"]["aligned_rel"]}


def _timed(fn, warm_up: bool = True) -> dict:
    """Run ``fn`` (twice with ``warm_up``): the last run's seconds and the peak GPU memory allocated in it."""
    if warm_up:
        fn()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "peak_bytes": torch.cuda.max_memory_allocated() - base}


#: the measurement's memory budgets (None: the default), smallest first
BUDGETS = ("4GB", None, "64GB")


def resnet50() -> dict:
    import shiftprobe
    from shiftprobe.probe.budget import default_memory_budget, parse_memory_budget
    from shiftprobe.probe.resample import shift_images_per_sample
    from shiftprobe.probe.translation import shift_grid

    net, images = _resnet(RESNET_IMAGES, 224, "resnet50")
    net = net.cuda()
    pairs = RESNET_IMAGES * (2 * MAX_SHIFT + 1) ** 2

    def plain():
        x = images.cuda().float().div_(255)
        with torch.inference_mode():
            for s in shift_grid(MAX_SHIFT):
                net(shift_images_per_sample(x, torch.tensor([s], device="cuda").expand(len(x), 2), "crop"))

    def probe(budget):
        return lambda: shiftprobe.measure(net, images, transform=shiftprobe.Translation(max_shift=MAX_SHIFT),
                                          examples=False, progress=False, device="cuda", memory_budget=budget)

    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        out = {"images": RESNET_IMAGES, "pairs": pairs, "plain": _timed(plain)}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    out["plain"]["pairs_per_s"] = pairs / out["plain"]["seconds"]
    for i, budget in enumerate(BUDGETS):
        key = f"shiftprobe_{budget or 'default'}"
        torch.cuda.empty_cache()
        limit = parse_memory_budget(budget) if budget else default_memory_budget("cuda")  # free memory now
        try:
            r = _timed(probe(budget), warm_up=i == 0)
        except torch.OutOfMemoryError as exc:
            out[key] = {"error": f"OutOfMemoryError: {str(exc).splitlines()[0]}", "budget_bytes": limit}
            continue
        out[key] = {**r, "budget_bytes": limit, "pairs_per_s": pairs / r["seconds"],
                    "throughput_ratio": pairs / r["seconds"] / out["plain"]["pairs_per_s"],
                    "memory_ratio": r["peak_bytes"] / out["plain"]["peak_bytes"]}
    return out


def train_py(root: str, workdir: Path) -> dict:
    env = {**os.environ, "MNIST_ROOT": root, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(PROJECT_ROOT / "train.py"), "trainer=gpu",
           f"paths.output_dir={workdir / 'train'}"]
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return {"command": "python train.py trainer=gpu", "wall_s": wall, "returncode": run.returncode,
            "tail": (run.stdout + run.stderr)[-3000:]}


def table(r: dict) -> str:
    rows = [f"device: {r.get('device')}, torch {torch.__version__}"]
    a = r.get("agreement") or {}
    if "worst_rel_difference" in a:
        rows.append(f"| CPU vs GPU, lab CNN, {a['images']} images | worst relative difference "
                    f"{a['worst_rel_difference']:.2e} ({a['at']}); conv1 aligned_rel on the GPU "
                    f"{a['conv1_aligned_rel_cuda']:.1e} |")
    g = r.get("lab") or {}
    if "epoch_seconds" in g:
        rows.append(f"| lab epoch ({g['batches']} batches), project loop | {g['epoch_seconds']:.2f} s; "
                    f"{g['project_images_per_s']:,.0f} vs plain {g['bare_images_per_s']:,.0f} images/s "
                    f"({g['ratio_to_bare']:.2f}x) |")
        rows.append(f"| both lab networks measured, {g['both_networks_images']:,} images, 81 shifts | "
                    f"{g['both_networks_seconds']:.2f} s |")
    t = r.get("train_py") or {}
    if "wall_s" in t:
        rows.append(f"| {t['command']} | {t['wall_s']:.1f} s wall, exit {t['returncode']} |")
    n = r.get("resnet50") or {}
    if "plain" in n:
        p = n["plain"]
        rows.append(f"| resnet50 224 px, {n['pairs']:,} pairs, plain forward | {p['seconds']:.2f} s, "
                    f"{p['pairs_per_s']:,.0f} pairs/s, peak {p['peak_bytes'] / 2**30:.2f} GiB |")
        for key in (k for k in n if k.startswith("shiftprobe_")):
            s = n[key]
            if "error" in s:
                rows.append(f"| resnet50, {key} | {s['error'][:150]} |")
                continue
            rows.append(f"| resnet50, {key} | {s['seconds']:.2f} s, {s['pairs_per_s']:,.0f} pairs/s "
                        f"({s['throughput_ratio']:.2f}x), peak {s['peak_bytes'] / 2**30:.2f} GiB "
                        f"({s['memory_ratio']:.2f}x), budget {s['budget_bytes'] / 2**30:.2f} GiB |")
    rows += [f"FAILED {k}: {v['error']}" for k, v in r.items() if isinstance(v, dict) and "error" in v]
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", default="agreement,lab,train_py,resnet50",
                        help="which steps, comma-separated")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    root = os.environ["MNIST_ROOT"]
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="shiftprobe-gpu-"))
    steps = {
        "agreement": lambda: agreement(root),
        "lab": lambda: gpu_bench(root, "cuda", args.repeats, False, work / "gpu", None, 10_000, MAX_SHIFT),
        "train_py": lambda: train_py(root, work),
        "resnet50": resnet50,
    }
    for name in args.steps.split(","):
        step = steps[name]
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result[name] = step()
        except Exception as exc:  # record it and go on: one call of the device machine runs every step
            traceback.print_exc()
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        result[name]["step_seconds"] = time.perf_counter() - start
        write_text(Path(args.out), json.dumps(result, indent=1, default=str))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
