"""Benchmarks: training and measurement throughput, start-up share, peak memory (``scripts/bench.py``).

Lives outside the installed package: it needs a source checkout (``train.py``, ``conf/``).

Every figure is measured in one run on one machine; throughputs are the median of ``repeats`` runs.

* **training**: images/s of the project's loop (``shiftprobe.app.train.train`` with the default
  Trainer, callbacks and logger, ``trainer.max_epochs=1`` and ``limit_train_batches``) against the
  lab's plain PyTorch loop (torchvision MNIST + ``ToTensor``, ``DataLoader(batch_size=64,
  shuffle=True)``, Adam lr 1e-3, the same ``LabCNN``, NLL on log-probabilities), over the same number
  of batches. Both are timed from the start of the epoch (data-loader iterator created) to the end of
  the last timed batch; set-up, validation and checkpointing are outside the window. The machine's
  limit (``bare_training``): a plain PyTorch loop over the same in-memory uint8 tensors (same model,
  batch 64, Adam, NLL; each batch cut by indexing and converted ``x / 255`` on the device, one seeded
  permutation per epoch): ``ratio_to_bare`` is the project's images/s over it (target >= 0.9).
* **measurement**: image-shift pairs/s of ``measure_results`` (default settings, shift=medium, the
  first ``n`` test images, one network) against the bare forward pass ``net(T(s) x)`` over the same
  pairs (shifted images stacked in batches of about 1024, no metrics). ``both_networks_seconds``: the
  full default measurement (shift=medium, every test image) of a trained network (the plain loop's,
  after the training benchmark's batches) and of an untrained one, as ``train.py`` does after testing.
* **end to end**: wall time of ``python train.py trainer.max_epochs=1`` (default callbacks, so the
  measurement of the trained and the untrained network included) and the time from launching the
  process to the first training step (``FirstStepMarker`` writes ``time.time()`` at batch 0); the
  latter is also taken, as a median, from short launches that stop after one training batch.
* **peak memory**: the maximum resident set size of a child process that measures one network with
  shift=large (17x17 grid) over the test images, read with ``os.wait4`` (stdlib) by a small launcher
  process (``_run_child``: a child forked from the benchmark itself would report at least the
  benchmark's own resident set).
* **gpu**: when CUDA is available, the plain loop, the project's loop (``trainer=gpu``, data resident
  on the GPU) over a full epoch, and the measurement of both networks on the GPU; ``null`` without one.

Every timing on a CUDA device is taken between ``torch.cuda.synchronize`` calls (``_sync``). The
targets of issue 12 and whether each is met: ``result["targets"]`` and the first table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from shiftprobe.atomic import write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent


def _sync(device) -> None:
    """Wait for the device's queued work before reading a clock (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -- callbacks used through Hydra overrides (+callbacks.<name>._target_=benchlib.<Class>) ----------
