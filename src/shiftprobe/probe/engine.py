"""The one measurement loop: batches of this process's images (a DDP rank takes ``rank::world_size``) through a
pair source (``PairComputer``, ``LieComputer``) into the accumulator, in batch order (threads on the CPU:
``run_in_order``), with progress and a time estimate; ``setup``: what every measurement does first (probe
points, the model tried, the geometry inferred). TF32 is off while measuring (``exact_float32``)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from shiftprobe.probe.capture import OUTPUT, Feed, Layer, resolve_layers
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.inputs import check_forward, to_pixels

log = logging.getLogger(__name__)

#: a measurement estimated to take longer than this announces its estimate before going on
ANNOUNCE_AFTER_S = 60.0
#: default ``pairs_per_chunk`` by device type (``default_pairs_per_chunk``)
PAIRS_PER_CHUNK = {"cpu": 512, "accelerator": 4096}
#: batches queued or running per worker thread ahead of the caller (``run_in_order``)
QUEUED_PER_THREAD = 2
#: the probe points that are the classifier (their arg-max is the prediction), if they are vectors
CLASSIFIER_NAMES = ("logits", OUTPUT)


def default_pairs_per_chunk(device: torch.device | str) -> int:
    """512 on the CPU (a chunk's maps stay in the cache across the metrics' passes), 4096 on an accelerator."""
    return PAIRS_PER_CHUNK["cpu" if torch.device(device).type == "cpu" else "accelerator"]


def control_offset(n_images: int, seed: int) -> int:
    """The seeded offset ``k`` in ``[1, n)`` pairing image ``i`` with the unrelated image ``(i + k) mod n``."""
    if n_images < 2:
        raise ValueError(f"the control needs at least 2 test images, got {n_images}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return int(torch.randint(1, n_images, (1,), generator=g))


def subset_indices(n_images: int, max_images: int | None, seed: int) -> torch.Tensor | None:
    """A seeded random subset of ``max_images`` image indices (sorted), or None for all images (a random
    subset, not the first N: MNIST's test set puts different writers in its two halves)."""
    if max_images is None or max_images >= n_images:
        return None
    if max_images < 2:
        raise ValueError(f"max_images={max_images}: the measurement needs at least 2 images (the control pairs them)")
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
    device = torch.device(device) if device is not None else model_device(model)
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


def run(source, acc, images: torch.Tensor, labels: torch.Tensor | None, net: Network, *, k: int, batch_size: int,
        rank: int = 0, world_size: int = 1, workers: int | None = None, progress: bool = False,
        desc: str = "measuring", pairs_per_image: int = 1) -> dict:
    """Every batch of this process's images through ``source.batch_updates`` into ``acc`` (in batch order);
    returns ``acc.sums()`` (synchronised across DDP ranks)."""
    n, device = len(images), net.device
    images_dev = images.to(device)
    labels_dev = labels.to(device) if labels is not None else None
    batches = torch.split(torch.arange(rank, n, world_size), batch_size)

    def work(idx: torch.Tensor) -> list[dict]:
        # image indices go to the device without blocking; the source reads the plan on the host
        idx_dev = idx.to(device, non_blocking=True)
        ctrl_dev = ((idx + k) % n).to(device, non_blocking=True)
        with source.context():
            return source.batch_updates(
                to_pixels(images_dev[idx_dev], net.dtype), labels_dev[idx_dev] if labels_dev is not None else None,
                to_pixels(images_dev[ctrl_dev], net.dtype), idx,
            )

    # on the CPU the small operations of a chunk parallelise badly inside one operator: one Python thread
    # per core, each on its own batch, keeps every core busy (PyTorch and NumPy release the GIL)
    threads = workers if workers is not None else (torch.get_num_threads() if device.type == "cpu" else 1)
    threads = threads if getattr(source, "parallel", True) else 1
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch", leave=False)
    start, announced = time.perf_counter(), False
    try:
        with contextlib.closing(run_in_order(work, batches, threads)) as ordered:
            for updates in ordered:
                for update in updates:
                    acc.update(**update)
                bar.update()
                if not announced:
                    announced = True
                    estimate = estimated_seconds(time.perf_counter() - start, len(batches), threads)
                    if estimate > ANNOUNCE_AFTER_S and rank == 0:
                        log.info("%s: %d images x %d parameters = %s pairs; about %.0f s (estimated from the first "
                                 "batch)", desc, n, pairs_per_image, f"{n * pairs_per_image:,}", estimate)
    finally:
        bar.close()
        source.close()
    return acc.sums()


def run_in_order(run, batches, threads: int, name: str = "shiftprobe-measure"):
    """``run(batch)`` for every batch, yielded in batch order; with ``threads > 1`` in a pool of threads
    named ``name``, torch at one thread each. Close the generator (``contextlib.closing``) to restore
    torch's threads at once. At most ``QUEUED_PER_THREAD * threads`` batches are queued or running ahead of
    the caller; when it stops (an error, Ctrl-C or SIGTERM, the generator closed) the queued batches are
    cancelled and only the running ones finish: the loop stops within about one batch time."""
    threads = max(1, min(threads, len(batches)))
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
