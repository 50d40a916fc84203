"""Every check of what the user hands an entry point, in one place: the model, the images (uint8 or floats in
[0, 1], or normalised with ``normalization=(mean, std)``: un-normalised, transformed as pixels, fed normalised),
labels, ``output_key``, the model tried on the first images; one line naming the value and the fix."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from shiftprobe.probe.capture import OUTPUT, Feed, Layer, LayerCapture

#: how far float pixels may stray outside [0, 1] (float rounding of an un-normalisation) before refusal
PIXEL_TOLERANCE = 1e-3
#: images the model is tried on before the measurement (``check_forward``)
FIRST_IMAGES = 16
#: image indices a refusal lists before "..."
LISTED = 8


def as_image_batch(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float -> ``(N, C, H, W)`` (dtype kept)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
    if not len(images):
        raise ValueError(f"images of shape {tuple(images.shape)} hold no image: give at least one (two to measure)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return images


def to_pixels(batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A batch of pixels as ``dtype`` floats in [0, 1] (uint8 divided by 255)."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255).to(dtype)
    return batch.to(dtype)


def _listed(indices: list[int]) -> str:
    """``[3, 17]`` or ``[3, 17, ..., 90] (12 images)`` for a refusal."""
    head = ", ".join(map(str, indices[:LISTED]))
    return f"[{head}]" if len(indices) <= LISTED else f"[{head}, ...] ({len(indices)} images)"


def check_model(model) -> None:
    """A TypeError for anything but an ``nn.Module``; a ValueError for a TorchScript module, whose
    submodules run inside the compiled graph where no forward hook fires."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(
            f"model is a TorchScript module ({type(model).__name__}, from torch.jit.trace or torch.jit.script): "
            "forward hooks do not fire inside it, so no layer can be probed; pass the eager nn.Module it was made from"
        )