class FirstStepMarker(L.Callback):
    """Write ``time.time()`` (wall clock) into ``path`` when the first training batch starts (rank 0)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self.done and trainer.is_global_zero:
            write_text(self.path, repr(time.time()))
        self.done = True


class TrainTimer(L.Callback):
    """Time the first epoch's first ``n_batches`` training batches (from the epoch's start) into ``path``."""

    def __init__(self, path: str, n_batches: int):
        self.path, self.n_batches = Path(path), int(n_batches)
        self.start: float | None = None
        self.images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.start is None:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch != 0 or batch_idx >= self.n_batches:
            return
        self.images += len(batch[1])
        if batch_idx == self.n_batches - 1:
            _sync(pl_module.device)
            seconds = time.perf_counter() - self.start
            write_text(self.path, json.dumps({"seconds": seconds, "images": self.images, "batches": self.n_batches}))


# -- training -----------------------------------------------------------------------------------------
def project_training(root: str, n_batches: int, workdir: Path, extra: list[str] = ()) -> dict:
    """The project's default training loop (``train(cfg)``, test off) over ``n_batches`` batches."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from shiftprobe.app.train import train

    workdir.mkdir(parents=True, exist_ok=True)
    timing = workdir / "train_timing.json"
    overrides = [
        f"data.root={root}",
        "data.download=false",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={n_batches}",
        "test=false",
        f"paths.output_dir={workdir}",
        "+callbacks.bench_timer._target_=benchlib.TrainTimer",
        f"+callbacks.bench_timer.path={timing}",
        f"+callbacks.bench_timer.n_batches={n_batches}",
        *extra,
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    with contextlib.redirect_stdout(sys.stderr):  # the progress bar, away from the table
        train(cfg)
    out = json.loads(timing.read_text())
    out["images_per_s"] = out["images"] / out["seconds"]
    return out


def lab_training(root: str, n_batches: int, seed: int = 0) -> dict:
    """The lab's plain PyTorch loop over ``n_batches`` batches of 64."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from shiftprobe.models.lab import LabCNN

    torch.manual_seed(seed)
    dataset = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    net = LabCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    images = 0
    start = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i == n_batches:
            break
        optimizer.zero_grad()
        loss = F.nll_loss(net(x)[0], y)
        loss.backward()
        optimizer.step()
        images += len(y)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": images, "batches": n_batches, "images_per_s": images / seconds}


def bare_training(root: str, n_batches: int, seed: int = 0, device: str = "cpu", keep_net: bool = False) -> dict:
    """The machine's limit: a plain PyTorch loop over the in-memory uint8 training tensors.

    The same ``LabCNN``, batch 64, Adam lr 1e-3 and NLL as the project; the uint8 images live on
    ``device`` and each batch is cut by indexing and converted there (``x / 255``, as the data module
    does); one seeded permutation per epoch (a ``torch.Generator``). No data loader, no framework.
    ``keep_net``: the trained network is returned under ``"net"`` (not JSON)."""
    import torch.nn.functional as F

    from shiftprobe.data import ensure_mnist, load_split
    from shiftprobe.models.lab import LabCNN

    ensure_mnist(root, download=False)
    images, labels = load_split(root, train=True)
    images, labels = images.to(device), labels.to(device)
    torch.manual_seed(seed)
    net = LabCNN().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    g = torch.Generator().manual_seed(seed)
    batch, images_done, done = 64, 0, 0
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    while done < n_batches:
        order = torch.randperm(len(labels), generator=g).to(device)
        for i0 in range(0, len(order), batch):
            if done == n_batches:
                break
            idx = order[i0 : i0 + batch]
            x = images[idx].unsqueeze(1).float().div_(255)
            y = labels[idx]
            optimizer.zero_grad()
            loss = F.nll_loss(net(x)[0], y)
            loss.backward()
            optimizer.step()
            images_done += len(idx)
            done += 1
    _sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    out = {"seconds": seconds, "images": images_done, "batches": n_batches, "images_per_s": images_done / seconds,
           "cpu_images_per_s": images_done / cpu}
    if keep_net:
        out["net"] = net.eval()
    return out


# -- measurement --------------------------------------------------------------------------------------
def _test_set(root: str, n_images: int):
    from shiftprobe.data import ensure_mnist, load_split

    ensure_mnist(root, download=False)
    images, labels = load_split(root, train=False)
    return images[:n_images], labels[:n_images]


def _network(seed: int = 0):
    from shiftprobe.models.lab import LabCNN

    torch.manual_seed(seed)
    return LabCNN().eval()


def measurement_speed(images, labels, max_shift: int, device: str = "cpu") -> dict:
    """``measure_family`` (one network, one translation) with its default settings: pairs/s."""
    from shiftprobe.probe.measure import measure_family
    from shiftprobe.probe.translation import Translation

    transform = Translation(max_shift)
    net = _network().to(device)
    _sync(device)
    start = time.perf_counter()
    measure_family(net, images, labels, transform, device=device)
    _sync(device)
    seconds = time.perf_counter() - start
    pairs = len(images) * len(transform.params())
    return {"seconds": seconds, "pairs": pairs, "pairs_per_s": pairs / seconds}


def both_networks_seconds(trained, images, labels, max_shift: int, device: str = "cpu") -> dict:
    """The full default measurement of ``trained`` and of an untrained ``LabCNN`` (seed 0), one after the
    other with the callback's default settings, as ``train.py`` runs it after testing: seconds."""
    from shiftprobe.probe.measure import measure_family
    from shiftprobe.probe.translation import Translation

    transform = Translation(max_shift)
    nets = [trained.to(device).eval(), _network().to(device)]
    _sync(device)
    start = time.perf_counter()
    for net in nets:
        measure_family(net, images, labels, transform, device=device)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": len(images), "pairs": 2 * len(images) * len(transform.params())}


#: the networks of ``variant_speeds`` (``model=`` names; seed 0, untrained weights)
VARIANTS = ("lab", "blurpool", "circular", "gap", "allconv", "resnet")


def _variant(name: str):
    from shiftprobe.models import AllConvCNN, GapCNN, LabCNN, SmallResNet

    build = {
        "lab": LabCNN,
        "blurpool": lambda: LabCNN(pool="blur"),
        "circular": lambda: LabCNN(padding="circular"),
        "gap": GapCNN,
        "allconv": AllConvCNN,
        "resnet": SmallResNet,
    }[name]
    torch.manual_seed(0)
    return build().eval()


def variant_speeds(images, labels, max_shift: int, repeats: int, device: str = "cpu") -> dict:
    """Seconds of the default measurement of one network (``measure_family``, shift=medium) for each of
    ``VARIANTS`` over the same images, the variants alternating within each repeat; medians, each over
    the lab's (``ratio_to_lab``) and whether the crop fast path served it."""
    from shiftprobe.probe.measure import measure_family
    from shiftprobe.probe.translation import Translation

    transform = Translation(max_shift)
    runs = {name: [] for name in VARIANTS}
    fast = {}
    for _ in range(repeats):
        for name in VARIANTS:
            net = _variant(name).to(device)
            _sync(device)
            start = time.perf_counter()
            res = measure_family(net, images, labels, transform, device=device)
            _sync(device)
            runs[name].append(time.perf_counter() - start)
            fast[name] = res["fast_path"]
    lab = statistics.median(runs["lab"])
    out = {"images": len(images), "max_shift": max_shift}
    for name in VARIANTS:
        seconds = statistics.median(runs[name])
        out[name] = {"seconds": seconds, "ratio_to_lab": seconds / lab, "fast_path": fast[name], "runs": runs[name]}
    out["blurpool_ratio"] = out["blurpool"]["ratio_to_lab"]
    return out


@torch.inference_mode()
def forward_speed(images, max_shift: int, batch_images: int = 64, pairs_per_batch: int = 1024,
                  device: str = "cpu") -> dict:
    """The bare forward pass ``net(T(s) x)`` over the same image-shift pairs: pairs/s."""
    from shiftprobe.probe.resample import shift_images_per_sample
    from shiftprobe.probe.translation import shift_grid

    grid = torch.tensor(shift_grid(max_shift))
    net = _network().to(device)
    images = images.to(device)
    _sync(device)
    start = time.perf_counter()
    pairs = 0
    for i0 in range(0, len(images), batch_images):
        idx = torch.arange(i0, min(i0 + batch_images, len(images)))
        x = images[idx].unsqueeze(1).float().div_(255)
        shifts = grid.view(1, -1, 2).expand(len(idx), -1, -1).to(device)  # B x S x 2
        b, s = shifts.shape[:2]
        step = max(1, pairs_per_batch // b)
        for j0 in range(0, s, step):
            sh = shifts[:, j0 : j0 + step]
            xs = x.unsqueeze(1).expand(b, sh.shape[1], *x.shape[1:]).reshape(-1, *x.shape[1:])
            net(shift_images_per_sample(xs, sh.reshape(-1, 2), "crop"))
            pairs += xs.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pairs": pairs, "pairs_per_s": pairs / seconds}


# -- child processes ----------------------------------------------------------------------------------
def _child_env() -> dict:
    """The environment of a child process: this folder importable (the benchmark callbacks live here)."""
    path = os.pathsep.join(p for p in (str(SCRIPTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PROJECT_ROOT": str(PROJECT_ROOT), "PYTHONPATH": path}


#: runs ``argv[2:]`` and writes its ``ru_maxrss`` to ``argv[1]`` (see ``_run_child``)
_RSS_LAUNCHER = (
    "import os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(usage.ru_maxrss))\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _run_child(cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd`` with output into ``log_path``; return its exit code, wall time and peak RSS (bytes).

    The peak RSS is read by a small launcher process that starts ``cmd`` itself: Linux keeps a process's
    resident-set high-water mark across ``exec``, and a child forked from this (large) benchmark process
    starts with this process's resident set, so its own ``ru_maxrss`` would report at least that."""
    start = time.time()
    rss_path = log_path.with_suffix(".maxrss")
    launcher = [sys.executable, "-c", _RSS_LAUNCHER, str(rss_path), *cmd]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(launcher, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        proc.wait()
    wall = time.time() - start
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}:\n{tail}")
    # ru_maxrss: kilobytes on Linux, bytes on macOS
    rss = int(rss_path.read_text()) * (1 if sys.platform == "darwin" else 1024)
    return {"start": start, "wall_s": wall, "peak_rss_bytes": rss}


def end_to_end(root: str, workdir: Path, extra: list[str] = (), tag: str = "e2e") -> dict:
    """``python train.py trainer.max_epochs=1 ...``: wall time, time to the first training step, peak RSS."""
    run_dir = workdir / tag
    marker = run_dir / "first_step.txt"
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "trainer.max_epochs=1",
        f"data.root={root}",
        "data.download=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.first_step._target_=benchlib.FirstStepMarker",
        f"+callbacks.first_step.path={marker}",
        *extra,
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    out = _run_child(cmd, workdir / f"{tag}.log", env=_child_env(), cwd=PROJECT_ROOT)
    first = float(marker.read_text())
    out["first_step_s"] = first - out.pop("start")
    out["first_step_share"] = out["first_step_s"] / out["wall_s"]
    return out


def peak_memory(root: str, n_images: int, max_shift: int, workdir: Path) -> dict:
    """Peak RSS of a child process measuring one network with a ``max_shift`` grid over ``n_images``."""
    cmd = [
        sys.executable,
        str(SCRIPTS / "bench.py"),
        "--measure-child",
        "--root",
        str(root),
        "--n-images",
        str(n_images),
        "--max-shift",
        str(max_shift),
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    out = _run_child(cmd, workdir / "peak_memory.log", env=_child_env())
    out.pop("start")
    out.update(n_images=n_images, max_shift=max_shift, grid=f"{2 * max_shift + 1}x{2 * max_shift + 1}")
    return out


def _measure_child(root: str, n_images: int, max_shift: int) -> None:
    images, labels = _test_set(root, n_images)
    print(json.dumps(measurement_speed(images, labels, max_shift)))


# -- the whole benchmark --------------------------------------------------------------------------------
def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def run_bench(
    root: str,
    repeats: int = 3,
    quick: bool = False,
    train_batches: int | None = None,
    measure_images: int | None = None,
    memory_images: int | None = None,
    e2e_repeats: int = 1,
    workdir: Path | None = None,
    log=print,
    both_images: int | None = None,
    gpu_device: str | None = None,
    variant_images: int | None = None,
) -> dict:
    """Run every benchmark; ``quick``: tiny sizes for a smoke test (figures not meaningful).

    ``gpu_device``: where the ``gpu`` section runs (default ``cuda`` when available, else no section;
    the tests pass ``cpu`` to run its code)."""
    root = str(root)
    train_batches = train_batches or (4 if quick else 300)
    measure_images = measure_images or (32 if quick else 2000)
    memory_images = memory_images or (32 if quick else 10000)
    both_images = both_images or (32 if quick else 10000)
    variant_images = variant_images or (16 if quick else 500)
    if gpu_device is None and torch.cuda.is_available():
        gpu_device = "cuda"
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="shiftprobe-bench-")
        workdir = Path(tmp.name)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "python": sys.version.split()[0],
            "cuda": torch.cuda.is_available(),
        },
        "quick": quick,
        "repeats": repeats,
    }
    try:
        quick_train = ["data.val_size=100"] if quick else []
        # training: alternate the three loops so all see the same machine state
        log(f"training throughput: {train_batches} batches of 64, {repeats} repeats")
        project, lab, bare = [], [], []
        for r in range(repeats):
            bare.append(bare_training(root, train_batches, keep_net=r == 0))
            lab.append(lab_training(root, train_batches))
            project.append(project_training(root, train_batches, workdir / f"train{r}", quick_train))
        trained = bare[0].pop("net")
        p, b, z = _median(project, "images_per_s"), _median(lab, "images_per_s"), _median(bare, "images_per_s")
        result["training"] = {
            "batches": train_batches,
            "batch_size": 64,
            "project_images_per_s": p,
            "lab_images_per_s": b,
            "ratio": p / b,
            "bare_images_per_s": z,
            "ratio_to_bare": p / z,
            "project_runs": [r["images_per_s"] for r in project],
            "lab_runs": [r["images_per_s"] for r in lab],
            "bare_runs": [r["images_per_s"] for r in bare],
        }

        # measurement vs bare forward
        max_shift = 1 if quick else 4
        log(f"measurement throughput: {measure_images} test images, {2 * max_shift + 1}^2 shifts, {repeats} repeats")
        images, labels = _test_set(root, measure_images)
        meas, fwd = [], []
        for _ in range(repeats):
            fwd.append(forward_speed(images, max_shift))
            meas.append(measurement_speed(images, labels, max_shift))
        m, f = _median(meas, "pairs_per_s"), _median(fwd, "pairs_per_s")
        result["measurement"] = {
            "images": len(images),
            "max_shift": max_shift,
            "pairs": meas[0]["pairs"],
            "measure_pairs_per_s": m,
            "forward_pairs_per_s": f,
            "ratio": m / f,
            "measure_runs": [r["pairs_per_s"] for r in meas],
            "forward_runs": [r["pairs_per_s"] for r in fwd],
        }
        # the full default measurement of both networks (trained: the plain loop's network above)
        log(f"measurement of both networks: {both_images} test images, {2 * max_shift + 1}^2 shifts, {repeats} repeats")
        images, labels = _test_set(root, both_images)
        both = [both_networks_seconds(trained, images, labels, max_shift) for _ in range(repeats)]
        result["measurement"] |= {
            "both_networks_seconds": _median(both, "seconds"),
            "both_networks_images": len(images),
            "both_networks_runs": [r["seconds"] for r in both],
        }
        # the variants against the lab (target 3)
        images, labels = _test_set(root, variant_images)
        log(f"variants: {', '.join(VARIANTS)}, {len(images)} test images, {repeats} repeats")
        result["variants"] = variant_speeds(images, labels, max_shift, repeats)

        # end to end, and the start-up share
        quick_args = (
            [
                "data.val_size=100",
                "+trainer.limit_train_batches=3",
                "callbacks.shift_probe.max_images=16",
                "callbacks.shift_probe.figures=false",
                "shift=small",
            ]
            if quick
            else []
        )
        log(f"end to end: python train.py trainer.max_epochs=1 ({e2e_repeats} run(s)), start-up ({repeats} launches)")
        full = [end_to_end(root, workdir, quick_args, tag=f"e2e{r}") for r in range(e2e_repeats)]
        short_args = quick_args + ["+trainer.max_steps=1", "+trainer.limit_val_batches=0", "test=false"]
        starts = [end_to_end(root, workdir, short_args, tag=f"startup{r}") for r in range(repeats)]
        wall = _median(full, "wall_s")
        startup = float(statistics.median([r["first_step_s"] for r in full + starts]))
        result["end_to_end"] = {
            "command": "python train.py trainer.max_epochs=1",
            "wall_s": wall,
            "first_step_s": startup,
            "first_step_share": startup / wall,
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in full),
            "wall_runs": [r["wall_s"] for r in full],
            "first_step_runs": [r["first_step_s"] for r in full + starts],
        }

        # peak memory of the measurement, shift=large
        large = 1 if quick else 8
        log(f"peak memory: measurement, shift max {large}, {memory_images} test images (child process)")
        result["peak_memory"] = peak_memory(root, memory_images, large, workdir)

        from bench_scale import scale_bench

        result["scale"] = scale_bench(workdir / "scale", quick, log)
        result["gpu"] = None
        if gpu_device is not None:
            log(f"gpu ({gpu_device}): training over a full epoch, measurement of both networks")
            result["gpu"] = gpu_bench(root, gpu_device, repeats, quick, workdir / "gpu", train_batches if quick else None,
                                      both_images, max_shift)
        result["targets"] = targets(result)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def gpu_bench(root: str, device: str, repeats: int, quick: bool, workdir: Path, n_batches: int | None,
              both_images: int, max_shift: int) -> dict:
    """The ``gpu`` section: the plain loop and the project's loop (``trainer=gpu``, splits resident on the
    device) over ``n_batches`` (default: one full epoch of the 55,000 training images), then the
    measurement of both networks; every timing between CUDA synchronisations."""
    dev = torch.device(device)
    if n_batches is None:
        n_batches = -(-55000 // 64)
    trainer = ["trainer=gpu"] if dev.type == "cuda" else ["trainer=cpu"]
    extra = trainer + (["data.val_size=100"] if quick else [])
    bare, project = [], []
    for r in range(repeats):
        bare.append(bare_training(root, n_batches, device=device, keep_net=r == 0))
        project.append(project_training(root, n_batches, workdir / f"train{r}", extra))
    trained = bare[0].pop("net")
    images, labels = _test_set(root, both_images)
    both = [both_networks_seconds(trained, images, labels, max_shift, device=device) for _ in range(repeats)]
    p, z = _median(project, "images_per_s"), _median(bare, "images_per_s")
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "batches": n_batches,
        "project_images_per_s": p,
        "bare_images_per_s": z,
        "ratio_to_bare": p / z,
        "epoch_seconds": _median(project, "seconds"),
        "both_networks_seconds": _median(both, "seconds"),
        "both_networks_images": len(images),
        "project_runs": [r["images_per_s"] for r in project],
        "bare_runs": [r["images_per_s"] for r in bare],
        "both_networks_runs": [r["seconds"] for r in both],
    }


#: issue 12's targets on the CPU: (name, what, the result's section and key, comparison, goal, unit)
TARGETS = (
    ("1", "training, project / plain in-memory loop", ("training", "ratio_to_bare"), ">=", 0.9, "x"),
    ("2", "measurement of both networks, every test image", ("measurement", "both_networks_seconds"), "<=", 12.0, "s"),
    ("2", "measurement / bare forward (pairs/s)", ("measurement", "ratio"), ">=", 3.0, "x"),
    ("3", "blur-pool measurement / the lab's", ("variants", "blurpool_ratio"), "<=", 2.0, "x"),
    ("5", "peak RSS, 17x17 measurement", ("peak_memory", "peak_rss_bytes"), "<=", 2 * 2**30, "bytes"),
)


def targets(result: dict) -> list[dict]:
    """Each target of ``TARGETS`` with the measured value and whether it is met."""
    out = []
    for number, what, (section, key), op, goal, unit in TARGETS:
        value = result[section][key]
        met = value >= goal if op == ">=" else value <= goal
        out.append({"target": number, "what": what, "key": f"{section}.{key}", "value": value, "op": op, "goal": goal,
                    "unit": unit, "met": bool(met)})
    return out


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**30:.2f} GB"
    return f"{value:.2f}x" if unit == "x" else f"{value:.1f} s"


def format_table(result: dict) -> str:
    t, m, e, p = result["training"], result["measurement"], result["end_to_end"], result["peak_memory"]
    mib = p["peak_rss_bytes"] / 2**20
    rows = [
        ("training (images/s)", f"{t['project_images_per_s']:,.0f}", f"{t['lab_images_per_s']:,.0f}", f"{t['ratio']:.2f}"),
        (
            "measurement (pairs/s)",
            f"{m['measure_pairs_per_s']:,.0f}",
            f"{m['forward_pairs_per_s']:,.0f}",
            f"{m['ratio']:.2f}",
        ),
    ]
    rows.insert(1, ("training vs the plain in-memory loop (images/s)", f"{t['project_images_per_s']:,.0f}",
                    f"{t['bare_images_per_s']:,.0f}", f"{t['ratio_to_bare']:.2f}"))
    goals = result.get("targets") or targets(result)
    lines = [
        "| target | measured | goal | met |",
        "|---|---:|---:|:---:|",
        *(f"| {g['target']}. {g['what']} | {_fmt(g['value'], g['unit'])} | {g['op']} {_fmt(g['goal'], g['unit'])} | "
          f"{'yes' if g['met'] else '**no**'} |" for g in goals),
        "",
        "| figure | shiftprobe | baseline | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        "| figure | value |",
        "|---|---:|",
        f"| `{e['command']}` wall time | {e['wall_s']:.1f} s |",
        f"| time to the first training step | {e['first_step_s']:.1f} s ({100 * e['first_step_share']:.0f} % of the run) |",
        f"| peak RSS of that run | {e['peak_rss_bytes'] / 2**20:,.0f} MiB |",
        f"| peak RSS, measurement shift={p['grid']} over {p['n_images']:,} images | {mib:,.0f} MiB ({p['wall_s']:.0f} s) |",
        f"| measurement of both networks, {m['both_networks_images']:,} images, shift max {m['max_shift']} | "
        f"{m['both_networks_seconds']:.1f} s |",
    ]
    v = result.get("variants")
    if v is not None:
        lines += [
            "",
            f"| network (one, {v['images']:,} images, shift max {v['max_shift']}) | seconds | / lab | crop fast path |",
            "|---|---:|---:|:---:|",
            *(f"| {name} | {v[name]['seconds']:.2f} | {v[name]['ratio_to_lab']:.2f} | "
              f"{'yes' if v[name]['fast_path'] else 'no'} |" for name in VARIANTS),
            "",
            "| figure | value |",
            "|---|---:|",
        ]
    if result.get("scale") is not None:
        from bench_scale import scale_table

        lines += ["", scale_table(result["scale"]), "", "| figure | value |", "|---|---:|"]
    g = result.get("gpu")
    if g is None:
        lines.append("| GPU | no GPU on this machine |")
    else:
        lines += [
            f"| GPU ({g['device']}): training, project / plain loop | {g['project_images_per_s']:,.0f} / "
            f"{g['bare_images_per_s']:,.0f} images/s ({g['ratio_to_bare']:.2f}) |",
            f"| GPU: {g['batches']} training batches (one epoch) | {g['epoch_seconds']:.2f} s |",
            f"| GPU: measurement of both networks, {g['both_networks_images']:,} images | {g['both_networks_seconds']:.2f} s |",
        ]
    machine = result["machine"]
    lines += [
        "",
        f"{machine['cpu_count']} CPU cores, {machine['torch_threads']} torch threads, torch {machine['torch']}, "
        f"lightning {machine['lightning']}; throughputs: median of {result['repeats']} repeats"
        + (" (QUICK: tiny sizes, figures not meaningful)" if result["quick"] else ""),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("MNIST_ROOT", str(PROJECT_ROOT / "data")),
                        help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else data/)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per throughput figure (median)")
    parser.add_argument("--e2e-repeats", type=int, default=1, help="full train.py runs (each about a minute)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a benchmark")
    parser.add_argument("--out", default="bench.json", help="JSON output (default bench.json)")
    parser.add_argument("--measure-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n-images", type=int, default=10000, help=argparse.SUPPRESS)
    parser.add_argument("--max-shift", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_child:
        _measure_child(args.root, args.n_images, args.max_shift)
        return 0
    if args.repeats < 1 or args.e2e_repeats < 1:
        parser.error("--repeats and --e2e-repeats must be >= 1")
    from shiftprobe.errors import ShiftProbeError

    start = time.perf_counter()
    try:
        result = run_bench(args.root, repeats=args.repeats, quick=args.quick, e2e_repeats=args.e2e_repeats,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ShiftProbeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result["bench_seconds"] = time.perf_counter() - start
    write_text(args.out, json.dumps(result, indent=2) + "\n")  # atomically: never a half-written bench.json
    print(format_table(result))
    print(f"\nwrote {args.out} ({result['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
