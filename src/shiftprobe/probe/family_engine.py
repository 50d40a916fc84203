"""The measurement of one transformation family (``shiftprobe.probe.families``) on any network.

Lightning-free, built from the translation engine's parts: probe points by forward hooks
(``LayerCapture``), geometry inferred from the network (``infer_geometry``), the unrelated-image
control (image ``i`` against image ``(i + k) mod n``, ``control_offset``), the per-pair metrics of
``shiftprobe.probe.metrics``, and the torchmetrics accumulator, so DDP reduction, float64 sums,
standard errors over images and score intervals come for free.

Bookkeeping: a family's parameters play the part of the translation's shift ids (``params()[j]`` is
id ``j``), and the groups are one per parameter plus the summary (every parameter): the membership
matrix is ``[I | 1]``. For each batch of ``B`` images the parameters are taken in chunks of about
``pairs_per_chunk / B`` (default per device: 512 pairs on the CPU, 4096 on an accelerator); the
``B x chunk`` transformed images run in one forward pass. The parameters are host values (Python
objects) that drive the per-chunk loop; the per-pair values and their sums stay on the device, and
nothing in the loop reads a device value back (issue 12; the sync-guard test checks it).

Per layer and parameter (section ``entries``): ``cos``, ``dist``, ``rel`` and the invariance score;
for spatial layers of a pixel-permuting family (``Rotation90``, ``Flip``) the sorting test
(``sorted_rel``, ``equivariance_score``); for spatial layers whose map action is defined
(``family.map_action``) ``aligned_rel = ||f(T x)[Q] - A f(x)[Q]|| / ||A f(x)[Q]||`` over the compared
positions ``Q`` (``family.map_region``: the whole map, or the certified positions of a sub-pixel
shift), with its per-pair maximum; for the classifier consistency and shifted accuracy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from shiftprobe.probe.accumulator import new_accumulator
from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import (
    batch_pair_update,
    classifier_layer,
    control_offset,
    default_pairs_per_chunk,
    exact_float32,
    image_update,
    model_device,
    model_dtype,
    run_in_order,
)
from shiftprobe.probe.families import TransformFamily
from shiftprobe.probe.geometry import infer_geometry
from shiftprobe.probe.inputs import check_forward, check_inputs, eval_mode, to_pixels
from shiftprobe.probe.metrics import (
    pair_metrics,
    prediction_agreement,
    sort_channels,
    sorted_rel,
    sum_dtype,
    working,
)
from shiftprobe.probe.section import check_finite_sums, control_block, group_metrics, predictions_block
from shiftprobe.probe.stats import mean_se
from shiftprobe.probe.thresholds import exact_tolerance
from shiftprobe.probe.transforms import Translation

_EPS = 1e-30  # as in the metrics: a zero map compared with a zero map scores 0, not NaN

# -- which metrics each layer gets ----------------------------------------------------------------
def family_layer_metrics(
    family: TransformFamily, geo, image_size: tuple[int, int], classifier: bool, labels: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pair metrics, control metrics)`` of one layer under ``family`` (the accumulator's spec)."""
    pair, control = ["cos", "dist", "rel"], ["cos", "dist", "rel"]
    if geo.spatial and family.permutes_pixels:
        pair.append("sorted_rel")
        control.append("sorted_rel")
    if geo.spatial and any(family.map_problem(p, geo, image_size) is None for p in family.params()):
        pair.append("aligned_rel")
    if classifier:
        pair.append("consistency")
        if labels:
            pair += ["shifted_correct", "consistency_correct"]
        control.append("consistency")
    return tuple(pair), tuple(control)


