"""The measurement engine: every probe layer, every shift of the plan, every test image.

Lightning-free: ``measure(net, images, labels, plan, ...)`` returns the filled
``ShiftMetricAccumulator``; ``measure_results`` returns the results dict. A DDP rank passes its
``rank`` / ``world_size`` and processes the images ``rank, rank + world_size, ...``; the
accumulator's sums are then synchronised, so every rank gets the single-process figures.

Speed: for each batch of images, the shifts are processed in chunks of about ``pairs_per_chunk``
image-shift pairs (so the activations of the whole grid never exist at once). In crop mode, a
network that supports it (``LabCNN.probe_crop_shifts``) computes all the shifts of a chunk from one
convolution of the zero-padded images; otherwise the shifted images are stacked into one batch.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from shiftprobe.accumulator import ShiftMetricAccumulator
from shiftprobe.metrics import (
    aligned_rel,
    nearest_aligned_rel,
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sorted_rel,
)
from shiftprobe.paired import ShiftPlan
from shiftprobe.results import build_results
from shiftprobe.shifts import random_shifts, shift_images_per_sample

LOGITS = "logits"


def control_offset(n_images: int, seed: int) -> int:
    """The seeded offset ``k`` in ``[1, n)`` pairing image ``i`` with the unrelated image ``(i + k) mod n``."""
    if n_images < 2:
        raise ValueError(f"the control needs at least 2 test images, got {n_images}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return int(torch.randint(1, n_images, (1,), generator=g))


def two_shift_plan(n_images: int, max_shift: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent seeded random shifts per image within the range (zero allowed), R. Zhang 2019."""
    return (
        random_shifts(n_images, max_shift, seed + 1, nonzero=False),
        random_shifts(n_images, max_shift, seed + 2, nonzero=False),
    )


def shifted_probe(net, x: torch.Tensor, shifts: torch.Tensor, mode: str, basis: dict | None = None) -> dict:
    """``net.probe(T(s) x)`` for ``shifts`` (``B x S x 2``), as ``B x S x ...`` tensors.

    With a crop-window ``basis`` (``net.crop_shift_basis``; only built when every image has the same
    shifts) the maps are windows of the basis; otherwise the shifted images are stacked into one batch.
    """
    b, s = shifts.shape[:2]
    if basis is not None and mode == "crop":
        return net.probe_crop_shifts(None, [tuple(v) for v in shifts[0].tolist()], basis=basis)
    xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
    xs = shift_images_per_sample(xs, shifts.reshape(b * s, 2), mode)
    return {k: v.view(b, s, *v.shape[1:]) for k, v in net.probe(xs).items()}


def _aligned_values(
    base: torch.Tensor, shifted: torch.Tensor, shifts: torch.Tensor, stride: int, mode: str, uniform: bool
):
    """``aligned_rel`` (NaN where the stride does not divide the shift) and ``nearest_aligned_rel`` (the
    best of the nearest integer map offsets; equal to ``aligned_rel`` where that is defined) for every
    pair of a chunk, as two ``B x S`` float64 tensors. ``uniform``: every image has the same shifts."""
    aligned = torch.full(shifts.shape[:2], float("nan"), dtype=torch.float64, device=base.device)
    nearest = aligned.clone()
    groups = (
        [((dy, dx), (slice(None), j)) for j, (dy, dx) in enumerate(shifts[0].tolist())]
        if uniform  # same shifts for every image: one slice per column
        else [
            ((dy, dx), torch.nonzero((shifts[..., 0] == dy) & (shifts[..., 1] == dx), as_tuple=True))
            for dy, dx in set(map(tuple, shifts.reshape(-1, 2).tolist()))
        ]
    )
    for (dy, dx), where in groups:
        f_x = base if uniform else base[where[0]]
        f_t = shifted[where]
        value = aligned_rel(f_x, f_t, dy, dx, stride, mode)
        if value is not None:
            aligned[where] = value
            nearest[where] = value
        else:
            nearest[where] = nearest_aligned_rel(f_x, f_t, dy, dx, stride, mode)
    return aligned, nearest


