"""The paired-translation test set: items ``(x, T(s) x, y, s)``, item by item, of the plan the measurement
engine reads block-wise (``Translation.plan``), deterministic for a seed."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from shiftprobe.probe.translation import Translation


class PairedShiftDataset(Dataset):
    """Items ``(x, T(s) x, y, s)``: float pixel images ``C x H x W`` in [0, 1], label, shift ``(dy, dx)``,
    of the uint8 test images ``N x H x W`` or ``N x C x H x W`` (shifted in pixel space, not normalised)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Translation):
        if images.dim() not in (3, 4) or images.dtype != torch.uint8:
            raise ValueError(
                f"expected uint8 images N x H x W or N x C x H x W, got {images.dtype} {tuple(images.shape)}"
            )
        self.images, self.labels, self.transform = images, labels, transform
        self.plan = transform.plan(len(images), tuple(images.shape[-2:]))

    def __len__(self) -> int:
        return len(self.images) * self.plan.params_per_image

    def __getitem__(self, index: int):
        i, j = divmod(int(index), self.plan.params_per_image)
        shift = self.plan.param_values(self.plan.ids_of(torch.tensor([i]))[0, j])
        image = self.images[i]
        x = (image.unsqueeze(0) if image.dim() == 2 else image).float().div_(255)
        return x, self.transform.act(x, shift.tolist()), self.labels[i], shift.clone()