def param_membership(n_params: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_params x (n_params + 1)``: parameter ``j`` is in group ``j`` and in the summary (last)."""
    return torch.cat([torch.eye(n_params, dtype=dtype), torch.ones(n_params, 1, dtype=dtype)], dim=1)


def region_rel(actual: torch.Tensor, expected: torch.Tensor, region) -> tuple[torch.Tensor, torch.Tensor]:
    """``||actual[Q] - expected[Q]|| / ||expected[Q]||`` per map (``..., C, h, w``) over ``Q = region``
    (rows, columns; None: the whole map), and whether ``Q`` is empty (then NaN)."""
    actual, expected = working(actual), working(expected)
    if region is not None:
        actual, expected = actual[..., region[0], region[1]], expected[..., region[0], region[1]]
    dtype = sum_dtype(actual.device)
    shape = actual.shape[:-3]
    if actual.shape[-1] * actual.shape[-2] == 0:
        return torch.full(shape, float("nan"), dtype=dtype, device=actual.device), torch.ones(shape, dtype=torch.bool, device=actual.device)
    num = torch.linalg.vector_norm((actual - expected).flatten(-3), dim=-1).to(dtype)
    den = torch.linalg.vector_norm(expected.flatten(-3), dim=-1).to(dtype)
    return num / den.clamp_min(_EPS), torch.zeros(shape, dtype=torch.bool, device=actual.device)


class _FamilyProbe:
    """What every batch of one family's measurement shares: model, hooks, geometry, parameters."""

    def __init__(self, model, layers, geometry, classifier, family, image_size, metrics, pairs_per_chunk, feed=None):
        self.geometry, self.classifier, self.family = geometry, classifier, family
        self.names = [layer.name for layer in layers]
        self.image_size = image_size
        self.params = family.params()
        self.pairs_per_chunk = pairs_per_chunk
        self.capture = LayerCapture(model, layers, feed=feed)
        self.sorted = [n for n in self.names if "sorted_rel" in metrics[n][0]]
        self.aligned = [n for n in self.names if "aligned_rel" in metrics[n][0]]
        self.image_keys: tuple = ()
        self.membership: torch.Tensor | None = None

    def close(self):
        self.capture.remove()

    def transformed(self, x: torch.Tensor, params: list) -> dict:
        """The probe points of ``T(p) x`` for every ``p`` of ``params``, as ``B x P x ...`` tensors."""
        b, p = len(x), len(params)
        xs = torch.stack([self.family.apply(x, q) for q in params], dim=1)
        feats = self.capture.run(xs.reshape(b * p, *xs.shape[2:]).contiguous())
        return {k: feats[k].view(b, p, *feats[k].shape[1:]) for k in self.names}

    def aligned_values(self, name: str, base: torch.Tensor, feats: torch.Tensor, params: list):
        """``aligned_rel`` (``B x P``; NaN where undefined or where no position is compared) and the
        no-overlap flags."""
        geo = self.geometry[name]
        shape = feats.shape[:2]
        values = torch.full(shape, float("nan"), dtype=sum_dtype(base.device), device=base.device)
        empty = torch.zeros(shape, dtype=torch.bool, device=base.device)
        for j, q in enumerate(params):
            expected = self.family.map_action(base, q, geo, self.image_size)
            if expected is None:
                continue
            values[:, j], empty[:, j] = region_rel(feats[:, j], expected, self.family.map_region(q, geo))
        return values, empty

    def batch_updates(self, x, y, x_control) -> list[dict]:
        """Every metric for one batch of images and all its pairs, as accumulator updates in order."""
        base = self.capture.run(x)
        ctrl = self.capture.run(x_control)
        flat = {k: base[k].flatten(1) for k in self.names}
        sorted_base = {k: sort_channels(base[k]) for k in self.sorted}
        control = {}
        for name in self.names:
            m = pair_metrics(flat[name], ctrl[name].flatten(1))
            for metric in ("cos", "dist", "rel"):
                control[name, metric] = m[metric]
            if name in self.sorted:
                control[name, "sorted_rel"] = sorted_rel(sorted_base[name], sort_channels(ctrl[name]))
        first = {"control": control, "n_images": len(x)}
        cls, correct = self.classifier, None
        if cls is not None:
            control[cls, "consistency"] = prediction_agreement(base[cls], ctrl[cls])
            first["predicted"] = base[cls].argmax(-1)
            if y is not None:
                first["correct"] = correct = first["predicted"] == y
        updates = [first]
        b, n_params = len(x), len(self.params)
        chunk = max(1, min(n_params, self.pairs_per_chunk // max(1, b)))
        chunk_values, chunk_ids, chunk_no_overlap = [], [], []
        for j0 in range(0, n_params, chunk):
            params = self.params[j0 : j0 + chunk]
            feats = self.transformed(x, params)
            pairs, no_overlap = {}, {}
            for name in self.names:
                ft = feats[name]
                m = pair_metrics(flat[name].unsqueeze(1), ft.flatten(2))
                for metric in ("cos", "dist", "rel"):
                    pairs[name, metric] = m[metric]
                if name in self.aligned:
                    pairs[name, "aligned_rel"], no_overlap[name, "aligned_rel"] = self.aligned_values(
                        name, base[name], ft, params
                    )
                if name in self.sorted:
                    # last use of ft's spatial layout: sort it in its own memory
                    st = sort_channels(ft.contiguous(), inplace=True)
                    pairs[name, "sorted_rel"] = sorted_rel(sorted_base[name].unsqueeze(1), st, consume=True)
            if cls is not None:
                agree = prediction_agreement(base[cls].unsqueeze(1), feats[cls])
                pairs[cls, "consistency"] = agree
                if y is not None:
                    pairs[cls, "shifted_correct"] = (feats[cls].argmax(-1) == y.unsqueeze(1)).to(agree.dtype)
                    pairs[cls, "consistency_correct"] = torch.where(correct.unsqueeze(1), agree, float("nan"))
            chunk_ids.append(torch.arange(j0, j0 + len(params), device=x.device).expand(b, -1))
            chunk_values.append(torch.stack([pairs[key] for key in self.image_keys]))
            chunk_no_overlap.append(no_overlap)
        pair_update = batch_pair_update(chunk_values, chunk_ids, chunk_no_overlap)
        updates.append(pair_update)
        updates.append(image_update(pair_update["pair_values"], self.membership, self.image_keys, control))
        return updates


# -- the section of results.json ------------------------------------------------------------------
def build_family_section(
    raw: dict, family: TransformFamily, layers, geometry, control_offset_k: int, classifier, metrics: dict,
    image_size: tuple[int, int], dtype: torch.dtype,
) -> dict:
    """The family's section of results.json (docs/measurement.md, "Transformation families"); refuses
    non-finite activations (``check_finite_sums``)."""
    layers = tuple(layers)
    check_finite_sums(raw, layers)
    params = family.params()
    sorted_layers = tuple(n for n in layers if "sorted_rel" in metrics[n][0])
    control = control_block(raw, layers)
    control["offset"] = int(control_offset_k)
    entries = []
    for j, p in enumerate(params):
        block = group_metrics(raw, torch.tensor([j]), layers, sorted_layers, control, col=j)
        entries.append({"param": family.param_to_json(p), **block})
    summary = group_metrics(raw, torch.arange(len(params)), layers, sorted_layers, control, col=len(params))
    tol = exact_tolerance(dtype)
    exact = {}
    if family.exact_test:
        for name in (n for n in layers if "aligned_rel" in metrics[n][0]):
            worst = [e[name].get("aligned_rel_max") for e in entries]
            hits = [e["param"] for e, w in zip(entries, worst, strict=True) if w is not None and w <= tol]
            exact[name] = {"exact_params": hits, "all": len(hits) == len(entries)}
    map_action = {}
    for name in layers:
        if geometry[name].spatial:
            note = family.map_action_note(geometry[name], image_size)
            map_action[name] = {"defined": "aligned_rel" in metrics[name][0], "note": note}
    n = float(raw["images"])
    labelled = classifier is not None and ("pair", classifier, "shifted_correct") in raw
    correct = float(raw["correct"])
    return {
        "family": family.name,
        "config": family.to_dict(),
        "dims": family.dims,
        "parameter": family.parameter,
        "n_images": int(n),
        "layers": list(layers),
        "classifier": classifier,
        "accuracy": correct / n if n and labelled else None,
        "accuracy_se": mean_se(n, correct, correct) if labelled else None,
        "predictions": predictions_block(raw.get("pred_hist")),
        "geometry": {name: geometry[name].to_dict() for name in layers},
        "control": control,
        "entries": entries,
        "summary": summary,
        "exact": exact,
        "map_action": map_action,
        "precision": {"dtype": str(dtype).replace("torch.", ""), "exact_tol": tol},
    }


# -- the measurement ------------------------------------------------------------------------------
def measure_family(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    family: TransformFamily,
    *,
    layers: Sequence[str] | None = None,
    control_seed: int = 0,
    batch_size: int = 64,
    pairs_per_chunk: int | None = None,
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
    """One network under every parameter of ``family``; returns the family's results section.

    Parameters
    ----------
    model : torch.nn.Module
        Any network; probe points are captured with forward hooks.
    images, labels : torch.Tensor
        ``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float in [0, 1] (or normalised, with
        ``normalization``); labels ``(N,)`` (a tensor, list or NumPy array) or None.
    family : TransformFamily
        ``Rotation90()``, ``Flip()``, ``Rotation()``, ``SubpixelTranslation()``.
    layers, control_seed, batch_size, pairs_per_chunk, device, progress
        As in :func:`shiftprobe.measure` (``pairs_per_chunk=None``: per device, 512 on the CPU, 4096 on
        an accelerator).
    rank, world_size : int
        A DDP rank measures the images ``rank, rank + world_size, ...``; the sums are synchronised.
    workers : int, optional
        CPU threads working on different batches (default: ``torch.get_num_threads()`` on the CPU).
    sums : dict, optional
        Receives this process's raw sums (``"raw"``) and what ``build_family_section`` needs, so the
        parts of a split run can be combined (``shiftprobe.probe.accumulator.merge_sums``).
    normalization, output_key
        As in :func:`shiftprobe.measure`: the images' ``(mean, std)`` when they are normalised, and
        which entry of a dict, named tuple or tuple output is measured.

    Returns
    -------
    dict
        The section: ``family``, ``config``, ``dims``, ``parameter``, ``entries`` (one per parameter),
        ``summary``, ``exact``, ``control``, ``geometry``, ... (docs/measurement.md).

    Examples
    --------
    >>> import torch
    >>> from shiftprobe.probe.families import Flip
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    >>> sec = measure_family(net, torch.rand(4, 8, 8), None, Flip(), layers=["0", "2"])
    >>> [e["param"] for e in sec["entries"]], sec["summary"]["count"]
    (['horizontal', 'vertical'], 8)
    """
    if not isinstance(family, TransformFamily):
        raise TypeError(f"family={family!r}: use Rotation90(), Flip(), Rotation() or SubpixelTranslation()")
    start = time.perf_counter()
    images, labels, feed = check_inputs(model, images, labels, normalization=normalization, output_key=output_key)
    family.check_image_size(*images.shape[-2:])
    with exact_float32(), eval_mode(model):
        return _measure_family(model, images, labels, family, layers=layers, control_seed=control_seed,
                               batch_size=batch_size, pairs_per_chunk=pairs_per_chunk, device=device, rank=rank,
                               world_size=world_size, progress=progress, desc=desc, workers=workers, sums=sums,
                               feed=feed, start=start)


def _measure_family(model, images, labels, family, *, layers, control_seed, batch_size, pairs_per_chunk, device,
                    rank, world_size, progress, desc, workers, sums, feed, start) -> dict:
    image_size = tuple(images.shape[-2:])
    device = torch.device(device) if device is not None else model_device(model)
    dtype = model_dtype(model)
    n = len(images)
    resolved = resolve_layers(model, layers)
    check_forward(model, resolved, images, feed, device, dtype)
    geometry = infer_geometry(model, resolved, tuple(images.shape[1:]), device=device, seed=control_seed, feed=feed)
    classifier = classifier_layer(resolved, geometry)
    names = [layer.name for layer in resolved]
    metrics = {
        name: family_layer_metrics(family, geometry[name], image_size, name == classifier, labels is not None)
        for name in names
    }
    if pairs_per_chunk is None:
        pairs_per_chunk = default_pairs_per_chunk(device)
    probe = _FamilyProbe(model, resolved, geometry, classifier, family, image_size, metrics, pairs_per_chunk, feed)
    n_params = len(probe.params)
    n_classes = geometry[classifier].shape[0] if classifier is not None else 0
    acc = new_accumulator(n_params, metrics, device, n_groups=n_params + 1, n_classes=n_classes)
    probe.image_keys = acc.image_keys
    probe.membership = param_membership(n_params, acc.pair_count.dtype).to(device)
    k = control_offset(n, control_seed)
    images_dev = images.to(device)
    labels_dev = labels.to(device) if labels is not None else None
    batches = torch.split(torch.arange(rank, n, world_size), batch_size)

    def run(idx: torch.Tensor) -> list[dict]:
        idx_dev = idx.to(device, non_blocking=True)
        ctrl_dev = ((idx + k) % n).to(device, non_blocking=True)
        with torch.inference_mode():
            return probe.batch_updates(
                to_pixels(images_dev[idx_dev], dtype),
                labels_dev[idx_dev] if labels_dev is not None else None,
                to_pixels(images_dev[ctrl_dev], dtype),
            )

    threads = workers if workers is not None else (torch.get_num_threads() if device.type == "cpu" else 1)
    bar = tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch", leave=False)
    try:
        with contextlib.closing(run_in_order(run, batches, threads, "shiftprobe-family")) as ordered:
            for updates in ordered:
                for update in updates:
                    acc.update(**update)
                bar.update()
    finally:
        bar.close()
        probe.close()
    raw = acc.compute()
    if sums is not None:
        sums.update(raw=raw, layers=list(probe.names), geometry=geometry, control_offset=k, classifier=classifier,
                    metrics=metrics, image_size=image_size, dtype=dtype)
    section = build_family_section(raw, family, probe.names, geometry, k, classifier, metrics, image_size, dtype)
    section["seconds"] = time.perf_counter() - start
    return section


# -- several families in one call (``shiftprobe.measure``) ------------------------------------------
def as_transforms(transform) -> list:
    """``transform=`` of ``shiftprobe.measure`` as a list of family objects (names allowed), checked:
    each a ``Translation`` or a ``TransformFamily``, names distinct."""
    from shiftprobe.probe.families import family_from_name

    items = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    if not items:
        raise ValueError("transform=[] measures nothing: give a family, e.g. [Translation(), Rotation90()]")
    out = []
    for item in items:
        if isinstance(item, str):
            item = family_from_name(item)
        if not isinstance(item, (Translation, TransformFamily)):
            raise TypeError(
                f"transform={item!r}: use shiftprobe.Translation(), Rotation90(), Flip(), Rotation() or "
                "SubpixelTranslation(), a list of them, or their names"
            )
        out.append(item)
    names = [t.name for t in out]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"transform lists {name!r} twice; give each family once (or distinct name=...)")
    return out
