"""``export_pairs``: ``n`` seeded (image, shift) pairs with their activations at every probe point, trained and
untrained, as ``pairs.pt`` / ``pairs.npz``, sized to the available memory before any work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shiftprobe.atomic import all_or_none, atomic_write
from shiftprobe.probe.budget import available_memory
from shiftprobe.probe.capture import Feed, LayerCapture, resolve_layers
from shiftprobe.probe.engine import checked_device, exact_float32, model_dtype
from shiftprobe.probe.inputs import check_forward, check_inputs, check_model, eval_mode, run_first, to_pixels
from shiftprobe.probe.resample import shift_images_per_sample
from shiftprobe.probe.translation import Translation

#: file names written into a folder given as ``path``
PT_NAME, NPZ_NAME = "pairs.pt", "pairs.npz"
#: the share of the available memory the exported arrays may take (the rest: the run itself, the system)
MEMORY_SHARE = 0.5


def draw_pairs(transform: Translation, n_images: int, n: int, seed: int,
               image_size: tuple[int, int] = (28, 28)) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded (image index, shift) draws: ``(indices (n,), shifts (n, 2))``. Images are drawn without
    replacement while ``n`` allows it; each shift uniformly from the non-zero shifts (``random``: the image's own)."""
    plan = transform.plan(n_images, image_size)
    g = torch.Generator().manual_seed(int(seed) + 15485863)
    idx = torch.randperm(n_images, generator=g)[:n] if n <= n_images else torch.randint(0, n_images, (n,), generator=g)
    if not plan.uniform:
        return idx, plan.param_values(plan.pairs[idx]).view(n, 2)
    paired = [plan.params[j] for j in plan.pairs]
    choices = [s for s in paired if s != (0, 0)] or paired
    pick = torch.randint(0, len(choices), (n,), generator=g)
    return idx, torch.tensor(choices, dtype=torch.long)[pick].view(n, 2)


def feature_shapes(model: nn.Module, layers: Sequence[str] | None, image_shape: Sequence[int],
                   device: torch.device | str | None = None, feed: Feed | None = None) -> dict[str, tuple[int, ...]]:
    """``{layer: shape of one image's activation}`` at every probe layer, from one blank image
    (``image_shape`` = ``(C, H, W)``) through the engine's forward hooks (model left as it was)."""
    device = checked_device(model, device)
    blank = torch.zeros((1, *image_shape), dtype=model_dtype(model), device=device)
    resolved = resolve_layers(model, layers)
    with eval_mode(model, announce=False), exact_float32(), torch.inference_mode():
        with LayerCapture(model, resolved, feed=feed) as capture:
            feats = run_first(capture, model, blank)
    return {layer.name: tuple(feats[layer.name].shape[1:]) for layer in resolved}


