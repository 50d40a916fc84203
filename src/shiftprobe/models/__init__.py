"""The lab CNN and the model variants, each a plain ``torch.nn.Module`` in its own module.

Each class carries ``default_probe_layers`` (module names the measurement probes by default) and
``layer_aliases`` (display name -> module name, e.g. ``{"logits": "fc2"}``); each module holds
``RECEPTIVE_FIELDS``, the hand-derived (stride, a, b) of its spatial probe points.
``forward(x)`` keeps the lab's contract ``(log_probs, spatial_repr, vector_repr)``.
``RotPooledCNN`` and ``FlipPooledCNN`` (``shiftprobe.models.pooled``) are controls: the lab CNN pooled
over quarter-turns or flips, invariant by construction.

``torchvision_model`` and ``timm_model`` (``shiftprobe.models.zoo``) build any torchvision or timm
classification network for the data; ``apply_variants`` (``shiftprobe.models.variants``) makes the
``pool`` (max, blur, aps) and ``padding`` (circular) variants of a built network.
"""

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
