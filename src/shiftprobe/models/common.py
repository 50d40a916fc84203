"""Pieces the built-in networks share: their settings, the pixel normalisation, global average pooling."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from shiftprobe.errors import ArgumentError
from shiftprobe.models.lab import MNIST_MEAN, MNIST_STD, PADDINGS
from shiftprobe.models.variants import apply_variants, check_variant


class PixelInputNet(nn.Module):
    """Base of the built-in networks but the lab's: input pixels in [0, 1], ``(x - 0.1307) / 0.3081`` first
    when ``normalize`` is on. A subclass's ``__init__`` takes its own parameters and ``**settings`` (the
    keywords of this ``__init__``; ``padding`` defaults to ``PADDINGS[0]``), builds its layers and calls
    ``make_variant()``; ``__init_subclass__`` gives it the signature listing both (Hydra's key check)."""

    #: the paddings the network offers, its own (the default) first
    PADDINGS: tuple[str, ...] = PADDINGS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in vars(cls):
            return
        own = [p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = list(inspect.signature(PixelInputNet.__init__).parameters.values())[1:]
        shared = [p.replace(default=cls.PADDINGS[0], annotation="str") if p.name == "padding" else p for p in shared]
        cls.__init__.__signature__ = inspect.Signature([*own, *shared])

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        normalize: bool = False,
        pool: str = "max",
        padding: str | None = None,
        blur_filter_size: int = 3,
    ):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.padding = self.PADDINGS[0] if padding is None else padding
        check_variant(pool, self.padding, self.PADDINGS)
        self.pool, self.blur_filter_size, self.normalize = pool, blur_filter_size, bool(normalize)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def make_variant(self) -> None:
        """The built network rewritten for its ``pool`` and ``padding`` (``apply_variants``)."""
        apply_variants(self, self.pool, self.padding, self.blur_filter_size)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> network input (normalised when ``normalize`` is on)."""
        return (x - self.mean) / self.std if self.normalize else x


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes, as one probe point: ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def check_positive_int(name: str, value, least: int = 1) -> int:
    """``value``, the argument ``name``, if it is an integer >= ``least``; else one line naming the argument."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ArgumentError(f"{name}={value!r} is not allowed: use an integer >= {least}")
    return value
