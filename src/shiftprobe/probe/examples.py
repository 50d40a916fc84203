"""The example pairs of a translation section (``measure(..., examples=True)``): three images, two shifts and
the most active channels of the deepest layer with a stride, with ``f(Tx) - A f(x)`` on the compared positions
(NaN elsewhere), as nested lists: the figure draws them and never runs a network."""

from __future__ import annotations

import torch

from shiftprobe.probe.capture import LayerCapture
from shiftprobe.probe.inputs import to_pixels


def display_image(x: torch.Tensor) -> torch.Tensor:
    """One ``C x H x W`` image as a figure draws it (float, on the CPU): ``H x W`` for one channel (grey),
    ``H x W x C`` for colour."""
    x = x.float().cpu()
    return x[0] if x.shape[0] == 1 else x.permute(1, 2, 0).contiguous()


def aligned_difference(f_x: torch.Tensor, f_t: torch.Tensor, shift, geo, transform, image_size):
    """``f(Tx) - A f(x)`` on the compared positions, NaN elsewhere; None where the map action is undefined."""
    action = transform.map_action(f_x, shift, geo, image_size)
    if action is None:
        return None
    out = torch.full_like(f_t, float("nan"))
    rows, cols = action.region or (slice(None), slice(None))
    if not action.empty:
        out[..., rows, cols] = f_t[..., rows, cols] - action.expected
    return out


def example_pairs(net, pixels: torch.Tensor, transform, n_images: int = 3, n_channels: int = 3) -> dict | None:
    """``{"layer", "mode", "stride", "circular", "channels", "pairs": [{"image", "shift", "x", "tx", "f_x",
    "f_t", "aligned_diff"}]}`` for the first ``n_images`` images (``net``: ``shiftprobe.probe.engine.Network``),
    the ``n_channels`` most active channels (mean ``|f(x)|``); None without a layer of inferred stride."""
    layers = [layer for layer in net.layers if net.geometry[layer.name].stride is not None]
    if not layers:
        return None
    layer, geo = layers[-1], net.geometry[layers[-1].name]
    shifts = [(s, s) for s in (1, 2) if s <= transform.max_shift] or [(0, 0)]  # one odd, one even
    x = to_pixels(pixels[:n_images].to(net.device), net.dtype)
    with torch.inference_mode(), LayerCapture(net.model, [layer], feed=net.feed) as capture:
        f_x = capture.run(x)[layer.name].float().cpu()
        shifted = {s: transform.act(x, s) for s in shifts}
        f_t = {s: capture.run(t)[layer.name].float().cpu() for s, t in shifted.items()}
    channels = torch.argsort(f_x.abs().mean(dim=(0, 2, 3)), descending=True)[:n_channels].tolist()
    image_size = tuple(x.shape[-2:])
    pairs = []
    for i in range(len(x)):
        for s in shifts:
            diff = aligned_difference(f_x[i, channels], f_t[s][i, channels], s, geo, transform, image_size)
            pairs.append({
                "image": i, "shift": list(s), "x": display_image(x[i]).tolist(),
                "tx": display_image(shifted[s][i]).tolist(), "f_x": f_x[i, channels].tolist(),
                "f_t": f_t[s][i, channels].tolist(), "aligned_diff": None if diff is None else diff.tolist(),
            })
    return {"layer": layer.name, "mode": transform.mode, "stride": list(geo.stride), "circular": geo.circular,
            "channels": channels, "pairs": pairs}