@torch.inference_mode()
def batch_updates(
    net,
    layers,
    x: torch.Tensor,
    y: torch.Tensor,
    x_control: torch.Tensor,
    shifts: torch.Tensor,
    plan: ShiftPlan,
    strides: dict,
    two_shifts: tuple[torch.Tensor, torch.Tensor] | None = None,
    pairs_per_chunk: int = 256,
    fast_path: bool = True,
) -> list[dict]:
    """Every metric for one batch of images ``x`` (pixels, ``B x 1 x H x W``) and its pairs, as a list of
    ``ShiftMetricAccumulator.update`` keyword sets (applied in order, so sums are reproducible)."""
    updates = []
    base = net.probe(x)
    ctrl = net.probe(x_control)
    flat = {k: base[k].flatten(1) for k in layers}
    sorted_base = {k: sort_channels(base[k]) for k in strides}

    control = {}
    for layer in layers:
        m = pair_metrics(flat[layer], ctrl[layer].flatten(1))
        for name in ("cos", "dist", "rel"):
            control[layer, name] = m[name]
        if layer in strides:
            control[layer, "sorted_rel"] = sorted_rel(sorted_base[layer], sort_channels(ctrl[layer]))
    control[LOGITS, "consistency"] = prediction_agreement(base[LOGITS], ctrl[LOGITS])
    agree = None
    if two_shifts is not None:
        la = net.probe(shift_images_per_sample(x, two_shifts[0], plan.mode))[LOGITS]
        lb = net.probe(shift_images_per_sample(x, two_shifts[1], plan.mode))[LOGITS]
        agree = prediction_agreement(la, lb)
    updates.append({"control": control, "correct": base[LOGITS].argmax(-1) == y, "two_shift_agree": agree})

    b, s = shifts.shape[:2]
    basis = None
    if fast_path and plan.mode == "crop" and plan.per_image is None and getattr(net, "supports_crop_windows", False):
        basis = net.crop_shift_basis(x, plan.max_shift)
    # small chunks keep a chunk's feature maps in the CPU cache across the several passes below
    chunk = max(1, min(s, pairs_per_chunk // max(1, b)))
    for j0 in range(0, s, chunk):
        sh = shifts[:, j0 : j0 + chunk]
        feats = shifted_probe(net, x, sh, plan.mode, basis)
        pairs = {}
        for layer in layers:
            ft = feats[layer]
            m = pair_metrics(flat[layer].unsqueeze(1), ft.flatten(2))
            for name in ("cos", "dist", "rel"):
                pairs[layer, name] = m[name]
            if layer in strides:
                pairs[layer, "aligned_rel"], pairs[layer, "nearest_aligned_rel"] = _aligned_values(
                    base[layer], ft, sh, strides[layer], plan.mode, uniform=plan.per_image is None
                )
                # last use of ft's spatial layout: sort it in its own memory
                st = sort_channels(ft.contiguous(), inplace=True)
                pairs[layer, "sorted_rel"] = sorted_rel(sorted_base[layer].unsqueeze(1), st)
        pairs[LOGITS, "consistency"] = prediction_agreement(base[LOGITS].unsqueeze(1), feats[LOGITS])
        pairs[LOGITS, "shifted_correct"] = (feats[LOGITS].argmax(-1) == y.unsqueeze(1)).to(torch.float64)
        updates.append({"shift_ids": plan.shift_id(sh[..., 0], sh[..., 1]), "pairs": pairs})
    return updates


def measure(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    plan: ShiftPlan,
    *,
    control_seed: int = 0,
    batch_size: int = 64,
    pairs_per_chunk: int = 256,
    fast_path: bool = True,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    desc: str = "measuring",
    workers: int | None = None,
) -> ShiftMetricAccumulator:
    """Fill an accumulator with every metric over the test images of this rank."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    n = len(images)
    strides = dict(net.probe_strides)
    layers = ("conv1", "conv2", "fc1", LOGITS)
    acc = ShiftMetricAccumulator(plan.n_shift_ids, layers, tuple(strides)).to(device)
    k = control_offset(n, control_seed)
    two = two_shift_plan(n, plan.max_shift, plan.seed)
    images_dev = images.to(device)
    labels_dev = labels.to(device)
    was_training = net.training
    net.eval()
    batches = torch.split(torch.arange(rank, n, world_size), batch_size)

    def run(idx: torch.Tensor) -> list[dict]:
        idx_dev = idx.to(device)
        x = images_dev[idx_dev].unsqueeze(1).float().div_(255)
        xc = images_dev[(idx_dev + k) % n].unsqueeze(1).float().div_(255)
        return batch_updates(
            net,
            layers,
            x,
            labels_dev[idx_dev],
            xc,
            plan.shifts_of(idx).to(device),
            plan,
            strides,
            two_shifts=(two[0][idx].to(device), two[1][idx].to(device)),
            pairs_per_chunk=pairs_per_chunk,
            fast_path=fast_path,
        )

    def apply(updates: list[dict]) -> None:
        for update in updates:
            acc.update(**update)
        bar.update()

    # On the CPU, the many small operations of a chunk parallelise badly inside one operator; one
    # Python thread per core, each on its own batch, keeps both cores busy (PyTorch and NumPy release
    # the GIL). Updates are applied in batch order, so the float64 sums do not depend on the timing.
    threads = workers if workers is not None else (torch.get_num_threads() if device.type == "cpu" else 1)
    threads = max(1, min(threads, len(batches)))
    old_threads = torch.get_num_threads()
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch", leave=False)
    try:
        if threads == 1:
            for idx in batches:
                apply(run(idx))
        else:
            torch.set_num_threads(1)
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shiftprobe-measure") as pool:
                for updates in pool.map(run, batches):
                    apply(updates)
    finally:
        torch.set_num_threads(old_threads)
        bar.close()
        net.train(was_training)
    acc.control_offset = k
    return acc


def measure_results(net, images, labels, plan: ShiftPlan, **kwargs) -> dict:
    """``measure`` then ``build_results``; adds ``seconds``."""
    start = time.perf_counter()
    acc = measure(net, images, labels, plan, **kwargs)
    raw = acc.compute()
    results = build_results(raw, plan, acc.layers, dict(net.probe_strides), acc.control_offset)
    results["seconds"] = time.perf_counter() - start
    return results
