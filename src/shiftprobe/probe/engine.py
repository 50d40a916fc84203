"""The measurement engine: any ``nn.Module``, any probe points, every shift of the plan, every image.

Lightning-free. ``measure(model, images, ...)`` returns a :class:`~shiftprobe.probe.results.Results`;
``measure_network`` is the same for one network and a prepared plan (used by the Lightning callback).
A DDP rank passes its ``rank`` / ``world_size`` and processes the images ``rank, rank + world_size,
...``; the accumulator's sums are then synchronised, so every rank gets the single-process figures.

Speed: for each batch of images, the shifts are processed in chunks of about ``pairs_per_chunk``
image-shift pairs (so the activations of the whole grid never exist at once; default per device,
``default_pairs_per_chunk``: 512 on the CPU, where a chunk's maps stay in the cache, 4096 on an
accelerator, where larger kernels keep it busy). In crop mode, a model
that offers it (``supports_crop_windows``: ``shiftprobe.models.crop_windows.CropWindowProbe``, e.g. the lab
CNN) computes all the shifts of a chunk from one pass over the zero-padded images; otherwise the
shifted images are stacked into one batch.

Precision: the network runs in its own parameter dtype (e.g. bfloat16 after ``precision=bf16-true``);
half-precision features are compared in float32, sums are float64 where the device has it. On CUDA,
TF32 matmuls and convolutions are switched off while measuring (they would push an exact layer's
error to 1e-3) and the settings are restored afterwards.

Uncertainty: besides the sums over pairs, each batch yields every image's mean over its pairs in
every group of ``ShiftPlan.groups()`` (a shift, a radius, a parity class, the summary): the per-pair
values of the batch's chunks, side by side, times the ``shift x group`` membership matrix (one matmul
per batch), divided by the image's pair counts. The accumulator keeps their sums, squares and
products with the image's control value (``shiftprobe.probe.stats``).

Host-device synchronisation (issue 12): the plan's shifts stay on the host (a CPU long tensor and
Python tuples) and drive every Python decision (slicing, grouping, which windows, which shifts the
stride divides); only what the tensor math needs goes to the device, built on the host and copied
with ``non_blocking=True`` (or once per measurement). Per-pair values and sums stay on the device, and
nothing in the per-batch work reads a device value back, so an accelerator's queue never drains mid
measurement. The few intentional host reads pass through ``host_read`` (the sync-guard test allows
exactly those); data-dependent skips that only speed up the CPU (``_Probe.certified_sorted``) are
taken on the CPU only.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from tqdm.auto import tqdm

from shiftprobe.probe.accumulator import SCORE_CONTROL, layer_metrics, new_accumulator
from shiftprobe.probe.capture import OUTPUT, LayerCapture, resolve_layers
from shiftprobe.probe.geometry import certified_slices, infer_geometry
from shiftprobe.probe.inputs import (
    as_image_batch,
    check_finite,
    check_forward,
    check_inputs,
    check_labels,
    check_model,
    eval_mode,
    to_pixels,
)
from shiftprobe.probe.metrics import (
    aligned_offset,
    aligned_values,
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sorted_rel,
    sorted_rel_certified_at,
    sum_dtype,
    window_pair_metrics,
    window_products,
    working,
)
from shiftprobe.probe.plan import ShiftPlan
from shiftprobe.probe.results import Results
from shiftprobe.probe.section import build_results
from shiftprobe.probe.thresholds import exact_tolerance
from shiftprobe.probe.transforms import Translation, shift_images_per_sample

log = logging.getLogger(__name__)

#: a measurement estimated to take longer than this announces its estimate before going on
ANNOUNCE_AFTER_S = 60.0
#: default ``pairs_per_chunk`` by device type (``default_pairs_per_chunk``)
PAIRS_PER_CHUNK = {"cpu": 512, "accelerator": 4096}
#: batches queued or running per worker thread ahead of the caller (``run_in_order``): enough to keep every
#: worker busy, few enough that a stopped measurement cancels the rest at once
QUEUED_PER_THREAD = 2


def default_pairs_per_chunk(device: torch.device | str) -> int:
    """``pairs_per_chunk`` when none is given: 512 on the CPU (a chunk's maps stay in the cache across the
    metrics' passes), 4096 on an accelerator (CUDA, MPS: fewer, larger kernels)."""
    kind = torch.device(device).type
    return PAIRS_PER_CHUNK["cpu" if kind == "cpu" else "accelerator"]


def on_accelerator(device: torch.device) -> bool:
    """Whether ``device`` is an accelerator, where reading a device value on the host waits for its
    queue: the per-batch work then takes its branch-free paths (the sync-guard test forces them on CPU
    tensors by patching this function)."""
    return device.type != "cpu"


class _HostReads(threading.local):
    depth = 0


_host_reads = _HostReads()


@contextlib.contextmanager
def host_read():
    """Marks an intentional read of a device value on the host (a host-device synchronisation on an
    accelerator). The per-batch work has none on the accelerator path, except the check of
    ``_Probe.window_layers`` (once per batch shape); the sync-guard test (tests/probe/test_sync_guard.py) fails on any other."""
    _host_reads.depth += 1
    try:
        yield
    finally:
        _host_reads.depth -= 1


def host_reads_allowed() -> bool:
    """True inside ``host_read`` (in this thread)."""
    return _host_reads.depth > 0


def control_offset(n_images: int, seed: int) -> int:
    """The seeded offset ``k`` in ``[1, n)`` pairing image ``i`` with the unrelated image ``(i + k) mod n``."""
    if n_images < 2:
        raise ValueError(f"the control needs at least 2 test images, got {n_images}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return int(torch.randint(1, n_images, (1,), generator=g))


def subset_indices(n_images: int, max_images: int | None, seed: int) -> torch.Tensor | None:
    """A seeded random subset of ``max_images`` image indices (sorted), or None for all images.

    A random subset, not the first N: MNIST's test set puts different writers in its two halves.
    """
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
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def exact_float32():
    """TF32 off for matmuls and cuDNN convolutions (full float32), restored on exit."""
    matmul_precision = torch.get_float32_matmul_precision()
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


class _Probe:
    """What every batch of one network's measurement shares: model, hooks, geometry, plan."""

    def __init__(self, model, layers, geometry, classifier, plan: ShiftPlan, pairs_per_chunk: int, fast_path: bool,
                 device: torch.device | None = None, feed=None):
        self.model, self.layers, self.geometry = model, layers, geometry
        self.names = [layer.name for layer in layers]
        self.classifier = classifier
        self.plan = plan
        self.pairs_per_chunk = pairs_per_chunk
        self.device = torch.device(device) if device is not None else model_device(model)
        #: the branch-free paths (no data-dependent host reads); decided once, from the device type
        self.accelerator = on_accelerator(self.device)
        #: the uniform plan's shifts as Python tuples (host) and their shift ids on the device (built once)
        self.shift_list: list[tuple[int, int]] = [tuple(map(int, v)) for v in plan.shifts] if plan.uniform else []
        self._uniform_ids: torch.Tensor | None = None
        #: on an accelerator, ``window_layers`` is decided on the first batch of each shape and kept
        self._window_layers: dict[tuple, set] = {}
        self.capture = LayerCapture(model, layers, feed=feed)
        self.spatial = [n for n in self.names if geometry[n].spatial]
        self.exact = [n for n in self.spatial if geometry[n].exact_test]
        #: pair metrics with per-image group statistics (the accumulator's order) and the
        #: ``n_shift_ids x n_groups`` membership matrix; set by ``_measure_network``
        self.image_keys: tuple = ()
        self.membership: torch.Tensor | None = None
        self.fast = (
            fast_path
            and plan.mode == "crop"
            and plan.uniform
            and getattr(model, "supports_crop_windows", False)
            and set(self.names) <= set(getattr(model, "crop_window_layers", ()))
        )

    def close(self):
        self.capture.remove()

    def shifted(self, x: torch.Tensor, shifts: torch.Tensor, basis, shift_list=None) -> dict:
        """The probe points of ``T(s) x`` for ``shifts`` (``B x S x 2``, on the host), as ``B x S x ...``
        tensors; ``shift_list``: the same shifts for every image, as Python tuples (uniform plans)."""
        b, s = shifts.shape[:2]
        if basis is not None:
            return self.model.probe_crop_shifts(None, shift_list, basis=basis)
        xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        xs = shift_images_per_sample(xs, shifts.reshape(b * s, 2), self.plan.mode)  # copied non-blocking
        feats = self.capture.run(xs)
        return {k: feats[k].view(b, s, *feats[k].shape[1:]) for k in self.names}

    def aligned(self, name: str, base: torch.Tensor, shifted: torch.Tensor, shifts: torch.Tensor, windows: bool = False,
                shift_list=None, norms: dict | None = None):
        """``aligned_rel``, ``nearest_aligned_rel``, ``sorted_rel_certified`` (``B x S``, NaN where
        undefined) and the no-overlap flags of the first two. ``shifts``: ``B x S x 2`` on the host;
        ``shift_list``: the uniform plan's shifts of these columns as Python tuples.

        ``windows``: ``shifted`` and ``base`` are windows of the same maps (the crop fast path, see
        ``crop_window_maps``; ``window_layers`` checked the zero shift's window against ``f(x)`` bit for
        bit), so at a shift the stride divides, the certified positions of ``f(T x)`` hold the very numbers
        of ``f(x)`` there: all three are exactly 0 (NaN without certified positions).
        ``norms``: the batch's cache of ``||f(x)[Q - m]||`` by offset for this layer (uniform plans)."""
        if not self.plan.uniform:
            return self._aligned_per_pair(name, base, shifted, shifts)
        geo, mode = self.geometry[name], self.plan.mode
        dtype = sum_dtype(base.device)
        b = shifts.shape[0]
        nan = torch.full((b,), float("nan"), dtype=dtype, device=base.device)
        zero = torch.zeros((b,), dtype=dtype, device=base.device)
        no = torch.zeros((b,), dtype=torch.bool, device=base.device)
        aligned, nearest, certified, aligned_out = [], [], [], []
        # same shifts for every image: one column each; which shifts the stride divides (and which have
        # certified positions) is known on the host from the shift and the geometry
        for j, (dy, dx) in enumerate(shift_list):
            offset = aligned_offset(dy, dx, geo.stride)
            if offset is not None and windows:
                value = nan if certified_slices(geo.interior, *offset) is None else zero
                aligned.append(value), nearest.append(value), certified.append(value)
                aligned_out.append(torch.isnan(value))
                continue
            f_t = shifted[:, j]
            value, near = aligned_values(base, f_t, dy, dx, geo, mode, norms)
            nearest.append(near.to(dtype))
            if value is None:
                aligned.append(nan), certified.append(nan), aligned_out.append(no)
            else:
                value = value.to(dtype)
                aligned.append(value), aligned_out.append(torch.isnan(value))
                certified.append(self.certified_sorted(base, f_t, value, offset, geo))
        aligned, nearest, certified, aligned_out = (
            torch.stack(v, dim=1) for v in (aligned, nearest, certified, aligned_out)
        )
        return aligned, nearest, certified, aligned_out, torch.isnan(nearest)

    def _aligned_per_pair(self, name: str, base: torch.Tensor, shifted: torch.Tensor, shifts: torch.Tensor):
        """``aligned`` for plans whose images have different shifts: the pairs of each shift together.
        The grouping is done on the host (``shifts`` is a CPU tensor); each group's pair indices go to the
        device with one non-blocking copy."""
        geo, mode = self.geometry[name], self.plan.mode
        shape = shifts.shape[:2]
        device = base.device
        dtype = sum_dtype(device)
        aligned = torch.full(shape, float("nan"), dtype=dtype, device=device)
        nearest = aligned.clone()
        certified = aligned.clone()
        aligned_out = torch.zeros(shape, dtype=torch.bool, device=device)
        nearest_out = aligned_out.clone()
        for dy, dx in sorted(set(map(tuple, shifts.reshape(-1, 2).tolist()))):
            rows, cols = torch.nonzero((shifts[..., 0] == dy) & (shifts[..., 1] == dx), as_tuple=True)
            where = (rows.to(device, non_blocking=True), cols.to(device, non_blocking=True))
            f_x = base[where[0]]
            f_t = shifted[where]
            value, near = aligned_values(f_x, f_t, dy, dx, geo, mode)
            nearest[where] = near.to(dtype)
            nearest_out[where] = torch.isnan(near)
            if value is not None:
                value = value.to(dtype)
                aligned[where] = value
                aligned_out[where] = torch.isnan(value)
                certified[where] = self.certified_sorted(f_x, f_t, value, aligned_offset(dy, dx, geo.stride), geo)
        return aligned, nearest, certified, aligned_out, nearest_out

    def certified_sorted(self, f_x, f_t, aligned: torch.Tensor, offset, geo) -> torch.Tensor:
        """``sorted_rel_certified`` of the pairs of one shift. Sorting is a contraction, so a pair whose
        certified maps are identical (``aligned_rel == 0``) scores exactly 0 without being sorted; a pair
        whose maps differ, if only by the rounding of another kernel, is sorted (its value is then at most
        its ``aligned_rel``, about 1e-7 in float32).

        Skipping those pairs is a CPU speed-up decided on the values (host reads). On an accelerator
        every pair is sorted and the exact ones are set to 0 with ``torch.where`` (branch-free: the
        same figures, no synchronisation)."""
        todo = (aligned != 0) & ~torch.isnan(aligned)  # NaN (no overlap) stays NaN
        if self.accelerator:
            value = sorted_rel_certified_at(f_x, f_t, *offset, geo, self.plan.mode).to(aligned.dtype)
            return torch.where(todo, value, aligned)
        return self._certified_sorted_cpu(f_x, f_t, aligned, todo, offset, geo)

    def _certified_sorted_cpu(self, f_x, f_t, aligned, todo, offset, geo) -> torch.Tensor:
        """``certified_sorted`` on the CPU: only the pairs that are not exact are sorted."""
        if not bool(aligned.any()):  # every pair exact to the last bit (NaN counts as true)
            return aligned
        out = torch.where(todo, torch.zeros_like(aligned), aligned)
        if bool(todo.all()):
            return sorted_rel_certified_at(f_x, f_t, *offset, geo, self.plan.mode).to(out.dtype)
        if bool(todo.any()):
            out[todo] = sorted_rel_certified_at(f_x[todo], f_t[todo], *offset, geo, self.plan.mode).to(out.dtype)
        return out

    def batch_updates(self, x, y, x_control, shifts, two_shifts) -> list[dict]:
        """Every metric for one batch of images and its pairs, as a list of accumulator updates
        (applied in order, so the sums are reproducible).

        ``shifts`` (``B x S x 2``) and ``two_shifts`` (two ``B x 2``) are host (CPU) tensors: they drive
        the Python control flow; the images and everything computed from them stay on the device."""
        base = self.capture.run(x)
        ctrl = self.capture.run(x_control)
        flat = {k: base[k].flatten(1) for k in self.names}
        sorted_base = {k: sort_channels(base[k]) for k in self.spatial}
        control = {}
        for name in self.names:
            m = pair_metrics(flat[name], ctrl[name].flatten(1))
            for metric in ("cos", "dist", "rel"):
                control[name, metric] = m[metric]
            if name in self.spatial:
                control[name, "sorted_rel"] = sorted_rel(sorted_base[name], sort_channels(ctrl[name]))
        first = {"control": control, "n_images": len(x)}
        cls = self.classifier
        correct = None
        if cls is not None:
            control[cls, "consistency"] = prediction_agreement(base[cls], ctrl[cls])
            first["predicted"] = base[cls].argmax(-1)
            if y is not None:
                first["correct"] = correct = first["predicted"] == y
            la = self.capture.run(shift_images_per_sample(x, two_shifts[0], self.plan.mode))[cls]
            lb = self.capture.run(shift_images_per_sample(x, two_shifts[1], self.plan.mode))[cls]
            first["two_shift_agree"] = prediction_agreement(la, lb)
        updates = [first]

        b, s = shifts.shape[:2]
        shift_list = self.shift_list  # uniform plans: the same shifts for every image (empty otherwise)
        ids_all = self.shift_ids(shifts, x.device)  # B x S, on the device
        basis = self.model.crop_shift_basis(x, self.plan.max_shift) if self.fast else None
        windows = self.window_layers(base, basis)
        # every window's norm and dot product with f(x), for all shifts at once
        products = {name: self.window_products(name, base[name], basis, shift_list) for name in windows}
        # small chunks keep a chunk's feature maps in the CPU cache across the several passes below
        chunk = max(1, min(s, self.pairs_per_chunk // max(1, b)))
        chunk_values, chunk_ids = [], []  # per chunk: K x B x s per-pair values, B x s shift ids
        chunk_no_overlap = []  # per chunk: {(layer, metric): B x s flags}
        expected_norms = {name: {} for name in self.exact}  # ||f(x)[Q - m]|| by offset, shared by the chunks
        for j0 in range(0, s, chunk):
            sh = shifts[:, j0 : j0 + chunk]
            sl = shift_list[j0 : j0 + chunk]
            feats = self.shifted(x, sh, basis, sl)
            pairs, no_overlap = {}, {}
            for name in self.names:
                ft = feats[name]
                if name in products:
                    norm2_x, dot, norm2_t, same = products[name]
                    cols = slice(j0, j0 + sh.shape[1])
                    m = window_pair_metrics(norm2_x, dot[:, cols], norm2_t[:, cols], same[cols])
                else:
                    m = pair_metrics(flat[name].unsqueeze(1), ft.flatten(2))
                for metric in ("cos", "dist", "rel"):
                    pairs[name, metric] = m[metric]
                if name in self.exact:
                    a, n, c, a_out, n_out = self.aligned(
                        name, base[name], ft, sh, windows=name in windows, shift_list=sl, norms=expected_norms[name]
                    )
                    pairs[name, "aligned_rel"], pairs[name, "nearest_aligned_rel"] = a, n
                    pairs[name, "sorted_rel_certified"] = c
                    no_overlap[name, "aligned_rel"], no_overlap[name, "nearest_aligned_rel"] = a_out, n_out
                    no_overlap[name, "sorted_rel_certified"] = a_out
                if name in self.spatial:
                    # last use of ft's spatial layout: sort it in its own memory
                    st = sort_channels(ft.contiguous(), inplace=True)
                    pairs[name, "sorted_rel"] = sorted_rel(sorted_base[name].unsqueeze(1), st, consume=True)
            if cls is not None:
                pairs[cls, "consistency"] = prediction_agreement(base[cls].unsqueeze(1), feats[cls])
                if y is not None:
                    agree = pairs[cls, "consistency"]
                    pairs[cls, "shifted_correct"] = (feats[cls].argmax(-1) == y.unsqueeze(1)).to(agree.dtype)
                    pairs[cls, "consistency_correct"] = torch.where(correct.unsqueeze(1), agree, float("nan"))
            ids = ids_all[:, j0 : j0 + chunk]
            chunk_values.append(torch.stack([pairs[key] for key in self.image_keys]))
            chunk_ids.append(ids)
            chunk_no_overlap.append(no_overlap)
        pair_update = batch_pair_update(chunk_values, chunk_ids, chunk_no_overlap)
        updates.append(pair_update)
        updates.append(self.image_update(pair_update["pair_values"], pair_update["shift_ids"], control))
        return updates

    def shift_ids(self, shifts: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The shift ids of ``shifts`` (``B x S x 2``, host) on ``device``: for a uniform plan built once per
        measurement and expanded; otherwise computed on the host and copied without blocking."""
        if self.plan.uniform:
            if self._uniform_ids is None or self._uniform_ids.device != device:
                ids = torch.tensor([self.plan.shift_id(dy, dx) for dy, dx in self.shift_list], dtype=torch.long)
                self._uniform_ids = ids.to(device)
            return self._uniform_ids.expand(len(shifts), -1)
        return self.plan.shift_id(shifts[..., 0], shifts[..., 1]).to(device, non_blocking=True)

    def window_products(self, name: str, f_x: torch.Tensor, basis: dict, shifts: list):
        """``(||f(x)||^2, dot, ||f(T x)||^2, same)`` of a window layer for the batch's shifts (``S`` Python
        tuples, the same for every image): ``B``, ``B x S``, ``B x S`` and ``S`` (the window is ``f(x)``
        itself: the zero shift). Column indices and origins are built on the host and copied without
        blocking."""
        device = f_x.device
        dtype = sum_dtype(device)
        dot = torch.empty((len(f_x), len(shifts)), dtype=dtype, device=device)
        norm2 = torch.empty_like(dot)
        by_source = {}  # id of the source map -> (map, [(column, y0, x0), ...])
        for j, (dy, dx) in enumerate(shifts):
            source, y0, x0 = self.model.crop_window_source(basis, name, dy, dx)
            by_source.setdefault(id(source), (source, []))[1].append((j, y0, x0))
        for source, items in by_source.values():
            cols = torch.tensor([j for j, _, _ in items]).to(device, non_blocking=True)
            origins = torch.tensor([(y0, x0) for _, y0, x0 in items]).to(device, non_blocking=True)
            dot[:, cols], norm2[:, cols] = window_products(source, f_x, origins)
        same = torch.tensor([(dy, dx) == (0, 0) for dy, dx in shifts]).to(device, non_blocking=True)
        return working(f_x).to(dtype).flatten(1).square().sum(1), dot, norm2, same

    def window_layers(self, base: dict, basis: dict | None) -> set:
        """The exact-test layers whose shifted maps, in the crop fast path, are windows of the same maps
        as ``f(x)`` itself (the model's ``crop_window_maps``, checked bit for bit against ``f(x)``).

        Only for these does the batch claim exact figures without computing them: ``aligned_rel``,
        ``nearest_aligned_rel`` and ``sorted_rel_certified`` 0 at the shifts the stride divides (``aligned``
        with ``windows``), ``dist`` 0 at the zero shift (``window_pair_metrics``' ``same``). The check fails
        where the padded pass takes another kernel than the unpadded one and rounds apart (or the model's
        windows are not ``f(x)``): that layer's figures are then computed from its shifted maps, as on the
        plain path (``pair_metrics``, ``aligned_values``, ``certified_sorted``), so they carry the rounding
        (about 1e-7 in float32, below ``exact_tolerance``) and nothing is claimed exact that is not.
        The kernels are chosen by shape: on an accelerator the check (a host read) is made on the first
        batch of each shape and kept for the batches of that shape."""
        names = [n for n in self.exact if n in getattr(self.model, "crop_window_maps", ())]
        if basis is None or not names:
            return set()
        shape = tuple(base[names[0]].shape)
        if self.accelerator and shape in self._window_layers:
            return self._window_layers[shape]
        with host_read():  # the zero shift's window, cut as probe_crop_shifts cuts it
            found = {n for n in names if torch.equal(self.model.crop_window(basis, n, 0, 0), base[n])}
        if self.accelerator:
            self._window_layers[shape] = found
        return found

    def image_update(self, values: torch.Tensor, ids: torch.Tensor, control: dict) -> dict:
        """``image_update`` of the batch's per-pair values ``K x B x S`` and shift ids ``B x S``: the
        membership rows of the shifts (one set for a uniform plan, one per image otherwise)."""
        rows = self.membership[ids[0]] if self.plan.uniform else self.membership[ids]
        return image_update(values, rows, self.image_keys, control)


def batch_pair_update(chunk_values: list, chunk_ids: list, chunk_no_overlap: list) -> dict:
    """The accumulator update of a whole batch's pairs from its chunks (per chunk: ``K x B x s`` values of
    ``image_keys``, ``B x s`` transform ids, ``{(layer, metric): B x s}`` no-overlap flags): every metric's
    sums at once."""
    no_overlap = {key: torch.cat([c[key] for c in chunk_no_overlap], dim=1) for key in chunk_no_overlap[0]}
    return {"shift_ids": torch.cat(chunk_ids, dim=1), "pair_values": torch.cat(chunk_values, dim=2),
            "no_overlap": no_overlap}


def image_update(values: torch.Tensor, rows: torch.Tensor, image_keys, control: dict) -> dict:
    """Each image's mean over its pairs in every group (``K x B x G``, NaN where it has no defined pair
    there) from per-pair values ``K x B x S`` (NaN = undefined) and the pairs' membership rows: ``S x G``
    when every image has the same transforms (one (K B) x S x G matmul), ``B x S x G`` otherwise. The
    accumulator update with the image's control values for the metrics of a score."""
    defined = ~torch.isnan(values)
    values = torch.where(defined, values, 0.0)
    defined = defined.to(values.dtype)
    rows = rows.to(values.dtype)
    if rows.dim() == 2:
        sums, counts = values @ rows, defined @ rows
    else:
        sums, counts = torch.einsum("kbs,bsg->kbg", values, rows), torch.einsum("kbs,bsg->kbg", defined, rows)
    zero = torch.zeros(values.shape[1], dtype=values.dtype, device=values.device)
    image_control = torch.stack(
        [control[layer, SCORE_CONTROL[metric]] if metric in SCORE_CONTROL else zero for layer, metric in image_keys]
    )
    # 0 / 0 = NaN: the image has no (defined) pair in the group
    return {"image_means": sums / counts, "image_control": image_control}


def run_in_order(run, batches, threads: int, name: str = "shiftprobe-measure"):
    """``run(batch)`` for every batch, yielded in batch order (so the float64 sums do not depend on the
    timing); with ``threads > 1`` the batches run in a pool of threads named ``name``, torch at one
    thread each. Close the generator (``contextlib.closing``) to restore torch's threads at once.

    At most ``QUEUED_PER_THREAD * threads`` batches are queued or running ahead of the caller. When the
    caller stops (an error, Ctrl-C or SIGTERM in the main thread, the generator closed), the queued
    batches are cancelled and only the running ones finish: the loop stops within about one batch time.
    """
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
            ahead = QUEUED_PER_THREAD * threads
            queued = collections.deque(pool.submit(run, idx) for idx in itertools.islice(todo, ahead))
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
    """The whole loop's time from the first batch's: ``threads`` batches run at once (``run_in_order``), so
    the first result arrives after about one batch time, and ``ceil(n_batches / threads)`` such rounds follow."""
    concurrent = max(1, min(threads, n_batches))
    return first_batch_s * -(-n_batches // concurrent)


def classifier_layer(layers, geometry) -> str | None:
    """The probe point whose arg-max is the prediction: ``logits`` or ``output``, if it is a vector."""
    for name in ("logits", OUTPUT):
        if name in [layer.name for layer in layers] and geometry[name].kind == "vector" and geometry[name].shape[0] >= 2:
            return name
    return None


def measure_network(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    plan: ShiftPlan,
    *,
    layers: Sequence[str] | None = None,
    control_seed: int = 0,
    batch_size: int = 64,
    pairs_per_chunk: int | None = None,
    fast_path: bool = True,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    desc: str = "measuring",
    workers: int | None = None,
    sums: dict | None = None,
    normalization=None,
    output_key: str | int | None = None,
) -> dict:
    """One network over every pair of ``plan``; returns the results dict (see ``build_results``).

    The inputs are checked first (``shiftprobe.probe.inputs``: images, ``normalization``, labels,
    ``output_key``, the model tried on the first images); the model runs in eval mode (a model in train
    mode is announced once) and its mode is restored afterwards.
    TF32 is off for the whole call (geometry inference included) and restored afterwards. ``sums``, if
    given, receives this process's raw sums (``"raw"``, before any DDP synchronisation when run outside
    Lightning) and what ``build_results`` needs to turn sums into results (``"plan"``, ``"layers"``,
    ``"geometry"``, ``"control_offset"``, ``"classifier"``): the parts of a split run can be combined
    with ``shiftprobe.probe.accumulator.merge_sums``. ``pairs_per_chunk``: None = per device
    (``default_pairs_per_chunk``: 512 on the CPU, 4096 on an accelerator).
    """
    start = time.perf_counter()
    images, labels, feed = check_inputs(model, images, labels, normalization=normalization, output_key=output_key)
    with exact_float32(), eval_mode(model):
        return _measure_network(
            model, images, labels, plan, layers=layers, control_seed=control_seed, batch_size=batch_size,
            pairs_per_chunk=pairs_per_chunk, fast_path=fast_path, device=device, rank=rank,
            world_size=world_size, progress=progress, desc=desc, workers=workers, sums=sums, feed=feed, start=start,
        )


def _measure_network(model, images, labels, plan, *, layers, control_seed, batch_size, pairs_per_chunk,
                     fast_path, device, rank, world_size, progress, desc, workers, sums, feed, start) -> dict:
    device = torch.device(device) if device is not None else model_device(model)
    dtype = model_dtype(model)
    n = len(images)
    if plan.n_images and plan.n_images != n:
        raise ValueError(f"the plan was built for {plan.n_images} images, got {n}")
    resolved = resolve_layers(model, layers)
    check_forward(model, resolved, images, feed, device, dtype)
    geometry = infer_geometry(model, resolved, tuple(images.shape[1:]), device=device, seed=control_seed, feed=feed)
    for name, geo in geometry.items():
        if geo.spatial and geo.note and rank == 0:
            log.warning("layer %s: %s", name, geo.note)
    classifier = classifier_layer(resolved, geometry)
    if pairs_per_chunk is None:
        pairs_per_chunk = default_pairs_per_chunk(device)
    # the crop fast path pads the images inside the model, so it is for models fed pixels as they are
    probe = _Probe(model, resolved, geometry, classifier, plan, pairs_per_chunk, fast_path and not feed.normalizes,
                   device, feed)
    metrics = {name: layer_metrics(geometry[name], name == classifier, labels is not None) for name in probe.names}
    groups = plan.groups()
    n_classes = geometry[classifier].shape[0] if classifier is not None else 0
    acc = new_accumulator(plan.n_shift_ids, metrics, device, n_groups=len(groups), n_classes=n_classes)
    probe.image_keys = acc.image_keys
    probe.membership = plan.membership(acc.pair_count.dtype).to(device)
    k = control_offset(n, control_seed)
    two = plan.two_shift_draws()
    images_dev = images.to(device)
    labels_dev = labels.to(device) if labels is not None else None
    batches = torch.split(torch.arange(rank, n, world_size), batch_size)

    def run(idx: torch.Tensor) -> list[dict]:
        # image indices go to the device without blocking; the shifts stay on the host (batch_updates)
        idx_dev = idx.to(device, non_blocking=True)
        ctrl_dev = ((idx + k) % n).to(device, non_blocking=True)
        with torch.inference_mode():
            return probe.batch_updates(
                to_pixels(images_dev[idx_dev], dtype),
                labels_dev[idx_dev] if labels_dev is not None else None,
                to_pixels(images_dev[ctrl_dev], dtype),
                plan.shifts_of(idx),
                (two[0][idx], two[1][idx]),
            )

    t_first = [None]
    loop_start = [0.0]

    def apply(updates: list[dict]) -> None:
        for update in updates:
            acc.update(**update)
        bar.update()
        if t_first[0] is None:
            t_first[0] = time.perf_counter() - loop_start[0]
            estimate = estimated_seconds(t_first[0], len(batches), threads)
            if estimate > ANNOUNCE_AFTER_S and rank == 0:
                log.info(
                    "%s: %d images x %d shifts = %s pairs; about %.0f s (estimated from the first batch)",
                    desc, n, plan.shifts_per_image, f"{plan.n_pairs:,}", estimate,
                )

    # On the CPU, the many small operations of a chunk parallelise badly inside one operator; one
    # Python thread per core, each on its own batch, keeps both cores busy (PyTorch and NumPy release
    # the GIL). Updates are applied in batch order, so the float64 sums do not depend on the timing.
    threads = workers if workers is not None else (torch.get_num_threads() if device.type == "cpu" else 1)
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch", leave=False)
    loop_start[0] = time.perf_counter()
    try:
        with contextlib.closing(run_in_order(run, batches, threads)) as ordered:
            for updates in ordered:
                apply(updates)
    finally:
        bar.close()
        probe.close()
    raw = acc.compute()
    if sums is not None:
        sums.update(raw=raw, plan=plan, layers=list(probe.names), geometry=geometry, control_offset=k, classifier=classifier)
    results = build_results(raw, plan, probe.names, geometry, k, classifier)
    results["family"] = "translation"
    results["precision"] = {"dtype": str(dtype).replace("torch.", ""), "exact_tol": exact_tolerance(dtype)}
    results["fast_path"] = bool(probe.fast)
    results["seconds"] = time.perf_counter() - start
    return results


def measure(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    transform=None,
    *,
    untrained: nn.Module | None = None,
    control_seed: int = 0,
    max_images: int | None = None,
    batch_size: int = 64,
    pairs_per_chunk: int | None = None,
    fast_path: bool = True,
    device: torch.device | str | None = None,
    progress: bool = False,
    normalization=None,
    output_key: str | int | None = None,
) -> Results:
    """Measure how invariant / equivariant each probe point of ``model`` is to ``transform``.

    Parameters
    ----------
    model : torch.nn.Module
        Any network (not a TorchScript module). Probe points are captured with forward hooks. It is
        measured in eval mode; a model in train mode is announced once (a warning) and put back in
        train mode afterwards.
    images : torch.Tensor
        ``(N, H, W)`` or ``(N, C, H, W)``: pixels, uint8 or float in [0, 1], or normalised with
        ``normalization``. Transforms act in pixel space. Images with NaN or infinite pixels, and float
        images outside [0, 1] without ``normalization``, are refused.
    labels : torch.Tensor, list or numpy array, optional
        ``(N,)`` class indices; adds accuracy on unshifted and shifted images.
    layers : list of str, optional
        Names from ``model.named_modules()``, an alias the model declares (the lab CNN's ``logits``)
        or ``"output"`` (the model's output, see ``output_key``). A module that runs several times per
        forward pass is probed one call at a time: ``"conv#1"``, ``"conv#2"``, ... (a plain ``"conv"``
        is then refused). Default: ``model.default_probe_layers``, else the top-level children and
        ``"output"``.
    transform : Translation, a family, or a list of them, optional
        The transformation family (default ``Translation(max_shift=4)``: every shift of a 9x9 grid):
        ``Translation``, ``Rotation90``, ``Flip``, ``Rotation``, ``SubpixelTranslation``
        (``shiftprobe.probe.families``), or a list of them (or of their names). A single
        ``Translation`` gives today's results; otherwise ``res.families[name]`` holds each family's
        section, and the translation's figures stay at the top level when it is in the list.
    untrained : torch.nn.Module, optional
        The same architecture at its initial weights, measured as the control (``res.untrained``;
        for every family, ``res.families[name].untrained``).
    control_seed : int
        Seeds the pairing of each image with an unrelated one (the score's denominator) and the
        ``max_images`` subset.
    max_images : int, optional
        Measure a seeded random subset of this many images.
    batch_size : int
        Test images per batch (every shift of a batch is evaluated together).
    pairs_per_chunk : int, optional
        Image-shift pairs whose activations exist at once. Default (None): per device, 512 on the
        CPU, 4096 on an accelerator (``shiftprobe.probe.engine.default_pairs_per_chunk``).
    device : str or torch.device, optional
        Default: where the model's parameters are.
    normalization : (mean, std), optional
        The images are normalised, ``(pixels - mean) / std`` with pixels in [0, 1] (floats, or one
        value per channel: e.g. ImageNet's ``((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))``). They are
        un-normalised first, transformed as pixels (crop fills black) and normalised again for the model.
    output_key : str or int, optional
        Which entry of the model's output is ``"output"`` (and the classifier): a key of a dict or named
        tuple (needed when it holds several tensors; ``None`` entries are skipped), or a position in a
        tuple (default: its first tensor).

    Returns
    -------
    Results
        ``res.summary[layer][metric]``, ``res.to_dict()``, ``res.to_dataframe()``, ``res.save(path)``,
        ``res.markdown()``.

    Examples
    --------
    >>> import torch, shiftprobe
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    >>> _ = net(torch.zeros(1, 1, 12, 12))
    >>> res = shiftprobe.measure(net, torch.rand(8, 12, 12), layers=["0", "3"], transform=shiftprobe.Translation(max_shift=1))
    >>> res.summary["0"]["aligned_rel"] < 1e-5
    True
    """
    from shiftprobe.probe import family_engine  # here: family_engine builds on this module

    transforms = family_engine.as_transforms(transform if transform is not None else Translation())
    images = as_image_batch(images)
    for family in transforms:
        if not isinstance(family, Translation):
            family.check_image_size(*images.shape[-2:])
    # here so that a refusal names the indices the caller gave (each measurement checks the rest first)
    check_finite(images)
    labels = check_labels(labels, len(images))
    for net in (model, untrained):
        if net is not None:
            check_model(net)
    n_total = len(images)
    subset = subset_indices(n_total, max_images, control_seed)
    if subset is not None:
        images = images[subset]
        labels = labels[subset] if labels is not None else None
    kwargs = dict(layers=layers, control_seed=control_seed, batch_size=batch_size, pairs_per_chunk=pairs_per_chunk,
                  device=device, progress=progress, normalization=normalization, output_key=output_key)
    # eval mode for the whole call: a model in train mode is announced once, not once per family
    with eval_mode(model), eval_mode(untrained) if untrained is not None else contextlib.nullcontext():
        data = _measure_transforms(model, untrained, images, labels, transforms, fast_path, kwargs,
                                   subset_info(len(images), n_total, control_seed),
                                   single=transform is None or isinstance(transform, Translation))
    return Results(data)


def _measure_transforms(model, untrained, images, labels, transforms, fast_path, kwargs, subset, single) -> dict:
    """``measure``'s figures for every family of ``transforms``: the translation's at the top level,
    and with ``single=False`` every family's section under ``"families"``; ``subset``: how the images
    were chosen."""
    from shiftprobe.probe import family_engine  # here: family_engine builds on this module

    translation = next((t for t in transforms if isinstance(t, Translation)), None)
    start = time.perf_counter()
    data = {}
    if translation is not None:
        plan = ShiftPlan.from_transform(translation, len(images), image_size=min(images.shape[-2:]))
        data = measure_network(model, images, labels, plan, desc="measuring", fast_path=fast_path, **kwargs)
        if untrained is not None:
            data["untrained"] = measure_network(
                untrained, images, labels, plan, desc="measuring untrained", fast_path=fast_path, **kwargs
            )
    data["subset"] = subset
    data["seconds_total"] = time.perf_counter() - start
    if single:
        return data
    families = {}
    for family in transforms:
        if family is translation:
            families[family.name] = dict(data)
            continue
        section = family_engine.measure_family(model, images, labels, family, desc=f"measuring {family.name}", **kwargs)
        if untrained is not None:
            section["untrained"] = family_engine.measure_family(
                untrained, images, labels, family, desc=f"measuring {family.name} untrained", **kwargs
            )
        families[family.name] = section
    data["families"] = families
    data["seconds_total"] = time.perf_counter() - start
    return data
