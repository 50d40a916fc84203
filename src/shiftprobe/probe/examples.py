"""The data of the example-pairs figure: a few images, their shifts and one layer's maps.

The figure draws exactly this; it never runs the network. The aligned difference uses the
engine's own certified region (``shiftprobe.probe.metrics.aligned_rel_at``'s slices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shiftprobe.probe.capture import LayerCapture, resolve_layers
from shiftprobe.probe.engine import model_device, model_dtype
from shiftprobe.probe.geometry import LayerGeometry, certified_slices, infer_geometry
from shiftprobe.probe.inputs import check_inputs, to_pixels
from shiftprobe.probe.metrics import aligned_offset
from shiftprobe.probe.transforms import shift_images


def aligned_difference(f_x: torch.Tensor, f_t: torch.Tensor, dy: int, dx: int, geo: LayerGeometry, mode: str):
    """``f(Tx) - f(x)`` moved by the map offset, NaN outside the certified positions; None when the
    stride does not divide the shift (no exact alignment exists)."""
    if not geo.exact_test:
        return None
    offset = aligned_offset(dy, dx, geo.stride)
    if offset is None:
        return None
    my, mx = offset
    if mode == "roll" and geo.circular:
        return f_t - torch.roll(f_x, shifts=(my, mx), dims=(-2, -1))
    out = torch.full_like(f_t, float("nan"))
    slices = certified_slices(geo.interior, my, mx)
    if slices is not None:
        (a0, a1), (b0, b1) = slices
        out[..., a0, a1] = f_t[..., a0, a1] - f_x[..., b0, b1]
    return out


def display_image(x: torch.Tensor) -> torch.Tensor:
    """One ``C x H x W`` image as the figure draws it (float, on the CPU): ``H x W`` for one channel
    (drawn in grey), ``H x W x C`` for colour (drawn as RGB)."""
    x = x.float().cpu()
    return x[0] if x.shape[0] == 1 else x.permute(1, 2, 0).contiguous()


def example_pairs(
    model: nn.Module,
    images: torch.Tensor,
    shifts: Sequence[tuple[int, int]],
    layer: str,
    mode: str = "crop",
    n_channels: int = 3,
    normalization=None,
) -> dict:
    """Everything ``plot_example_pairs`` draws: pixels of ``x`` and ``T(s) x`` (``display_image``: grey
    ``H x W`` or colour ``H x W x C``), the ``n_channels`` most active channels of ``layer`` (mean |f(x)|)
    for both, and their aligned difference per pair."""
    images, _, feed = check_inputs(model, images, normalization=normalization)
    device, dtype = model_device(model), model_dtype(model)
    resolved = resolve_layers(model, [layer])
    geo = infer_geometry(model, resolved, tuple(images.shape[1:]), device=device, feed=feed)[resolved[0].name]
    was_training = model.training
    model.eval()
    shifts = [(int(dy), int(dx)) for dy, dx in shifts]
    try:
        with torch.inference_mode(), LayerCapture(model, resolved, feed=feed) as cap:
            x = to_pixels(images.to(device), dtype)
            f_x = cap.run(x)[resolved[0].name].float().cpu()
            shifted = {s: shift_images(x, s[0], s[1], mode) for s in shifts}
            f_t = {s: cap.run(t)[resolved[0].name].float().cpu() for s, t in shifted.items()}
    finally:
        model.train(was_training)
    k = min(n_channels, f_x.shape[1])
    channels = torch.argsort(f_x.abs().mean(dim=(0, 2, 3)), descending=True)[:k].tolist()
    pairs = []
    for i in range(x.shape[0]):
        for s in shifts:
            diff = aligned_difference(f_x[i, channels], f_t[s][i, channels], s[0], s[1], geo, mode)
            pairs.append(
                {
                    "image": i,
                    "shift": s,
                    "x": display_image(x[i]),
                    "tx": display_image(shifted[s][i]),
                    "f_x": f_x[i, channels],
                    "f_t": f_t[s][i, channels],
                    "aligned_diff": diff,
                }
            )
    return {"layer": resolved[0].name, "mode": mode, "stride": geo.stride, "circular": geo.circular,
            "channels": channels, "pairs": pairs}
