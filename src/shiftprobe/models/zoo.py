"""Any torchvision or timm classification network, built for the data: ``model=torchvision`` and
``model=timm`` (``model.name=<architecture>``).

``torchvision_model(name, ...)`` builds ``torchvision.models.get_model(name, weights=None,
num_classes=...)`` and ``timm_model(name, ...)`` builds ``timm.create_model(name, pretrained=False,
in_chans=..., num_classes=...)`` (timm is the optional extra ``pip install shiftprobe[timm]``). Then:

- **channels**: a torchvision network whose first convolution (the first ``nn.Conv2d`` in module order:
  a ResNet's ``conv1``, a ViT's ``conv_proj``) takes another number of channels gets a new one with
  ``in_channels`` inputs, initialised as torchvision initialises its CNNs (Kaiming normal, fan out).
- **small_input** (ResNets): the usual CIFAR stem, a 3x3 stride-1 convolution and no max pool, so a
  28x28 or 32x32 image is not down-sampled 4x before the first stage.
- **pool**, **padding** (``shiftprobe.models.variants``; torchvision's ResNets and VGGs only):
  ``pool=blur|aps``, ``padding=circular``.
- **probe points** (``default_probe_layers``): the stem, each stage and the head, per architecture
  (``probe_layers``); the head is aliased ``logits``.
- **normalize**: ``(x - 0.1307) / 0.3081`` as the network's first step (a forward pre-hook), as the
  built-in CNNs do with ``data.normalize=true``.
- **checked**: one forward pass on a blank ``image_size`` image, so an architecture that cannot take
  the images (a ViT wants 224x224 pixels, a VGG at least 32x32) is refused in one line at build time.
- **weights**: ``weights=<file>`` loads a state_dict (or a train.py ``.ckpt``) with
  ``shiftprobe.checkpoints.read_checkpoint``; the network's random initial weights stay on it as
  ``untrained_state`` (the measurement's untrained control, read once by the Lightning module).

The network returns logits (``outputs_logits = True``: the Lightning module applies ``log_softmax``).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from shiftprobe.errors import ArgumentError, ShiftProbeError
from shiftprobe.models.lab import MNIST_MEAN, MNIST_STD
from shiftprobe.models.variants import apply_variants, check_variant

#: ``padding``: the architecture's own (zero) padding, or circular padding
PADDINGS = ("zeros", "circular")
#: torchvision families that ``pool`` / ``padding`` apply to (their forward uses modules only)
VARIANT_FAMILIES = "torchvision's ResNets and VGGs (resnet*, resnext*, wide_resnet*, vgg*)"
#: module types that add nothing a neighbour does not show (left out of the heuristic probe points)
_QUIET = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Flatten, nn.Identity)


class PixelNormalization:
    """Forward pre-hook: ``(x - mean) / std`` on the network's input (``data.normalize=true``)."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        self.mean, self.std = float(mean), float(std)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return ((args[0] - self.mean) / self.std, *args[1:])


def close_matches(name: str, names: list[str]) -> str:
    """``', '.join`` of the known names closest to ``name`` (or the first few known names)."""
    found = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5) or names[:5]
    return ", ".join(found)


def refuse_variants(pool: str, padding: str, network: str) -> None:
    """Refuse a ``pool`` or ``padding`` variant of ``network``, which offers none, in one line."""
    if (pool, padding) != ("max", "zeros"):
        setting = f"pool={pool!r}" if pool != "max" else f"padding={padding!r}"
        raise ArgumentError(
            f"{setting} is not offered for {network}: the variants are offered for {VARIANT_FAMILIES} and the "
            f"built-in CNNs; use pool='max', padding='zeros'"
        )


