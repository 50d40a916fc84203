"""What the network itself says about each probe point (nothing is declared): cumulative stride, receptive field
``[r q + a, r q + b]``, the interior positions (receptive field inside the image) and circularity, inferred on a
larger canvas by autograd; ``certified_slices``: the positions ``q`` with ``q`` and ``q - m`` interior, where an
equivariant layer's maps are equal by construction (docs/measurement.md, "Where the exact test may look")."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from shiftprobe.probe.capture import Feed, Layer, LayerCapture
from shiftprobe.probe.thresholds import exact_tolerance

#: pixels added on each side of the image to infer strides and receptive fields
CANVAS_PAD = 32
#: random canvases whose gradients are united (ReLU and max pooling hide some pixels from any one)
CANVAS_SAMPLES = 4


@dataclass
class LayerGeometry:
    """Inferred geometry of one probe point (see the module docstring)."""

    name: str
    kind: str  # "spatial" (a C x h x w map) or "vector"
    shape: tuple[int, ...]  # per image
    stride: tuple[int, int] | None = None
    receptive_field: tuple[int, int, int, int] | None = None  # a_y, b_y, a_x, b_x
    interior: tuple[int, int, int, int] | None = None  # lo_y, hi_y, lo_x, hi_x (inclusive; empty if lo > hi)
    circular: bool = False
    note: str | None = None

    @property
    def spatial(self) -> bool:
        return self.kind == "spatial"

    @property
    def exact_test(self) -> bool:
        """The exact test applies (stride and receptive field known)."""
        return self.stride is not None and self.interior is not None

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.receptive_field is not None:
            a_y, b_y, a_x, b_x = self.receptive_field
            out["receptive_field"] = {"y": [a_y, b_y], "x": [a_x, b_x], "size": [b_y - a_y + 1, b_x - a_x + 1]}
        if self.interior is not None:
            lo_y, hi_y, lo_x, hi_x = self.interior
            out["interior"] = {"y": [lo_y, hi_y], "x": [lo_x, hi_x]}
        for key in ("shape", "stride"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


def _interval(r: int, a: int, b: int, size: int, map_size: int) -> tuple[int, int]:
    lo = max(0, math.ceil(-a / r))
    hi = min(map_size - 1, (size - 1 - b) // r)
    return lo, hi


def certified_slices(
    interior: tuple[int, int, int, int], my: int, mx: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """``(shifted, original)`` slices over the positions ``q`` (shifted map) and ``q - m`` (original map)
    with both interior, or None when there is none."""
    lo_y, hi_y, lo_x, hi_x = interior
    y0, y1 = max(lo_y, lo_y + my), min(hi_y, hi_y + my)
    x0, x1 = max(lo_x, lo_x + mx), min(hi_x, hi_x + mx)
    if y0 > y1 or x0 > x1:
        return None
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), (slice(y0 - my, y1 + 1 - my), slice(x0 - mx, x1 + 1 - mx))


def _pads(padding) -> bool:
    if isinstance(padding, str):
        return padding != "valid"
    if isinstance(padding, int):
        return padding != 0
    return any(_pads(p) for p in padding)


def pads_circularly(model: nn.Module) -> bool:
    """True when every module of the model that pads does so circularly (and something convolves)."""
    has_conv = False
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            has_conv = True
            if module.padding_mode != "circular" and _pads(module.padding):
                return False
        elif isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
            if _pads(module.padding):
                return False
        elif isinstance(module, nn.modules.padding._CircularPadNd):
            continue  # nn.CircularPad2d (the circular variants' padded pools): wraps around
        elif isinstance(
            module,
            (nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd, nn.modules.padding._ConstantPadNd),
        ):
            return False
        else:
            # a custom module that pads (e.g. BlurPool's reflect padding) is not circular unless it says so
            padding = getattr(module, "padding", None)
            if isinstance(padding, str):
                if padding not in ("circular", "valid"):
                    return False
            elif padding and _pads(padding) and getattr(module, "padding_mode", None) != "circular":
                return False
    return has_conv


def _nonzero_bounds(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


@torch.inference_mode(False)
@torch.enable_grad()
def infer_geometry(model: nn.Module, layers: Sequence[Layer], image_shape: tuple[int, int, int],
                   device: torch.device | str = "cpu", seed: int = 0,
                   feed: Feed | None = None) -> dict[str, LayerGeometry]:
    """Stride, receptive field, interior and circularity of each probe point (see the module docstring), on a
    float32 copy of the model (of mixed dtypes: as it is) in eval mode fed by ``feed``; autograd is on here, also inside
    ``torch.inference_mode()``. A probe point ``conv#k`` gets the geometry of that call of its module."""
    c, h_img, w_img = image_shape
    net = copy.deepcopy(model).eval().to(device)
    if len({p.dtype for p in net.parameters() if p.is_floating_point()}) <= 1:  # mixed: it casts between them
        net.float()
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, LayerGeometry] = {}
    with torch.no_grad(), LayerCapture(net, layers, feed=feed) as cap:
        shapes = {k: tuple(v.shape[1:]) for k, v in cap.run(torch.rand(1, c, h_img, w_img, generator=gen).to(device)).items()}
    spatial = []
    for layer in layers:
        shape = shapes[layer.name]  # LayerCapture.run refuses a probe point that did not run
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            out[layer.name] = LayerGeometry(layer.name, "spatial", shape)
            spatial.append(layer)
        else:
            out[layer.name] = LayerGeometry(layer.name, "vector", shape)
    if not spatial:
        return out
    circular = pads_circularly(net)
    pad = CANVAS_PAD
    canvas = torch.randn(CANVAS_SAMPLES, c, h_img + 2 * pad, w_img + 2 * pad, generator=gen).to(device)
    canvas.requires_grad_(True)
    try:
        with torch.enable_grad(), LayerCapture(net, spatial, stop_early=True, feed=feed) as cap:
            feats = cap.run(canvas)
            for layer in spatial:
                geo = out[layer.name]
                _infer_one(geo, feats[layer.name], canvas, pad, (h_img, w_img), gen)
                if geo.stride is not None and circular:
                    geo.circular = geo.shape[1] * geo.stride[0] == h_img and geo.shape[2] * geo.stride[1] == w_img
    except Exception as err:  # the network does not take a larger input (fixed-size layers, reshapes)
        for layer in spatial:
            geo = out[layer.name]
            if geo.stride is None and geo.note is None:
                geo.note = (
                    f"stride and receptive field not inferred: the model does not run on a "
                    f"{h_img + 2 * pad}x{w_img + 2 * pad} canvas ({type(err).__name__}: {str(err)[:120]})"
                )
    _confirm_interiors(net, [layer for layer in spatial if out[layer.name].interior is not None], out, image_shape,
                       gen, feed, device)
    _confirm_circular(net, [layer for layer in spatial if out[layer.name].circular], out, image_shape, gen, feed,
                      device)
    return out