def check_normalization(normalization, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``normalization=(mean, std)`` (floats, or sequences of one value per channel) as two float64
    ``(C, 1, 1)`` tensors; None for None."""
    if normalization is None:
        return None
    if not isinstance(normalization, (tuple, list)) or len(normalization) != 2:
        raise TypeError(
            f"normalization={normalization!r}: give (mean, std), each a float or one value per channel, "
            "e.g. ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))"
        )
    out = []
    for what, value in zip(("mean", "std"), normalization, strict=True):
        t = torch.as_tensor(value, dtype=torch.float64).flatten().cpu()
        if t.numel() not in (1, channels):
            raise ValueError(f"normalization {what} has {t.numel()} values for {channels}-channel images: give 1 or {channels}")
        if not bool(torch.isfinite(t).all()) or (what == "std" and not bool((t > 0).all())):
            raise ValueError(f"normalization {what}={t.tolist()}: must be finite{' and positive' if what == 'std' else ''}")
        out.append(t.expand(channels).clone().view(channels, 1, 1))
    return out[0], out[1]


def check_labels(labels, n_images: int) -> torch.Tensor | None:
    """Labels as a 1-D integer tensor (from a tensor, a NumPy array or a list), one per image; None for None."""
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"labels must be class indices (a tensor, NumPy array or list of ints): {err}") from None
    if labels.dim() != 1 or labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be class indices, one integer per image; got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if len(labels) != n_images:
        raise ValueError(f"{len(labels)} labels for {n_images} images: give one label per image, or labels=None")
    return labels.long()


def check_classes(labels: torch.Tensor, n_classes: int, classifier: str) -> None:
    """A ValueError naming the labels outside the classifier's ``n_classes`` classes (counted as wrong answers)."""
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise ValueError(
            f"labels {_listed(torch.unique(bad).tolist())} are outside the {n_classes} classes of the classifier "
            f"{classifier!r} (0 to {n_classes - 1}): give the index of each image's class in the model's output"
        )


def check_count(key: str, value, what: str) -> None:
    """One line for a setting that must be a whole number >= 1 of ``what`` (None: its default)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{key}={value!r}: use a number of {what} >= 1")


def check_run_settings(batch_size, pairs_per_chunk, rank, world_size) -> None:
    """The batch, the chunk and the DDP rank of a measurement, checked before any work."""
    check_count("batch_size", batch_size, "images")
    check_count("pairs_per_chunk", pairs_per_chunk, "pairs")
    check_count("world_size", world_size, "processes")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}, world_size={world_size}: a rank is 0 to world_size - 1")


def check_output_key(output_key) -> None:
    if output_key is not None and (isinstance(output_key, bool) or not isinstance(output_key, (str, int))):
        raise TypeError(
            f"output_key={output_key!r}: use a key of the model's dict or named tuple output, a position (int), or None"
        )


def check_finite(images: torch.Tensor, names: list[int] | None = None) -> None:
    """A ValueError naming the images (their ``names``, default their positions) that hold a NaN or an
    infinite pixel."""
    if images.is_floating_point():
        bad = ~torch.isfinite(images).flatten(1).all(dim=1)
        if bool(bad.any()):
            indices = torch.nonzero(bad).flatten().tolist()
            indices = indices if names is None else sorted({names[i] for i in indices})
            raise ValueError(
                f"images {_listed(indices)} hold NaN or infinite pixels: remove or repair them "
                "(e.g. torch.nan_to_num), every figure would be undefined"
            )


def to_pixel_range(images: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The images as pixels (uint8 kept, also with ``norm``: they cannot be normalised values; floats
    un-normalised with ``norm``), refused outside [0, 1]."""
    if images.dtype == torch.uint8:
        return images
    if norm is not None:
        dtype = torch.promote_types(images.dtype, torch.float32)
        mean, std = (t.to(images.device, dtype) for t in norm)
        images = images.to(dtype) * std + mean
    if len(images):
        lo, hi = (float(v) for v in torch.aminmax(images))
        if lo < -PIXEL_TOLERANCE or hi > 1 + PIXEL_TOLERANCE:
            raise ValueError(_range_message(lo, hi, norm is not None))
    return images


def _range_message(lo: float, hi: float, normalized: bool) -> str:
    if normalized:
        return (
            f"the images un-normalised with normalization=(mean, std) span [{lo:.4g}, {hi:.4g}], outside the pixel "
            "range [0, 1]: give images normalised as (pixels - mean) / std with pixels in [0, 1] and exactly this mean and std"
        )
    return (
        f"the images span [{lo:.4g}, {hi:.4g}], outside the pixel range [0, 1]: for normalised images pass "
        "normalization=(mean, std) (the values they were normalised with); divide 0..255 floats by 255 (or pass uint8)"
    )


def check_inputs(model, images, labels=None, *, normalization=None, output_key=None):
    """Every check of what the user hands an entry point; returns ``(pixels, labels, feed)``: the images
    as ``(N, C, H, W)`` pixels (uint8, or floats in [0, 1]), the labels as a long tensor (or None), and
    the ``Feed`` that gives the model its input and reads its output."""
    check_model(model)
    images = as_image_batch(images)
    norm = check_normalization(normalization, images.shape[1])
    check_output_key(output_key)
    labels = check_labels(labels, len(images))
    check_finite(images)
    return to_pixel_range(images, norm), labels, Feed(*(norm or (None, None)), output_key)


@contextlib.contextmanager
def eval_mode(model: nn.Module, announce: bool = True):
    """The model in eval mode inside, each module's own mode restored on exit (also after an error; a part
    frozen in eval mode stays so). A model with a module in train mode is announced (a ``UserWarning``, unless
    ``announce`` is False: a look at shapes before the announced pass): dropout and batch statistics would
    make the figures depend on the batch and on chance."""
    modes = [(module, module.training) for module in model.modules()]
    if announce and any(training for _, training in modes):
        warnings.warn(
            f"{type(model).__name__} is in train mode: shiftprobe measures it in eval mode (dropout off, batch "
            "norm with its running statistics) and restores train mode afterwards",
            UserWarning,
            stacklevel=3,
        )
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def run_first(capture: LayerCapture, model: nn.Module, x: torch.Tensor) -> dict:
    """``capture.run(x)``, a channel mismatch turned into one line naming the channels the model takes."""
    try:
        return capture.run(x)
    except RuntimeError as err:
        hint = _channel_hint(model, x.shape[1]) if "channels" in str(err) else None
        if hint is None:
            raise
        raise ValueError(hint) from err


def check_forward(model: nn.Module, layers: Sequence[Layer], pixels: torch.Tensor, feed: Feed,
                  device: torch.device, dtype: torch.dtype) -> None:
    """The model tried on the first ``FIRST_IMAGES`` images before anything is measured: one line for
    images it cannot take (a channel mismatch), a probe point that does not run or runs several times
    (``LayerCapture.run``), an ambiguous output (``select_output``), a probe point the figures cannot be
    computed on (``check_probe_value``), or non-finite activations."""
    x = to_pixels(pixels[:FIRST_IMAGES].to(device), dtype)
    with torch.inference_mode(), LayerCapture(model, layers, feed=feed) as capture:
        feats = run_first(capture, model, x)
    bad = {}
    for layer in layers:
        value = feats[layer.name]
        check_probe_value(layer.name, value, len(x))
        rows = ~torch.isfinite(value).reshape(len(x), -1).all(dim=1)
        if bool(rows.any()):
            bad[layer.name] = torch.nonzero(rows).flatten().tolist()
    if bad:
        where = f" on images {_listed(next(iter(bad.values())))} of the first {len(x)}"
        raise ValueError(nonfinite_message(list(bad), where))


def check_probe_value(name: str, value: torch.Tensor, n_images: int) -> None:
    """One line for a probe point the figures cannot be computed on: not one row per image (a sequence-first
    or 0-d output), or not real floating-point."""
    if value.dim() == 0 or len(value) != n_images:
        fix = ("pick the model's per-image output with output_key= (a key or a position)" if name == OUTPUT else
               "probe a module whose output is batch first (e.g. nn.MultiheadAttention(..., batch_first=True)) or one "
               "next to it")
        raise ValueError(f"layer {name!r} gives a tensor of shape {tuple(value.shape)}, whose first dimension is not "
                         f"the batch of {n_images} images: {fix}")
    if not value.is_floating_point():
        raise ValueError(
            f"layer {name!r} gives a {value.dtype} tensor: the figures need real floating-point activations; probe "
            "the module that computes them (before a cast, a comparison or a complex transform)"
        )


def nonfinite_message(layers: list[str], where: str = "") -> str:
    """The one line for non-finite activations (never reported as a geometry reason)."""
    return (
        f"non-finite activations (NaN/inf) in layer(s) {', '.join(map(repr, layers))}{where}: every figure there "
        "would be undefined; repair the model (e.g. NaN weights, or an overflow in half precision: measure in float32)"
    )


def _channel_hint(model: nn.Module, channels: int) -> str | None:
    """The refusal of ``channels``-channel images by a model whose first convolution takes another count."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            expected = module.in_channels
            if expected and expected != channels:
                return (
                    f"the images have {channels} channel(s) but the model's first convolution {name!r} takes {expected}: "
                    f"give {expected}-channel images (N, {expected}, H, W)"
                )
            return None
    return None
