"""The one measurement loop: batches of this process's images (a DDP rank takes ``rank::world_size``) through a
pair source (``PairComputer``, ``LieComputer``) into the accumulator, in batch order (threads on the CPU:
``run_in_order``), with progress and a time estimate; ``setup``: what every measurement does first (probe
points, the model tried, the geometry inferred). TF32 is off while measuring (``exact_float32``)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.notebook import tqdm_notebook

from shiftprobe.probe.capture import OUTPUT, Feed, Layer, resolve_layers
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.images import Images
from shiftprobe.probe.inputs import check_forward, to_pixels

log = logging.getLogger(__name__)

#: a measurement estimated to take longer than this announces its estimate before going on
ANNOUNCE_AFTER_S = 60.0
#: batches queued or running per worker thread ahead of the caller (``run_in_order``)
QUEUED_PER_THREAD = 2
#: the probe points that are the classifier (their arg-max is the prediction), if they are vectors
CLASSIFIER_NAMES = ("logits", OUTPUT)


def control_offset(n_images: int, seed: int) -> int:
    """The seeded offset ``k`` in ``[1, n)`` pairing image ``i`` with the unrelated image ``(i + k) mod n``."""
    if n_images < 2:
        raise ValueError(f"the control needs at least 2 test images, got {n_images}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return int(torch.randint(1, n_images, (1,), generator=g))


def subset_indices(n_images: int, max_images: int | None, seed: int, key: str = "max_images",
                   least: int = 2) -> torch.Tensor | None:
    """A seeded random subset of ``max_images`` image indices (sorted), or None for all images (a random
    subset, not the first N: MNIST's test set puts different writers in its two halves). ``key`` names the
    setting, at least ``least`` images (the control pairs two; the Lie derivative takes one)."""
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < least):
        why = " (the control pairs them)" if least > 1 else ""
        raise ValueError(f"{key}={max_images!r}: the measurement needs at least {least} image{'s' * (least > 1)}{why}")
    if max_images is None or max_images >= n_images:
        return None
    g = torch.Generator().manual_seed(int(seed) + 104729)
    return torch.randperm(n_images, generator=g)[:max_images].sort().values


def subset_info(n_measured: int, n_total: int, seed: int) -> dict:
    """How the measured images were chosen (results.json ``subset``)."""
    if n_measured >= n_total:
        return {"n_images": n_total, "of": n_total, "how": "all images"}
    return {"n_images": n_measured, "of": n_total, "seed": int(seed), "how": "seeded random subset"}


def model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def checked_device(model: nn.Module, device) -> torch.device:
    """``device``, or the model's if None; refused where the model's weights are elsewhere."""
    own = model_device(model)
    if device is None:
        return own
    want = torch.device(device)
    if want.type == own.type and (want.index in (None, own.index) or want.type == "cpu"):  # cpu:0 is the cpu
        return own
    if next(model.parameters(), None) is not None:  # a model without weights runs anywhere
        raise ValueError(f"device={str(device)!r}, but the model's weights are on {own}: move the model there first "
                         f"(model.to({str(device)!r})), or leave device unset to measure on the model's device")
    return want


@contextlib.contextmanager
def exact_float32():
    """TF32 off for matmuls and cuDNN convolutions (full float32), restored on exit."""
    matmul_precision = torch.get_float32_matmul_precision()
    cuda_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda_tf32, cudnn_tf32


@dataclass
class Network:
    """One network prepared for a measurement: its probe points, their geometry, its device and dtype."""

    model: nn.Module
    layers: list[Layer]
    geometry: dict[str, LayerGeometry]
    classifier: str | None
    device: torch.device
    dtype: torch.dtype
    feed: Feed

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]


def setup(model: nn.Module, pixels: torch.Tensor, layers: Sequence[str] | None, feed: Feed, *,
          device=None, seed: int = 0, rank: int = 0) -> Network:
    """Resolve the probe points, try the model on the first images, infer the geometry (call inside
    ``exact_float32`` and ``eval_mode``); the geometry's notes are logged once (rank 0)."""
    device = checked_device(model, device)
    dtype = model_dtype(model)
    resolved = resolve_layers(model, layers)
    check_forward(model, resolved, pixels, feed, device, dtype)
    geometry = infer_geometry(model, resolved, tuple(pixels.shape[1:]), device=device, seed=seed, feed=feed)
    for name, geo in geometry.items():
        if geo.spatial and geo.note and rank == 0:
            log.warning("layer %s: %s", name, geo.note)
    names = [layer.name for layer in resolved]
    classifier = next((n for n in CLASSIFIER_NAMES if n in names and geometry[n].kind == "vector"
                       and geometry[n].shape[0] >= 2), None)
    return Network(model, resolved, geometry, classifier, device, dtype, feed)


class PairSource:
    """The part every pair source of ``run`` shares: the accumulator's ``image_keys`` and the plan's membership
    matrix (``bind``), and its hooks' removal."""

    parallel = True  # batches may run in threads (``worker_threads``)
    image_keys: tuple = ()
    membership: torch.Tensor | None = None

    def bind(self, acc, plan) -> None:
        self.image_keys = acc.image_keys
        self.membership = plan.membership(acc.pair_count.dtype).to(acc.pair_count.device)

    def close(self) -> None:
        self.capture.remove()


def worker_threads(workers: int | None, device: torch.device, source) -> int:
    """Batches measured at once: on the CPU the small operations of a chunk parallelise badly inside one
    operator, so one Python thread per core, each on its own batch, keeps every core busy (PyTorch and NumPy
    release the GIL); one on an accelerator and for a source that is not ``parallel``."""
    threads = workers if workers is not None else (torch.get_num_threads() if device.type == "cpu" else 1)
    return threads if source.parallel else 1


def progress_default(progress: bool | None) -> bool:
    """``progress=None``: on where a terminal (stderr) or a notebook is attached."""
    if progress is not None:
        return bool(progress)
    shell = sys.modules.get("IPython")
    kernel = shell is not None and "IPKernelApp" in getattr(getattr(shell, "get_ipython", lambda: None)(), "config", {})
    return kernel or (sys.stderr is not None and sys.stderr.isatty())


class QuietStream:
    """A text stream whose write errors are dropped: a progress bar on a pipe that closed (``2>&1 | tee``, tee
    gone) would raise inside tqdm, which keeps its lock after a failed write, and every measuring thread would
    wait on that lock for good (SIGTERM could not end the run either)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):  # a broken pipe, a closed file
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run(source, acc, images: Images, net: Network, *, k: int, batch_size: int, rank: int = 0, world_size: int = 1,
        workers: int | None = None, progress: bool = False, desc: str = "measuring", pairs_per_image: int = 1,
        estimate: str = "") -> dict:
    """Every batch of this process's images (``Images``, streamed) through ``source.batch_updates`` into
    ``acc`` (in batch order); returns ``acc.sums()`` (synchronised across DDP ranks). Progress counts pairs (a
    source with chunks reports each chunk through its ``on_pairs``); ``estimate`` is shown before the work."""
    n, device = len(images), net.device
    batches = torch.split(torch.arange(rank, n, world_size), batch_size)
    threads = worker_threads(workers, device, source)
    total = sum(len(b) for b in batches) * pairs_per_image
    stream = None if issubclass(tqdm, tqdm_notebook) else QuietStream(sys.stderr)
    if progress and rank == 0:
        tqdm.write(f"{desc}: {total:,} pairs ({n:,} images x {pairs_per_image}){estimate}", file=stream)
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="pair", unit_scale=True, leave=False, file=stream)
    chunked = hasattr(source, "on_pairs")
    if chunked:
        source.on_pairs = bar.update

    def work(item) -> list[dict]:
        idx, x, y, x_control = item
        with source.context():
            updates = source.batch_updates(to_pixels(x.to(device, non_blocking=True), net.dtype),
                                           y.to(device, non_blocking=True) if y is not None else None,
                                           to_pixels(x_control.to(device, non_blocking=True), net.dtype), idx)
        if not chunked:
            bar.update(len(idx) * pairs_per_image)
        return updates

    start, announced = time.perf_counter(), False
    try:
        with contextlib.closing(run_in_order(work, images.batches(batches, k), threads, len(batches))) as ordered:
            for updates in ordered:
                for update in updates:
                    acc.update(**update)
                if not announced:
                    announced = True
                    seconds = estimated_seconds(time.perf_counter() - start, len(batches), threads)
                    if seconds > ANNOUNCE_AFTER_S and rank == 0 and not progress:
                        log.info("%s: %d images x %d parameters = %s pairs; about %.0f s (estimated from the first "
                                 "batch)", desc, n, pairs_per_image, f"{total:,}", seconds)
    finally:
        bar.close()
        source.close()
    return acc.sums()


def run_in_order(run, batches, threads: int, n_batches: int | None = None, name: str = "shiftprobe-measure"):
    """``run(batch)`` for every batch, in batch order; with ``threads > 1`` in a thread pool (torch at one
    thread each, restored when the generator is closed), at most ``QUEUED_PER_THREAD * threads`` batches ahead
    of the caller: when it stops, the queued batches are cancelled and only the running ones finish."""
    threads = max(1, min(threads, len(batches) if n_batches is None else n_batches))
    if threads == 1:
        for idx in batches:
            yield run(idx)
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
            todo = iter(batches)
            queued = collections.deque(pool.submit(run, idx) for idx in itertools.islice(todo, QUEUED_PER_THREAD * threads))
            try:
                while queued:
                    done = queued.popleft()
                    for idx in itertools.islice(todo, 1):  # keep the workers busy while the caller applies
                        queued.append(pool.submit(run, idx))
                    yield done.result()
            finally:
                for future in queued:
                    future.cancel()
    finally:
        torch.set_num_threads(old)


def estimated_seconds(first_batch_s: float, n_batches: int, threads: int) -> float:
    """The loop's time from the first batch's: ``threads`` batches run at once, ``ceil(n_batches / threads)``
    rounds of about one batch time each."""
    return first_batch_s * -(-n_batches // max(1, min(threads, n_batches)))