@torch.no_grad()
def _confirm_interiors(net: nn.Module, layers: list[Layer], out: dict[str, LayerGeometry], image_shape, gen,
                       feed: Feed | None, device) -> None:
    """Keep an interior only where the network shows it: one image on two canvases whose surroundings differ (one
    100 times larger) gives the same map on every interior position. Gradients can miss part of a receptive field
    (the inputs a max pool or a ReLU did not pass on), and such a layer gets no exact test."""
    if not layers:
        return
    c, h, w = image_shape
    canvas = torch.randn(2, c, h + 2 * CANVAS_PAD, w + 2 * CANVAS_PAD, generator=gen)
    canvas[1] *= 100
    canvas[..., CANVAS_PAD:CANVAS_PAD + h, CANVAS_PAD:CANVAS_PAD + w] = torch.rand(c, h, w, generator=gen)
    with LayerCapture(net, layers, stop_early=True, feed=feed) as cap:
        maps = cap.run(canvas.to(device))
    for layer in layers:
        geo = out[layer.name]
        (lo_y, hi_y, lo_x, hi_x), (ry, rx) = geo.interior, geo.stride
        f = maps[layer.name][..., CANVAS_PAD // ry + lo_y:CANVAS_PAD // ry + hi_y + 1,
                             CANVAS_PAD // rx + lo_x:CANVAS_PAD // rx + hi_x + 1]
        # round-off scales with the larger canvas (an FFT or Winograd convolution mixes its tiles); NaN fails
        scale = max(1.0, float(maps[layer.name].abs().max()))
        if f.numel() and not bool((f[0] - f[1]).abs().max() <= exact_tolerance(torch.float32) * scale):
            geo.receptive_field = geo.interior = None
            geo.note = ("the receptive field inferred from gradients misses input pixels the map depends on (inputs "
                        "a max pool or ReLU did not pass on): no exact test")


@torch.no_grad()
def _confirm_circular(net: nn.Module, layers: list[Layer], out: dict[str, LayerGeometry], image_shape, gen,
                      feed: Feed | None, device) -> None:
    """Keep ``circular`` only where the network shows it: rolling a random image by one stride rolls the map
    by one position (to float32 round-off). A padding the modules do not declare (``F.pad`` in a forward, a
    clipped ``ceil_mode`` window) breaks it, and the layer is then compared on its interior."""
    if not layers:
        return
    strides = sorted({out[layer.name].stride for layer in layers})
    x = torch.rand(1, *image_shape, generator=gen).to(device)
    batch = torch.cat([x] + [torch.roll(x, shifts=s, dims=(-2, -1)) for s in strides])
    with LayerCapture(net, layers, stop_early=True, feed=feed) as cap:
        maps = cap.run(batch)
    for layer in layers:
        geo, f = out[layer.name], maps[layer.name]
        rolled = f[1 + strides.index(geo.stride)]
        tol = exact_tolerance(torch.float32) * max(1.0, float(f[0].abs().max()))
        geo.circular = bool((rolled - torch.roll(f[0], shifts=(1, 1), dims=(-2, -1))).abs().max() <= tol)


def growth_stride(base: Sequence[int], grown: Sequence[int], pad: int) -> tuple[int, int] | str:
    """The stride ``(r_y, r_x)`` of a map of ``base`` positions ``(h, w)`` that has ``grown`` positions
    when the input has ``pad`` more pixels on every side; else why not (a sentence)."""
    strides = []
    for b, g in zip(base, grown, strict=True):
        extra = g - b
        if extra <= 0 or (2 * pad) % extra:
            return f"the map does not grow in step with the input ({b} -> {g} positions for {2 * pad} more pixels)"
        strides.append(2 * pad // extra)
    return strides[0], strides[1]


def _infer_one(geo: LayerGeometry, feat: torch.Tensor, canvas: torch.Tensor, pad: int, size, gen) -> None:
    _, h, w = geo.shape
    h2, w2 = feat.shape[-2:]
    stride = growth_stride((h, w), (h2, w2), pad)
    if isinstance(stride, str):
        geo.note = f"{stride}: no stride, so no exact test"
        return
    ry, rx = stride
    geo.stride = (ry, rx)
    if pad % ry or pad % rx:
        geo.note = f"stride {ry}x{rx} does not divide the canvas margin {pad}: no exact test"
        return
    weights = torch.randn(feat.shape[1], generator=gen).to(feat.device, feat.dtype)
    bounds = []
    for qy, qx in ((h2 // 2, w2 // 2), (h2 // 2 + 1, w2 // 2 + 1)):
        if qy >= h2 or qx >= w2:
            qy, qx = qy - 2, qx - 2
        target = (feat[:, :, qy, qx] * weights).sum()
        (grad,) = torch.autograd.grad(target, canvas, retain_graph=True)
        b = _nonzero_bounds(grad.abs().sum(dim=(0, 1)) > 0)
        if b is None:
            geo.note = "no input pixel reaches this layer's centre (gradient is zero): no exact test"
            return
        if b[0] == 0 or b[2] == 0 or b[1] == canvas.shape[-2] - 1 or b[3] == canvas.shape[-1] - 1:
            geo.note = (
                f"the receptive field reaches the edge of the {canvas.shape[-2]}x{canvas.shape[-1]} inference "
                f"canvas (a global operation, or a field wider than the canvas): no exact test"
            )
            return
        bounds.append((qy, qx, b))
    rf = []
    for qy, qx, (y0, y1, x0, x1) in bounds:
        # canvas position q' is image position q' - pad / r; its pixels, in image coordinates, start at
        # y0 - pad, so a = (y0 - pad) - r (q' - pad / r) = y0 - r q'
        rf.append((y0 - ry * qy, y1 - ry * qy, x0 - rx * qx, x1 - rx * qx))
    if rf[0] != rf[1]:
        geo.note = f"neighbouring positions see differently shaped input regions ({rf[0]} vs {rf[1]}): no exact test"
        return
    a_y, b_y, a_x, b_x = rf[0]
    geo.receptive_field = rf[0]
    lo_y, hi_y = _interval(ry, a_y, b_y, size[0], h)
    lo_x, hi_x = _interval(rx, a_x, b_x, size[1], w)
    geo.interior = (lo_y, hi_y, lo_x, hi_x)
    if lo_y > hi_y or lo_x > hi_x:
        geo.note = (
            f"no map position sees only image pixels (receptive field {b_y - a_y + 1}x{b_x - a_x + 1} on a "
            f"{size[0]}x{size[1]} image): the exact test has no certified region"
        )