def torchvision_names() -> list[str]:
    """The classification architectures of ``torchvision.models`` (no detection, segmentation, video)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """``(name, module)`` of the first ``nn.Conv2d`` in module order (None: there is none)."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _new_conv(conv: nn.Conv2d, in_channels: int, **changes) -> nn.Conv2d:
    """``conv`` with ``in_channels`` inputs (and ``changes``), initialised as torchvision's CNNs."""
    if conv.groups != 1:
        raise ArgumentError(f"in_channels={in_channels!r}: the first convolution is grouped ({conv.groups} groups)")
    kwargs = dict(
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    kwargs.update(changes)
    new = nn.Conv2d(in_channels, conv.out_channels, **kwargs)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def adapt_input_channels(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution ``in_channels`` inputs (a new one when it takes another number)."""
    found = first_conv(model)
    if found is None:
        raise ArgumentError(f"in_channels={in_channels!r}: {type(model).__name__} has no nn.Conv2d to take the images")
    name, conv = found
    if conv.in_channels != in_channels:
        model.set_submodule(name, _new_conv(conv, in_channels))


def is_resnet(model: nn.Module) -> bool:
    """A ResNet-like network: ``conv1``, ``maxpool``, ``layer1`` ... ``layer4`` and ``fc`` (torchvision, timm)."""
    return all(hasattr(model, a) for a in ("conv1", "maxpool", "layer1", "layer4", "fc"))


def use_small_input_stem(model: nn.Module, name: str) -> None:
    """The CIFAR stem: ``conv1`` becomes a 3x3 stride-1 convolution (padding 1), ``maxpool`` the identity."""
    if not is_resnet(model) or not isinstance(model.conv1, nn.Conv2d):
        raise ArgumentError(
            f"small_input=True is not available for name={name!r}: it replaces a ResNet's "
            f"conv1 and maxpool (resnet*, resnext*, wide_resnet*); use small_input=False"
        )
    conv = model.conv1
    model.conv1 = _new_conv(conv, conv.in_channels, kernel_size=3, stride=1, padding=1)
    model.maxpool = nn.Identity()


def _named(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module and n), None)


def _ends_in_linear(module: nn.Module) -> bool:
    last = list(module.modules())[-1]
    return isinstance(last, nn.Linear)


def heuristic_probe_layers(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """The documented fallback: every top-level child that computes (no activation, dropout, flatten,
    identity, auxiliary head), a ``features`` sequence child by child; the last child is the head,
    aliased ``logits`` when it ends in a linear layer, else the model's output is probed."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, _QUIET) or name.lower().startswith("aux"):
            continue
        if name == "features" and isinstance(child, nn.Sequential):
            names += [f"features.{n}" for n, _ in child.named_children()]
        else:
            names.append(name)
    if names and _ends_in_linear(model.get_submodule(names[-1])):
        return names, {"logits": names[-1]}
    return [*names, "output"], {}


def probe_layers(model: nn.Module, small_input: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(default probe points, aliases)``: the stem, each stage and the head (aliased ``logits``).

    ResNets: ``maxpool`` (``relu`` / ``act1`` with ``small_input``), ``layer1`` ... ``layer4``, the pooled
    features the head classifies (``avgpool``, timm's ``global_pool``) and ``fc``.
    VGGs: each max pool of ``features``, ``classifier``. timm: the modules of ``feature_info`` and the
    classifier. Anything else: ``heuristic_probe_layers``.
    """
    modules = dict(model.named_modules())
    if is_resnet(model):
        stem = "maxpool" if not small_input else ("relu" if "relu" in modules else "act1")
        pooled = next((n for n in ("avgpool", "global_pool") if n in modules), None)
        return [stem, "layer1", "layer2", "layer3", "layer4", *([pooled] if pooled else []), "fc"], {"logits": "fc"}
    if type(model).__name__ == "VGG":  # torchvision's: features (convolutions and max pools), classifier
        pools = [f"features.{n}" for n, m in model.features.named_children() if isinstance(m, nn.MaxPool2d)]
        return [*pools, "classifier"], {"logits": "classifier"}
    info = getattr(model, "feature_info", None)
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if info is not None and isinstance(head, nn.Module) and _named(model, head):
        stages = [str(f["module"]) for f in info if str(f.get("module", "")) in modules and f.get("module")]
        return [*dict.fromkeys(stages), _named(model, head)], {"logits": _named(model, head)}
    return heuristic_probe_layers(model)


def check_image_size(model: nn.Module, what: str, in_channels: int, image_size: int) -> None:
    """One forward pass (eval mode, no autograd, no random draws) on a blank ``image_size`` image; an
    architecture that cannot take it is refused in one line."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as err:  # any failure of the architecture itself on this size (torch raises many kinds)
        cause = " ".join(str(err).split())[:200]
        raise ArgumentError(
            f"{what} cannot take {in_channels}x{image_size}x{image_size} images ({type(err).__name__}: {cause}); "
            f"use an architecture for small images, e.g. name='resnet18' with small_input=True"
        ) from None
    finally:
        model.train(was_training)


def load_weights(model: nn.Module, weights: str, what: str) -> None:
    """Load the state_dict in the file ``weights`` into ``model`` (``torch.load(weights_only=True)``
    through ``read_checkpoint``); keep the random initial weights as ``model.untrained_state``."""
    from shiftprobe.checkpoints import fit_problems, read_checkpoint

    try:
        stored = read_checkpoint(weights, what="weights", opt_in=None).weights  # weights only, never unpickled
    except ShiftProbeError as err:  # its line starts weights=<path>
        raise ArgumentError(str(err)) from None
    problems = fit_problems(stored, model.state_dict())
    if problems:
        raise ArgumentError(
            f"weights={str(weights)!r} does not fit {what}: {problems}; give the weights of this "
            f"architecture with the same settings (in_channels, num_classes, small_input)"
        )
    model.untrained_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(stored)


def finish(
    model: nn.Module,
    what: str,
    layers: tuple,
    *,
    in_channels: int,
    image_size: int | None,
    normalize: bool,
    weights: str | None,
) -> nn.Module:
    """What every built network gets: its probe points and aliases (``layers``), the logits flag, the
    pixel normalisation, the image-size check and the weights."""
    model.default_probe_layers, model.layer_aliases = tuple(layers[0]), dict(layers[1])
    model.outputs_logits = True
    if normalize:
        model.register_forward_pre_hook(PixelNormalization())
    if image_size is not None:
        check_image_size(model, what, in_channels, image_size)
    if weights:
        load_weights(model, weights, what)
    return model


def torchvision_model(
    name: str = "resnet18",
    in_channels: int = 1,
    num_classes: int = 10,
    small_input: bool = False,
    pool: str = "max",
    padding: str = "zeros",
    blur_filter_size: int = 3,
    weights: str | None = None,
    normalize: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """A torchvision classification network, untrained, built for the data (see the module docstring).

    Parameters
    ----------
    name : str
        One of ``torchvision.models.list_models(module=torchvision.models)``, e.g. ``"resnet18"``.
    in_channels, num_classes : int
        Image channels and classes of the data.
    small_input : bool
        ResNets: the CIFAR stem (3x3 stride-1 ``conv1``, no max pool).
    pool, padding, blur_filter_size
        The variants of ``shiftprobe.models.variants`` (ResNets and VGGs): ``pool`` in max, blur, aps;
        ``padding`` in zeros, circular.
    weights : str, optional
        A state_dict file (``torch.save(model.state_dict(), path)``) or a train.py ``.ckpt``.
    normalize : bool
        ``(x - 0.1307) / 0.3081`` as the first step.
    image_size : int, optional
        Check that the network takes ``image_size`` x ``image_size`` images (one blank forward pass).
    """
    import torchvision

    names = torchvision_names()
    if name not in names:
        raise ArgumentError(
            f"name={name!r} is not a torchvision classification model; close matches: "
            f"{close_matches(name, names)} (all: torchvision.models.list_models(module=torchvision.models))"
        )
    check_variant(pool, padding, PADDINGS)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if not isinstance(model, (torchvision.models.ResNet, torchvision.models.VGG)):
        refuse_variants(pool, padding, f"name={name!r}")
    adapt_input_channels(model, in_channels)
    if small_input:
        use_small_input_stem(model, name)
    layers = probe_layers(model, small_input)
    apply_variants(model, pool, padding, blur_filter_size)
    what = f"name={name!r}"
    return finish(model, what, layers, in_channels=in_channels, image_size=image_size, normalize=normalize, weights=weights)


def timm_model(
    name: str = "resnet18",
    in_channels: int = 1,
    num_classes: int = 10,
    small_input: bool = False,
    pool: str = "max",
    padding: str = "zeros",
    weights: str | None = None,
    normalize: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """A timm classification network, untrained (``timm.create_model(name, pretrained=False, ...)``),
    built for the data; the keys as ``torchvision_model``'s. The ``pool`` / ``padding`` variants are
    not offered for timm models (only ``pool="max"``, ``padding="zeros"``: the network as built).
    Needs the optional extra ``shiftprobe[timm]``."""
    refuse_variants(pool, padding, "timm models")
    try:
        import timm
    except ImportError:
        raise ValueError("timm_model needs the timm package: pip install 'shiftprobe[timm]' (or pip install timm)") from None
    if not timm.is_model(name):
        names = timm.list_models()
        raise ArgumentError(
            f"name={name!r} is not a timm model; close matches: {close_matches(name, names)} (all: timm.list_models())"
        )
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=num_classes)
    if small_input:
        use_small_input_stem(model, name)
    what, layers = f"name={name!r}", probe_layers(model, small_input)
    return finish(model, what, layers, in_channels=in_channels, image_size=image_size, normalize=normalize, weights=weights)
