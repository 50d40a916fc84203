"""``PairComputer``: the per-batch work of one network under any transform (the engine's pair source): the
probe points of ``x`` and of every ``T(p) x`` of the plan in chunks of pairs, every per-pair metric as
updates; the crop fast path (``CropWindows``) for crop translations. No host read of a device value but the
window check (``host_read``) and the CPU-only skips (tests/probe/test_sync_guard.py)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shiftprobe.models.crop_windows import CropWindowModel
from shiftprobe.probe.accumulator import SCORE_CONTROL
from shiftprobe.probe.capture import LayerCapture
from shiftprobe.probe.engine import PairSource
from shiftprobe.probe.metrics import (
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sorted_rel,
    sum_dtype,
    window_pair_metrics,
    window_products,
    working,
)
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.thresholds import exact_tolerance
from shiftprobe.probe.translation import Translation
from shiftprobe.probe.window_sort import WindowSorter, select_pays


def on_accelerator(device: torch.device) -> bool:
    """Whether reading a device value on the host waits for the device's queue (the sync-guard test forces
    the branch-free paths on CPU tensors by patching this function)."""
    return device.type != "cpu"


class _HostReads(threading.local):
    depth = 0


_host_reads = _HostReads()


@contextlib.contextmanager
def host_read():
    """Marks an intentional host read of a device value (the sync-guard test allows exactly these)."""
    _host_reads.depth += 1
    try:
        yield
    finally:
        _host_reads.depth -= 1


def layer_metrics(transform, geo, image_size, classifier: bool, labels: bool) -> tuple[tuple, tuple]:
    """``(pair metrics, control metrics)`` of one layer under ``transform`` (the accumulator's spec)."""
    pair, control = ["cos", "dist", "rel"], ["cos", "dist", "rel"]
    if geo.spatial and transform.permutes_pixels:
        pair.append("sorted_rel")
        control.append("sorted_rel")
    pair += transform.layer_map_metrics(geo, image_size)
    if classifier:
        pair.append("consistency")
        if labels:
            pair += ["shifted_correct", "consistency_correct"]
        control.append("consistency")
    return tuple(pair), tuple(control)


@dataclass
class MapContext:
    """What ``Transform.map_values`` needs besides the maps: the layer's geometry, the image size, the
    accelerator flag, whether the maps are crop windows of ``f(x)`` and the batch's norm cache."""

    geometry: object
    image_size: tuple[int, int]
    accelerator: bool
    windows: bool = False
    norms: dict | None = None


class PairComputer(PairSource):
    """Everything every batch of one network under one transform shares: hooks, geometry, plan, windows."""

    def __init__(self, model, layers, geometry, classifier, transform, plan, image_size, metrics, *,
                 pairs_per_chunk: int, device, feed, fast_path: bool):
        self.model, self.geometry, self.classifier = model, geometry, classifier
        self.transform, self.plan, self.image_size = transform, plan, tuple(image_size)
        self.names = [layer.name for layer in layers]
        self.pairs_per_chunk = pairs_per_chunk
        self.device = torch.device(device)
        self.accelerator = on_accelerator(self.device)
        self.capture = LayerCapture(model, layers, feed=feed)
        self.sorted = [n for n in self.names if "sorted_rel" in metrics[n][0]]
        first_map = transform.map_metrics[0]
        self.mapped = [n for n in self.names if first_map in metrics[n][0]]
        self.params = [plan.params[j] for j in plan.pairs] if plan.uniform else []
        self._ids: torch.Tensor | None = None
        self._window_layers: dict[tuple, set] = {}
        self.windows, self.fast_note = None, None
        self.on_pairs = None  # called with each chunk's pair count (progress)
        offered = isinstance(model, CropWindowModel) and model.crop_windows()
        if fast_path and offered and isinstance(transform, Translation) and transform.mode == "crop" and plan.uniform:
            missing = [n for n in self.names if n not in offered.layers]
            self.windows = None if missing else offered
            self.fast_note = f"the crop windows do not compute layer {missing[0]!r}" if missing else None

    def self_check(self, x: torch.Tensor, dtype: torch.dtype) -> None:
        """Run the crop windows' self-check on a few images; on failure measure on the plain path, with a note."""
        if self.windows is None:
            return
        m = self.transform.max_shift
        with torch.inference_mode():  # the zero shift and two corners: a padded layer shows only when shifted
            plain = {s: self.capture.run(shift_images(x, *s)) for s in ((0, 0), (m, m), (-m, -m))}
            reason = self.windows.self_check(self._padded(x), m, plain, exact_tolerance(dtype))
        if reason is not None:
            self.windows, self.fast_note = None, f"crop fast path off: {reason}"

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        m = self.transform.max_shift
        return self.capture.feed.model_input(F.pad(x, (m, m, m, m)))  # zero pixels: crop mode's fill

    def context(self):
        return torch.inference_mode()

    def batch_updates(self, x, y, x_control, idx: torch.Tensor) -> list[dict]:
        """Every metric for one batch (image indices ``idx``, host) and its pairs, as accumulator updates."""
        base = self.capture.run(x)
        flat = {k: base[k].flatten(1) for k in self.names}
        sorted_base = {k: sort_channels(base[k]) for k in self.sorted}
        first, control = self._control_update(x, y, base, flat, sorted_base, self.capture.run(x_control), idx)
        ids = self.plan.ids_of(idx)
        params = self.params if self.plan.uniform else self.plan.param_values(ids)
        ids = self._device_ids(ids)
        basis = self.windows.basis(self._padded(x), self.transform.max_shift) if self.windows else None
        windows = self.window_layers(base, basis)
        products = {name: self.window_products(name, base[name], basis) for name in windows}
        sorters = self.window_sorters(basis)
        norms = {name: {} for name in self.mapped}  # ||f(x)[Q - m]|| by offset, shared by the chunks
        correct = first.get("correct")
        b, s = ids.shape
        chunk = max(1, min(s, self.pairs_per_chunk // max(1, b)))
        values, no_overlap = [], []
        for j0 in range(0, s, chunk):
            cols = slice(j0, j0 + chunk)
            chunk_params = params[:, cols] if isinstance(params, torch.Tensor) else params[cols]
            pairs, out = self._chunk(x, y, correct, base, flat, sorted_base, chunk_params, cols, basis,
                                     windows, products, norms, sorters)
            values.append(torch.stack([pairs[key] for key in self.image_keys]))
            no_overlap.append(out)
            if self.on_pairs is not None:
                self.on_pairs(b * min(chunk, s - j0))
        update = batch_pair_update(values, [ids[:, j0:j0 + chunk] for j0 in range(0, s, chunk)], no_overlap)
        rows = self.membership[ids[0]] if self.plan.uniform else self.membership[ids]
        return [first, update, image_update(update["pair_values"], rows, self.image_keys, control)]

    def _device_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The batch's parameter ids on the device: for a uniform plan built once and expanded."""
        if not self.plan.uniform:
            return ids.to(self.device, non_blocking=True)
        if self._ids is None:
            self._ids = ids[0].to(self.device)
        return self._ids.expand(len(ids), -1)

    def _control_update(self, x, y, base: dict, flat: dict, sorted_base: dict, ctrl: dict, idx) -> tuple[dict, dict]:
        """The first update of a batch (control metrics, predictions, two-parameter consistency)."""
        control = {}
        for name in self.names:
            control.update({(name, k): v for k, v in pair_metrics(flat[name], ctrl[name].flatten(1)).items()})
            if name in self.sorted:
                control[name, "sorted_rel"] = sorted_rel(sorted_base[name], sort_channels(ctrl[name]))
        first = {"control": control, "n_images": len(x)}
        cls = self.classifier
        if cls is not None:
            control[cls, "consistency"] = prediction_agreement(base[cls], ctrl[cls])
            first["predicted"] = base[cls].argmax(-1)
            if y is not None:
                first["correct"] = first["predicted"] == y
            if self.plan.draws is not None:
                la, lb = (self._one_param(x, draw[idx])[cls] for draw in self.plan.draws)
                first["two_shift_agree"] = prediction_agreement(la, lb)
        return first, control

    def _one_param(self, x: torch.Tensor, ids: torch.Tensor) -> dict:
        """The probe points of every image under its own parameter (``ids``: one per image, host)."""
        xs = self.transform.apply(x, self.plan.param_values(ids.view(-1, 1)))
        return self.capture.run(xs.reshape(len(x), *xs.shape[2:]))

    def transformed(self, x: torch.Tensor, params, basis, skip=()) -> dict:
        """The probe points of ``T(p) x`` for the chunk's ``params``, as ``B x P x ...`` tensors (the crop
        windows may leave out the probe points of ``skip``)."""
        if basis is not None:
            return self.windows.shifted(basis, params, skip)
        xs = self.transform.apply(x, params)
        b, p = xs.shape[:2]
        feats = self.capture.run(xs.reshape(b * p, *xs.shape[2:]).contiguous())
        return {k: feats[k].view(b, p, *feats[k].shape[1:]) for k in self.names}

    def _chunk(self, x, y, correct, base, flat, sorted_base, params, cols, basis, windows, products, norms, sorters):
        """Every per-pair metric of one chunk of parameters: ``({(layer, metric): B x c}, no-overlap flags)``."""
        feats = self.transformed(x, params, basis, self._unread(params, windows, sorters))
        pairs, no_overlap = {}, {}
        for name in self.names:
            ft = feats.get(name)  # None: a window layer whose metrics here need no shifted maps (``_unread``)
            if name in products:
                norm2_x, dot, norm2_t, same = products[name]
                m = window_pair_metrics(norm2_x, dot[:, cols], norm2_t[:, cols], same[cols])
            else:
                m = pair_metrics(flat[name].unsqueeze(1), ft.flatten(2))
            pairs.update({(name, k): v for k, v in m.items()})
            if name in self.mapped:
                ctx = MapContext(self.geometry[name], self.image_size, self.accelerator, name in windows, norms[name])
                values, flags = self.transform.map_values(base[name], ft, params, ctx)
                pairs.update({(name, k): v for k, v in values.items()})
                no_overlap.update({(name, k): v for k, v in flags.items()})
            if name in self.sorted:  # last use of ft's spatial layout: sort it in its own memory
                st = sorters[name](cols) if name in sorters else sort_channels(ft.contiguous(), inplace=True)
                pairs[name, "sorted_rel"] = sorted_rel(sorted_base[name].unsqueeze(1), st, consume=True)
        cls = self.classifier
        if cls is not None:
            agree = prediction_agreement(base[cls].unsqueeze(1), feats[cls])
            pairs[cls, "consistency"] = agree
            if y is not None:
                pairs[cls, "shifted_correct"] = (feats[cls].argmax(-1) == y.unsqueeze(1)).to(agree.dtype)
                pairs[cls, "consistency_correct"] = torch.where(correct.unsqueeze(1), agree, float("nan"))
        return pairs, no_overlap

    def _unread(self, params, windows: set, sorters: dict) -> set:
        """The window layers whose metrics need no shifted maps for ``params``: products give the pair
        metrics, a ``WindowSorter`` (or nothing) the sorted ones, and every shift's map metrics are exact."""
        return {name for name in windows if (name in sorters or name not in self.sorted)
                and all(self.transform.window_exact(p, self.geometry[name]) for p in params)}

    def window_sorters(self, basis: dict | None) -> dict:
        """A ``WindowSorter`` of the batch for each sorted window map where sharing one sort pays
        (``select_pays``; the others sort each shifted map)."""
        sorters = {}
        for name in (n for n in self.sorted if basis is not None and n in self.windows.window_maps):
            columns = [self.windows.source(basis, name, dy, dx) for dy, dx in self.params]
            side = basis["sides"][name]
            if select_pays(columns[0][0], side, side):
                sorters[name] = WindowSorter(columns, side, side)
        return sorters

    def window_products(self, name: str, f_x: torch.Tensor, basis: dict):
        """``(||f(x)||^2, dot, ||f(T x)||^2, same)`` of a window layer for every shift of the plan: ``B``,
        ``B x S``, ``B x S`` and ``S`` (the window is ``f(x)`` itself: the zero shift)."""
        device = f_x.device
        dot = torch.empty((len(f_x), len(self.params)), dtype=sum_dtype(device), device=device)
        norm2 = torch.empty_like(dot)
        by_source = {}  # id of the source map -> (map, [(column, y0, x0), ...])
        for j, (dy, dx) in enumerate(self.params):
            source, y0, x0 = self.windows.source(basis, name, dy, dx)
            by_source.setdefault(id(source), (source, []))[1].append((j, y0, x0))
        for source, items in by_source.values():
            cols = torch.tensor([j for j, _, _ in items]).to(device, non_blocking=True)
            origins = torch.tensor([(y0, x0) for _, y0, x0 in items]).to(device, non_blocking=True)
            dot[:, cols], norm2[:, cols] = window_products(source, f_x, origins)
        same = torch.tensor([(dy, dx) == (0, 0) for dy, dx in self.params]).to(device, non_blocking=True)
        return working(f_x).to(dot.dtype).flatten(1).square().sum(1), dot, norm2, same

    def window_layers(self, base: dict, basis: dict | None) -> set:
        """The mapped layers among the window maps whose zero-shift window is ``f(x)`` bit for bit: only
        these claim exact zeros without computing them. The check fails where the padded pass takes another
        kernel and rounds apart; on an accelerator it is made once per batch shape (a host read)."""
        names = [n for n in self.mapped if basis is not None and n in self.windows.window_maps]
        if not names:
            return set()
        shape = tuple(base[names[0]].shape)
        if self.accelerator and shape in self._window_layers:
            return self._window_layers[shape]
        with host_read():
            found = {n for n in names if torch.equal(self.windows.window(basis, n, 0, 0), base[n])}
        if self.accelerator:
            self._window_layers[shape] = found
        return found


def batch_pair_update(chunk_values: list, chunk_ids: list, chunk_no_overlap: list) -> dict:
    """The accumulator update of a batch's pairs from its chunks (``K x B x c`` values of ``image_keys``,
    ``B x c`` parameter ids, ``{(layer, metric): B x c}`` no-overlap flags)."""
    no_overlap = {key: torch.cat([c[key] for c in chunk_no_overlap], dim=1) for key in chunk_no_overlap[0]}
    return {"shift_ids": torch.cat(chunk_ids, dim=1), "pair_values": torch.cat(chunk_values, dim=2),
            "no_overlap": no_overlap}


def image_update(values: torch.Tensor, rows: torch.Tensor, image_keys, control: dict) -> dict:
    """Each image's mean over its pairs in every group (``K x B x G``; NaN: no defined pair there) from the
    per-pair values ``K x B x S`` (NaN = undefined) and the pairs' membership rows (``S x G`` when every
    image has the same parameters: one matmul; ``B x S x G`` otherwise), with the images' control values."""
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
    return {"image_means": sums / counts, "image_control": image_control}
