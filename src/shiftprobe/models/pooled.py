"""Controls whose answer is known by construction: the lab CNN (submodule ``cnn``) run once on the G
transformed copies of the input stacked along the batch axis, logits averaged (``RotPooledCNN``: the 4
quarter-turns, ``FlipPooledCNN``: the flips). The probe points are parameter-free modules of their own,
called on the identity copy's slice (docs/measurement.md); there is no crop fast path."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

# the spatial probe points are the lab CNN's maps of the untransformed input: the lab's receptive fields
from shiftprobe.models.lab import RECEPTIVE_FIELDS, LabCNN  # noqa: F401

#: the lab CNN's probe points inside a pooled model (module names of the ``ProbePoint``s)
INNER_PROBE_POINTS = ("conv1", "pool1", "conv2", "pool2", "fc1")


class ProbePoint(nn.Module):
    """The identity: a forward hook on it captures a layer for the untransformed input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class CopyMean(nn.Module):
    """``(G, B, ...) -> (B, ...)``: the mean over the G transformed copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=0)


class GroupPooledCNN(nn.Module):
    """The lab CNN (``LabCNN``'s settings) applied to every element of a finite group, logits averaged.
    Subclasses name the group's elements (``group``, identity first) and apply them (``transform``)."""

    group: tuple = ()
    default_probe_layers: tuple[str, ...] = ("conv1", "conv2", "fc1", "logits")
    layer_aliases: dict[str, str] = {}

    def __init__(self, **lab_settings):
        super().__init__()
        self.cnn = LabCNN(**lab_settings)
        for name in INNER_PROBE_POINTS:
            self.add_module(name, ProbePoint())
        self.logits = CopyMean()

    __init__.__signature__ = inspect.signature(LabCNN.__init__)  # what Hydra's key check reads

    # the lab CNN's settings, read by the app and the tests as on LabCNN
    pool = property(lambda self: self.cnn.pool)
    padding = property(lambda self: self.cnn.padding)
    normalize = property(lambda self: self.cnn.normalize)

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
    """``model=rot_pool``: the 4 quarter-turns (``torch.rot90``, k = 0..3, counter-clockwise), invariant to
    ``Rotation90``; square images only."""

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
    """``model=flip_pool``: the identity, the horizontal, the vertical flip and both; invariant to Flip."""

    group = ("identity", "horizontal", "vertical", "both")
    _DIMS = {"identity": (), "horizontal": (-1,), "vertical": (-2,), "both": (-2, -1)}

    def transform(self, x: torch.Tensor, g: str) -> torch.Tensor:
        dims = self._DIMS[g]
        return x.flip(dims) if dims else x
