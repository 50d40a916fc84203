"""The lab's MNIST CNN, layer for layer, with named probe points and two research variants.

Lab network (``pool="max"``, ``padding="valid"``)::

    conv1 1->10 k5 -> [conv1 probe, 10x24x24] -> max_pool 2 -> ReLU
    -> conv2 10->20 k5 -> [conv2 probe, 20x8x8] -> max_pool 2 -> ReLU -> flatten 320
    -> fc1 320->50 -> [fc1 probe, pre-ReLU] -> ReLU -> fc2 50->10 -> [logits probe] -> log_softmax

``forward`` keeps the lab's contract and returns ``(log_probs, conv2_repr, fc1_repr)``.
The input is always pixels in [0, 1]; when ``normalize`` is on, (x - 0.1307) / 0.3081 is the
network's first (fixed, pointwise) step, so every shift is applied in pixel space before it.

Variants: ``pool="blur"`` (MaxPool(2, stride 1) then a binomial BlurPool, R. Zhang 2019) and
``padding="circular"`` (both convolutions keep their map size with circular padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.blurpool import BlurPool2d

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PROBE_LAYERS = ("conv1", "conv2", "fc1", "logits")
CONV_LAYERS = ("conv1", "conv2")
POOLS = ("max", "blur")
PADDINGS = ("valid", "circular")


class MaxPool2x2(nn.Module):
    """``max_pool2d(x, 2)``. Without autograd it runs as two element-wise maxima of strided views:
    the same values, about ten times faster than PyTorch's CPU pooling kernel for these small maps.
    With autograd it is ``F.max_pool2d`` itself, so training follows the lab exactly (ties included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 2)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class LabCNN(nn.Module):
    """The lab CNN. ``probe(x)`` returns every probe point by name; ``forward`` the lab's triple."""

    #: probe points measured by default (module names, or aliases below)
    default_probe_layers = ("conv1", "conv2", "fc1", "logits")
    #: display names of modules: fc2's output is the logits
    layer_aliases = {"logits": "fc2"}
    #: the probe points ``probe_crop_shifts`` computes (the crop fast path's reach)
    crop_window_layers = ("conv1", "conv2", "fc1", "logits")
    #: the probe points whose ``probe_crop_shifts`` maps are windows of one map of the basis that moves
    #: by ``shift / stride`` (conv1: the padded image's conv1; conv2: one map per pooling phase, so at
    #: even shifts): there a shifted map holds, at each position, the very number of the unshifted one
    crop_window_maps = ("conv1", "conv2")

    def __init__(
        self,
        pool: str = "max",
        padding: str = "valid",
        blur_filter_size: int = 3,
        normalize: bool = False,
        image_size: int = 28,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"model.pool={pool!r} is not known; use one of {list(POOLS)}")
        if padding not in PADDINGS:
            raise ValueError(f"model.padding={padding!r} is not known; use one of {list(PADDINGS)}")
        self.pool, self.padding, self.normalize = pool, padding, bool(normalize)
        conv_kw = {"padding": 2, "padding_mode": "circular"} if padding == "circular" else {}
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5, **conv_kw)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, **conv_kw)
        if pool == "blur":
            self.pool1 = nn.Sequential(nn.MaxPool2d(2, stride=1), BlurPool2d(10, blur_filter_size, stride=2))
            self.pool2 = nn.Sequential(nn.MaxPool2d(2, stride=1), BlurPool2d(20, blur_filter_size, stride=2))
        else:
            self.pool1 = MaxPool2x2()
            self.pool2 = MaxPool2x2()
        self.map_sizes = self._map_sizes(image_size)
        side = self.map_sizes["pool2"]
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def _map_sizes(self, image_size: int) -> dict[str, int]:
        shrink = 0 if self.padding == "circular" else 4
        c1 = image_size - shrink
        p1 = c1 // 2
        c2 = p1 - shrink
        return {"conv1": c1, "pool1": p1, "conv2": c2, "pool2": c2 // 2}

    # -- the computation -------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> network input (normalised when ``normalize`` is on)."""
        return (x - self.mean) / self.std if self.normalize else x

    def head(self, conv2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the conv2 probe point."""
        fc1 = self.fc1(F.relu(self.pool2(conv2)).flatten(1))
        return {"fc1": fc1, "logits": self.fc2(F.relu(fc1))}

    def probe(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every probe point by name: ``conv1`` (pre-pool), ``conv2`` (pre-pool), ``fc1`` (pre-ReLU), ``logits``."""
        conv1 = self.conv1(self.prepare(x))
        conv2 = self.conv2(F.relu(self.pool1(conv1)))
        return {"conv1": conv1, "conv2": conv2, **self.head(conv2)}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lab's contract: ``(log_probs, conv2_repr, fc1_repr)``."""
        p = self.probe(x)
        return F.log_softmax(p["logits"], dim=1), p["conv2"], p["fc1"]

    # -- all crop-mode shifts of a batch at once -------------------------------------------------
    @property
    def supports_crop_windows(self) -> bool:
        """True when every layer up to conv2 is 'window-compatible' (valid convs, stride-2 max pool)."""
        return self.pool == "max" and self.padding == "valid"

    def crop_shift_basis(self, x: torch.Tensor, max_shift: int) -> dict:
        """What every crop-mode shift up to ``max_shift`` of ``x`` shares: see ``probe_crop_shifts``."""
        if not self.supports_crop_windows:
            raise NotImplementedError("crop-window probing needs pool='max' and padding='valid'")
        m = int(max_shift)
        xp = F.pad(x, (m, m, m, m))  # zeros in pixel space: exactly what crop mode fills in
        a = self.conv1(self.prepare(xp))  # B x 10 x (24+2m) x (24+2m)
        phases = {}
        for py in (0, 1):
            for px in (0, 1):
                phases[py, px] = self.conv2(F.relu(self.pool1(a[:, :, py:, px:])))
        return {"max_shift": m, "conv1": a, "conv2_phases": phases}

    def probe_crop_shifts(
        self, x: torch.Tensor | None, shifts: Sequence[tuple[int, int]], basis: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """``probe(T(s) x)`` for every shift ``s`` (crop mode), as ``B x S x ...`` tensors.

        A crop-mode shift of ``x`` is a 28x28 window of ``x`` zero-padded by ``m = max |shift|``, and a
        valid convolution of a window is the window of the convolution. So conv1 runs once on the
        padded image, the stride-2 max pool once per phase (4 phases), conv2 once per phase, and each
        shift's conv1/conv2 maps are windows of those (``crop_shift_basis``; pass it as ``basis`` to
        reuse it across chunks of shifts). Only the small head (pool, fc1, fc2) runs per shift.
        Mathematically identical to ``probe(shift_images(x, dy, dx))``; the tests check it to float
        precision.
        """
        shifts = [(int(dy), int(dx)) for dy, dx in shifts]
        need = max((max(abs(dy), abs(dx)) for dy, dx in shifts), default=0)
        if basis is None or basis["max_shift"] < need:
            basis = self.crop_shift_basis(x, need)
        maps = {}
        for name in CONV_LAYERS:
            side = self.map_sizes[name]
            windows = []
            for dy, dx in shifts:
                source, y0, x0 = self.crop_window_source(basis, name, dy, dx)
                windows.append(source[:, :, y0 : y0 + side, x0 : x0 + side])
            maps[name] = torch.stack(windows, dim=1)
        conv1, conv2 = maps["conv1"], maps["conv2"]
        b, s = conv2.shape[:2]
        head = self.head(conv2.reshape(b * s, *conv2.shape[2:]))
        return {
            "conv1": conv1,
            "conv2": conv2,
            "fc1": head["fc1"].view(b, s, -1),
            "logits": head["logits"].view(b, s, -1),
        }

    def crop_window_source(self, basis: dict, name: str, dy: int, dx: int) -> tuple[torch.Tensor, int, int]:
        """``(map, y0, x0)``: probe point ``name`` (one of ``crop_window_maps``) of the crop-shifted image is
        the ``map_sizes[name]``-sided window of ``map`` (a tensor of ``basis``) at origin ``(y0, x0)``."""
        m = basis["max_shift"]
        sy, sx = m - dy, m - dx  # window origin in the padded conv1 map
        if name == "conv1":
            return basis["conv1"], sy, sx
        if name == "conv2":  # the pooling phase of the origin, then the origin in that phase's map
            return basis["conv2_phases"][sy % 2, sx % 2], sy // 2, sx // 2
        raise KeyError(f"{name!r} is not one of crop_window_maps {self.crop_window_maps}")


# Hand-derived receptive fields of the lab CNN (pool='max', padding='valid'), checked against a
# perturbation measurement (tests/models/test_receptive_fields.py) and the engine's inference.
#
# Receptive field of map position i (one axis, unbounded input), as (stride r, a, b): the inclusive
# pixel interval [r*i + a, r*i + b]. A layer with kernel k, stride s, padding p on a map with (r, a, b)
# gives (r*s, a - r*p, b + r*(k - 1 - p)); ReLU is pointwise.
#   conv1  k5 s1 on pixels:    [i, i+4]                 -> (1, 0, 4)
#   pool1  k2 s2 on conv1:     [2i, (2i+1)+4]           -> (2, 0, 5)
#   conv2  k5 s1 on pool1:     [2i, 2(i+4)+5]           -> (2, 0, 13)
#   pool2  k2 s2 on conv2:     [2*2i, 2(2i+1)+13]       -> (4, 0, 15)
# (The blur variant's reflect padding and the circular variant's wrap-around make the fields depend
# on the map border; they are not listed.)
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    "conv1": (1, 0, 4),
    "pool1": (2, 0, 5),
    "conv2": (2, 0, 13),
    "pool2": (4, 0, 15),
}
