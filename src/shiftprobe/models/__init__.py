"""The built-in networks (each class carries ``default_probe_layers`` and ``layer_aliases``; ``forward``
returns the lab's ``(log_probs, spatial_repr, vector_repr)``), the torchvision / timm builders and
``apply_variants``; docs/models.md describes them."""

from shiftprobe.models.allconv import AllConvCNN
from shiftprobe.models.gap import GapCNN
from shiftprobe.models.lab import LabCNN
from shiftprobe.models.pooled import FlipPooledCNN, RotPooledCNN
from shiftprobe.models.resnet import SmallResNet
from shiftprobe.models.variants import apply_variants
from shiftprobe.models.zoo import timm_model, torchvision_model

#: what a stored model setting may name as its ``_target_`` (``shiftprobe.stored_config``): the networks
#: and the builders of torchvision / timm networks (not ``apply_variants``, which edits a given network)
BUILDERS = ("AllConvCNN", "FlipPooledCNN", "GapCNN", "LabCNN", "RotPooledCNN", "SmallResNet", "timm_model",
            "torchvision_model")

__all__ = [
    "AllConvCNN",
    "FlipPooledCNN",
    "GapCNN",
    "LabCNN",
    "RotPooledCNN",
    "SmallResNet",
    "apply_variants",
    "timm_model",
    "torchvision_model",
]
