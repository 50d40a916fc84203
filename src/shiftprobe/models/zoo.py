"""Any torchvision or timm classification network, untrained, built for the data (``model=torchvision``,
``model=timm``): input channels, the CIFAR stem (``small_input``), the ``pool`` / ``padding`` variants,
default probe points, pixel normalisation, an image-size check and loaded weights (docs/models.md).
The network returns logits (``outputs_logits = True``)."""

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
    """Forward pre-hook: ``(x - 0.1307) / 0.3081`` on the network's input (``data.normalize=true``)."""

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return ((args[0] - MNIST_MEAN) / MNIST_STD, *args[1:])


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
            f"built-in CNNs; leave pool and padding at their defaults (max, zeros)"
        )


def _new_conv(conv: nn.Conv2d, in_channels: int, **changes) -> nn.Conv2d:
    """``conv`` with ``in_channels`` inputs (and ``changes``), initialised as torchvision's CNNs."""
    if conv.groups != 1:
        raise ArgumentError(f"in_channels={in_channels!r}: the first convolution is grouped ({conv.groups} groups)")
    kwargs = {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
              "dilation": conv.dilation, "bias": conv.bias is not None, "padding_mode": conv.padding_mode,
              **changes}
    new = nn.Conv2d(in_channels, conv.out_channels, **kwargs)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def adapt_input_channels(model: nn.Module, in_channels: int) -> None:
    """Give the first ``nn.Conv2d`` in module order ``in_channels`` inputs (a new one if it takes others)."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
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
    if names and isinstance(list(model.get_submodule(names[-1]).modules())[-1], nn.Linear):
        return names, {"logits": names[-1]}
    return [*names, "output"], {}


def probe_layers(model: nn.Module, small_input: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(default probe points, aliases)``: the stem, each stage and the head (aliased ``logits``), per
    architecture (the table in docs/models.md)."""
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
    head_name = next((n for n, m in modules.items() if m is head and n), None)
    if info is not None and isinstance(head, nn.Module) and head_name:
        stages = [str(f["module"]) for f in info if str(f.get("module", "")) in modules and f.get("module")]
        return [*dict.fromkeys(stages), head_name], {"logits": head_name}
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
    name: str,
    small_input: bool,
    variants: tuple = ("max", "zeros", 3),
    *,
    in_channels: int,
    image_size: int | None,
    normalize: bool,
    weights: str | None,
) -> nn.Module:
    """What every built network gets: the CIFAR stem (``small_input``), its probe points and aliases, the
    ``(pool, padding, blur_filter_size)`` variants, the logits flag, the pixel normalisation, the
    image-size check and the weights."""
    what = f"name={name!r}"
    if small_input:
        use_small_input_stem(model, name)
    layers, aliases = probe_layers(model, small_input)
    model.default_probe_layers, model.layer_aliases = tuple(layers), dict(aliases)
    apply_variants(model, *variants)
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
    """``torchvision.models.get_model(name, weights=None, num_classes=num_classes)`` for the data: ``name``
    one of ``torchvision.models.list_models(module=torchvision.models)``; ``weights`` a state_dict file or a
    train.py ``.ckpt``; ``image_size``: check the network takes such images (one blank forward pass)."""
    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
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
    return finish(model, name, small_input, (pool, padding, blur_filter_size), in_channels=in_channels,
                  image_size=image_size, normalize=normalize, weights=weights)


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
    """``timm.create_model(name, pretrained=False, ...)`` for the data, the keys as ``torchvision_model``'s
    (only ``pool="max"``, ``padding="zeros"``); needs the optional extra ``shiftprobe[timm]``."""
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
    return finish(model, name, small_input, in_channels=in_channels, image_size=image_size,
                  normalize=normalize, weights=weights)
