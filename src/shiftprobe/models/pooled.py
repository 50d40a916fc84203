"""Controls whose answer is known by construction: the lab CNN pooled over a group of transformations.

``RotPooledCNN`` (``model=rot_pool``) runs one lab CNN (``LabCNN``, same settings as ``model=lab``) on
the 4 quarter-turns of the input (``torch.rot90(x, k, dims=(-2, -1))``, k = 0, 1, 2, 3) and averages
the 4 logit vectors, then ``log_softmax``; ``FlipPooledCNN`` (``model=flip_pool``) does the same over
the identity, the horizontal flip, the vertical flip and both (the group the two flips generate).
Rotating (flipping) the input permutes the copies, so the averaged logits are invariant to
``Rotation90`` (``Flip``) by construction, up to the order of a float sum (< 1e-5 in float32). The
layers inside are those of a plain lab CNN, and are not equivariant to the group.

::

    x -> [g x for g in group, identity first] -> stacked along the batch axis (G B images)
      -> cnn: the lab CNN's conv1, pool1, conv2, pool2, fc1, fc2 on all G B images at once
      -> logits: the mean of the G logit vectors of each image -> log_softmax

Probe points. The shared network (the submodule ``cnn``) runs ONCE per forward, on the G copies
stacked along the batch axis, so a hook on ``cnn.conv1`` would see a ``G B`` batch, not a probe point.
The probe points are separate, parameter-free modules: ``conv1``, ``pool1``, ``conv2``, ``pool2``
and ``fc1`` (``ProbePoint``, the identity) are called once per forward, each right after the shared
layer computed it, on the slice of the identity copy (the UNTRANSFORMED input), and ``logits``
(``CopyMean``) is the module that averages the copies. So:

- ``conv1``, ``pool1``, ``conv2`` (pre-pool), ``pool2``, ``fc1`` (pre-ReLU) are exactly what the lab
  CNN ``cnn`` computes on ``x`` itself (``cnn.probe(x)``): the probe sees a plain, non-equivariant
  CNN inside the pooled model;
- ``logits`` is the average over the group, the invariant output; ``output`` its ``log_softmax``;
- each probe point fires once, in the order of the computation, so a capture that stops early (the
  geometry inference on a larger canvas) sees the same values.

``forward(x)`` keeps the lab's contract ``(log_probs, conv2_repr, fc1_repr)``: the pooled
log-probabilities, and the conv2 map and fc1 vector of the identity copy (the ``conv2`` and ``fc1``
probe points). There is no crop fast path (no ``crop_windows()``): the engine runs
the whole model on every shifted batch.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from shiftprobe.models.lab import RECEPTIVE_FIELDS as LAB_RECEPTIVE_FIELDS
from shiftprobe.models.lab import LabCNN

#: the lab CNN's probe points inside a pooled model (module names of the ``ProbePoint``s)
INNER_PROBE_POINTS = ("conv1", "pool1", "conv2", "pool2", "fc1")
# The spatial probe points are the lab CNN's maps of the untransformed input, so their receptive
# fields (pool='max', padding='valid') are the lab's: (stride r, a, b), map position i sees the
# pixels [r*i + a, r*i + b] (derivation in shiftprobe.models.lab).
RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = dict(LAB_RECEPTIVE_FIELDS)


class ProbePoint(nn.Module):
    """The identity: called on the identity copy's slice of a layer's output, so a forward hook
    on it captures that layer for the untransformed input (once per forward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class CopyMean(nn.Module):
    """``(G, B, ...) -> (B, ...)``: the mean over the G transformed copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=0)


class GroupPooledCNN(nn.Module):
    """The lab CNN applied to every transformation of a finite group, logits averaged (see the module
    docstring). Subclasses name the group's elements (``group``, identity first) and apply them
    (``transform``)."""

    #: the group's elements, identity first
    group: tuple = ()
    #: probe points measured by default (the lab's)
    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "logits")
    #: the probe points are modules of their own names: no aliases
    layer_aliases: dict[str, str] = {}

    def __init__(self, **lab_settings):
        """The lab CNN's settings, passed to ``LabCNN`` (its signature is this one's)."""
        super().__init__()
        self.cnn = LabCNN(**lab_settings)
        for name in INNER_PROBE_POINTS:
            self.add_module(name, ProbePoint())
        self.logits = CopyMean()

    __init__.__signature__ = inspect.signature(LabCNN.__init__)  # what Hydra's key check reads

    # the lab CNN's settings, read by the app and the tests as on LabCNN
    @property
    def pool(self) -> str:
        return self.cnn.pool

    @property
    def padding(self) -> str:
        return self.cnn.padding

    @property
    def normalize(self) -> bool:
        return self.cnn.normalize

    def transform(self, x: torch.Tensor, g) -> torch.Tensor:
        raise NotImplementedError

    def copies(self, x: torch.Tensor) -> torch.Tensor:
        """``(G B, C, H, W)``: every ``g x`` for ``g`` in ``group``, stacked along the batch axis."""
        return torch.cat([self.transform(x, g) for g in self.group])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_probs, conv2_repr, fc1_repr)``: the pooled log-probabilities; conv2 and fc1 of the
        identity copy."""
        b, cnn = x.shape[0], self.cnn
        conv1 = cnn.conv1(cnn.prepare(self.copies(x)))
        self.conv1(conv1[:b])
        pool1 = cnn.pool1(conv1)
        self.pool1(pool1[:b])
        conv2 = cnn.conv2(F.relu(pool1))
        conv2_repr = self.conv2(conv2[:b])
        pool2 = cnn.pool2(conv2)
        self.pool2(pool2[:b])
        fc1 = cnn.fc1(F.relu(pool2).flatten(1))  # the lab CNN's head, as LabCNN.head
        fc1_repr = self.fc1(fc1[:b])
        per_copy = cnn.fc2(F.relu(fc1))
        logits = self.logits(per_copy.view(len(self.group), b, *per_copy.shape[1:]))
        return F.log_softmax(logits, dim=1), conv2_repr, fc1_repr


class RotPooledCNN(GroupPooledCNN):
    """``model=rot_pool``: the lab CNN on the 4 quarter-turns of the input (``torch.rot90`` over the
    last two axes, k = 0, 1, 2, 3, counter-clockwise), logits averaged: invariant to ``Rotation90``.
    The images must be square."""

    group = (0, 1, 2, 3)

    def transform(self, x: torch.Tensor, g: int) -> torch.Tensor:
        return torch.rot90(x, g, dims=(-2, -1)) if g else x

    def copies(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != x.shape[-1]:
            raise ValueError(
                f"RotPooledCNN needs square images (a quarter-turn of {x.shape[-2]}x{x.shape[-1]} "
                f"pixels changes its shape); got input of shape {tuple(x.shape)}"
            )
        return super().copies(x)


class FlipPooledCNN(GroupPooledCNN):
    """``model=flip_pool``: the lab CNN on the identity, the horizontal flip (``x.flip(-1)``), the
    vertical flip (``x.flip(-2)``) and both, logits averaged: invariant to ``Flip``."""

    group = ("identity", "horizontal", "vertical", "both")
    _DIMS = {"identity": (), "horizontal": (-1,), "vertical": (-2,), "both": (-2, -1)}

    def transform(self, x: torch.Tensor, g: str) -> torch.Tensor:
        dims = self._DIMS[g]
        return x.flip(dims) if dims else x