def pair_bytes(model: nn.Module, layers: Sequence[str] | None, image_shape: Sequence[int], networks: int = 1,
               device: torch.device | str | None = None, feed: Feed | None = None) -> int:
    """Host memory one exported pair takes: ``x``, ``Tx`` (float32), its shift, label and index (int64), and
    ``f(x)``, ``f(Tx)`` at every probe layer (float32) of each of ``networks`` networks."""
    shapes = feature_shapes(model, layers, image_shape, device, feed)
    features = sum(math.prod(shape) for shape in shapes.values())
    return 4 * 2 * math.prod(image_shape) + 8 * 4 + networks * 4 * 2 * features


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def check_export_memory(n: int, bytes_per_pair: int, key: str = "n") -> None:
    """Refuse ``n`` pairs whose arrays would take more than ``MEMORY_SHARE`` of the available memory
    (a ValueError naming ``key``, the need and the largest count that fits); nothing when it is unknown."""
    available = available_memory()
    if available is None or n * bytes_per_pair <= MEMORY_SHARE * available:
        return
    largest = int(MEMORY_SHARE * available // bytes_per_pair)
    fix = f"use {key}={largest} or fewer" if largest >= 1 else "free memory (not even one pair fits)"
    raise ValueError(
        f"{key}={n} needs about {_gb(n * bytes_per_pair)} of memory ({bytes_per_pair:,} bytes per pair), more "
        f"than {MEMORY_SHARE:.0%} of the {_gb(available)} available: {fix}, or measure fewer layers"
    )


def _activations(model: nn.Module, layers: Sequence[str] | None, x: torch.Tensor, tx: torch.Tensor,
                 batch_size: int, device: torch.device | None, feed: Feed) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (f(x), f(Tx))}`` of the pixels ``x``, ``tx`` on the CPU in float32 (model left as it was),
    allocated once and filled batch by batch."""
    check_model(model)  # the untrained control too
    device = checked_device(model, device)
    dtype = model_dtype(model)
    resolved = resolve_layers(model, layers)
    shapes = feature_shapes(model, layers, tuple(x.shape[1:]), device, feed)
    out = {name: (torch.empty((len(x), *shape)), torch.empty((len(x), *shape))) for name, shape in shapes.items()}
    with eval_mode(model), exact_float32():
        check_forward(model, resolved, x, feed, device, dtype)
        with torch.inference_mode(), LayerCapture(model, resolved, feed=feed) as capture:
            for start in range(0, len(x), batch_size):
                rows = slice(start, start + batch_size)
                for side, images in enumerate((x, tx)):
                    feats = capture.run(to_pixels(images[rows].to(device), dtype))
                    for name in out:
                        out[name][side][rows] = feats[name].detach().float().cpu()
    return out


def _write(pairs: dict[str, torch.Tensor], path: str | Path) -> tuple[Path, Path]:
    """``pairs.pt`` and ``pairs.npz`` into the folder ``path``, or ``<stem>.pt`` / ``<stem>.npz`` for a file
    name; each written atomically, and both or neither (a failed ``.npz`` removes the new ``.pt``)."""
    path = Path(path)
    if path.suffix in (".pt", ".npz"):
        pt, npz = path.with_suffix(".pt"), path.with_suffix(".npz")
    else:
        pt, npz = path / PT_NAME, path / NPZ_NAME
    with all_or_none():
        with atomic_write(pt) as fh:
            torch.save(pairs, fh)
        with atomic_write(npz) as fh:
            np.savez(fh, **{key: value.numpy() for key, value in pairs.items()})
    return pt, npz


def export_pairs(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    layers: Sequence[str] | None = None,
    transform: Translation | None = None,
    n: int = 100,
    seed: int = 0,
    untrained: nn.Module | None = None,
    path: str | Path | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    normalization=None,
    output_key: str | int | None = None,
) -> dict[str, torch.Tensor]:
    """Record ``n`` seeded shifted pairs (images without replacement while ``n <= N``; each shift uniform over
    ``transform``'s non-zero shifts, default ``Translation(max_shift=4)``) and their activations at every
    probe layer, of ``untrained`` too. The other arguments are those of :func:`shiftprobe.measure`.

    Returns ``x``, ``tx`` (``n x C x H x W`` pixels), ``shift`` (``n x 2``), ``label`` (-1 without labels),
    ``index`` and per probe layer ``trained/<layer>/x``, ``trained/<layer>/tx`` (and ``untrained/...``),
    float32; with ``path`` (a folder, or a ``.pt`` / ``.npz`` file name) also writes ``pairs.pt`` and
    ``pairs.npz``, atomically, both or neither. A ValueError when ``n`` pairs would take more than half of the
    available memory names the largest ``n`` that fits.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"export_pairs: n={n!r}; use a positive number of pairs")
    transform = transform if transform is not None else Translation()
    if not isinstance(transform, Translation):
        raise TypeError(f"transform={transform!r}: use shiftprobe.Translation(...)")
    images, labels, feed = check_inputs(model, images, labels, normalization=normalization, output_key=output_key)
    networks = 1 if untrained is None else 2
    check_export_memory(n, pair_bytes(model, layers, tuple(images.shape[1:]), networks, device, feed))
    idx, shifts = draw_pairs(transform, len(images), n, seed, tuple(images.shape[-2:]))
    x = to_pixels(images[idx.to(images.device)].cpu(), torch.float32)
    tx = shift_images_per_sample(x, shifts, transform.mode)
    label = labels.cpu()[idx].long() if labels is not None else torch.full((n,), -1, dtype=torch.long)
    pairs: dict[str, torch.Tensor] = {"x": x, "tx": tx, "shift": shifts, "label": label, "index": idx}
    for network, net in (("trained", model), ("untrained", untrained)):
        if net is None:
            continue
        for name, (fx, ftx) in _activations(net, layers, x, tx, batch_size, device, feed).items():
            pairs[f"{network}/{name}/x"] = fx
            pairs[f"{network}/{name}/tx"] = ftx
    if path is not None:
        _write(pairs, path)
    return pairs
