"""Architecture variants made by editing a built network in place (``apply_variants``): ``pool="blur"|"aps"``
(every strided convolution or pool at stride 1, then a ``BlurPool2d`` or ``APSDownsample2d``; the
state_dict stays the original's) and ``padding="circular"``. Only ``nn.Conv2d``, ``MaxPool2d``, ``AvgPool2d``
and ``MaxPool2x2`` are rewritten; other strided or padded layers are refused (docs/models.md)."""

from __future__ import annotations

import torch
from torch import nn

from shiftprobe.errors import ArgumentError
from shiftprobe.models.aps import APSDownsample2d, PolyphaseChoice
from shiftprobe.models.blurpool import BlurPool2d
from shiftprobe.models.maxpool import MaxPool2x2

POOLS = ("max", "blur", "aps")
#: names of the skip-path child of a residual block (torchvision, timm: downsample; SmallResNet: shortcut)
SKIP_NAMES = ("downsample", "shortcut")
#: the layer types ``apply_variants`` rewrites (exact types: a subclass may pad or stride in its own way)
_CONV, _POOLS = (nn.Conv2d,), (nn.MaxPool2d, nn.AvgPool2d)


class DownsampledConv2d(nn.Conv2d):
    """A convolution at stride 1, then ``down`` (a ``BlurPool2d`` or ``APSDownsample2d``): a strided
    convolution's variant, with the same parameters under the same state_dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(super().forward(x))


def _pairs(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def is_strided(module: nn.Module) -> bool:
    """True for a convolution or pool that down-samples (a stride above 1 on either axis)."""
    if isinstance(module, (MaxPool2x2, *_CONV, *_POOLS)) and not isinstance(module, DownsampledConv2d):
        stride = module.stride if module.stride is not None else module.kernel_size
        return max(_pairs(stride)) > 1
    return False


def same_padding(kernel_size, dilation=1) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` that keeps the map size at stride 1 (more after than before when
    the kernel is even, as ``padding="same"``)."""
    (ky, kx), (dy, dx) = _pairs(kernel_size), _pairs(dilation)
    ty, tx = dy * (ky - 1), dx * (kx - 1)
    return tx // 2, tx - tx // 2, ty // 2, ty - ty // 2


def _stride_one_conv(conv: nn.Conv2d, down: nn.Module, circular: bool) -> DownsampledConv2d:
    """``conv`` at stride 1 (its own parameters, no new random draws) followed by ``down``."""
    new = torch.nn.utils.skip_init(
        DownsampledConv2d,
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=1,
        padding="same" if circular else conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode="circular" if circular else conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    new.weight = conv.weight
    new.bias = conv.bias
    new.down = down
    return new


def _stride_one_pool(pool: nn.Module, down: nn.Module, circular: bool) -> nn.Sequential:
    """``pool`` at stride 1 followed by ``down`` (circular: a circular "same" padding first)."""
    kernel, dilation = 2, 1
    if isinstance(pool, MaxPool2x2):
        stride_one = MaxPool2x2(1)
    else:
        kernel, dilation = pool.kernel_size, getattr(pool, "dilation", 1)
        kwargs = {"padding": 0 if circular else pool.padding, "ceil_mode": False}
        if isinstance(pool, nn.MaxPool2d):
            stride_one = nn.MaxPool2d(kernel, stride=1, dilation=dilation, **kwargs)
        else:
            stride_one = nn.AvgPool2d(kernel, stride=1, count_include_pad=pool.count_include_pad,
                                      divisor_override=pool.divisor_override, **kwargs)
    if not circular:
        return nn.Sequential(stride_one, down)
    return nn.Sequential(nn.CircularPad2d(same_padding(kernel, dilation)), stride_one, down)


def shared_choices(model: nn.Module) -> dict[int, PolyphaseChoice]:
    """``id(layer) -> PolyphaseChoice`` for the two strided layers of every residual block whose main
    path and skip path (a child named in ``SKIP_NAMES``) each down-sample once (reset by the block's hook)."""
    out: dict[int, PolyphaseChoice] = {}
    for block in model.modules():
        children = dict(block.named_children())
        skips = [child for name, child in children.items() if name in SKIP_NAMES]
        if len(skips) != 1:
            continue
        skip = [m for m in skips[0].modules() if is_strided(m)]
        main = [m for name, c in children.items() if name not in SKIP_NAMES for m in c.modules() if is_strided(m)]
        if len(skip) == 1 and len(main) == 1:
            choice = PolyphaseChoice()
            block.register_forward_pre_hook(choice.reset)
            out[id(skip[0])] = out[id(main[0])] = choice
    return out


def check_editable(model: nn.Module, pool: str, padding: str) -> None:
    """Refuse a network with a strided or padded layer ``apply_variants`` would not rewrite."""
    for name, module in model.named_modules():
        kind = type(module)
        known = kind in (*_CONV, *_POOLS, DownsampledConv2d, MaxPool2x2)
        if isinstance(module, (*_CONV, *_POOLS)) and not known:
            setting = f"pool={pool!r}" if pool != "max" else f"padding={padding!r}"
            raise ArgumentError(
                f"{setting} cannot rewrite {name!r} ({kind.__name__}): only torch.nn.Conv2d, MaxPool2d and "
                f"AvgPool2d layers are; use the built-in CNNs or torchvision's ResNets and VGGs"
            )


def _replace(model: nn.Module, edit) -> None:
    """Put ``edit(module)`` in place of every module of ``model`` (the same object everywhere it is used)."""
    done: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in done:
                done[id(child)] = edit(child)
            if done[id(child)] is not child:
                setattr(parent, name, done[id(child)])


def apply_variants(model: nn.Module, pool: str = "max", padding: str = "zeros", blur_filter_size: int = 3) -> nn.Module:
    """Rewrite ``model`` in place for ``pool`` (max: as built) and ``padding`` (circular: every padding wraps
    around; anything else: as built), keeping its weights and drawing no random numbers; return it."""
    check_choice("pool", pool, POOLS)
    circular = padding == "circular"
    if pool == "max" and not circular:
        return model
    check_editable(model, pool, padding)
    if pool != "max":
        choices = shared_choices(model) if pool == "aps" else {}

        def strided(module: nn.Module) -> nn.Module:
            if not is_strided(module):
                return module
            stride = module.stride if module.stride is not None else module.kernel_size
            if pool == "blur":
                down = BlurPool2d(None, blur_filter_size, _pairs(stride))
            else:
                down = APSDownsample2d(stride, choices.get(id(module)))
            if isinstance(module, nn.Conv2d):
                return _stride_one_conv(module, down, circular)
            return _stride_one_pool(module, down, circular)

        _replace(model, strided)
    if circular:
        _replace(model, _circular_padding)
    return model


def _circular_padding(module: nn.Module) -> nn.Module:
    """``module`` padding circularly: a padded convolution in place; a padded pool as a ``CircularPad2d``
    followed by the pool without padding."""
    if isinstance(module, nn.Conv2d):
        if module.padding == "same" or (module.padding != "valid" and any(_pairs(module.padding))):
            module.padding_mode = "circular"
        return module
    if type(module) not in _POOLS or not any(_pairs(module.padding)):
        return module
    py, px = _pairs(module.padding)
    module.padding = 0
    return nn.Sequential(nn.CircularPad2d((px, px, py, py)), module)


def check_variant(pool: str, padding: str, paddings: tuple[str, ...]) -> None:
    """Refuse a ``pool`` or ``padding`` a network does not offer (``paddings``: its own list), in one line."""
    check_choice("pool", pool, POOLS)
    check_choice("padding", padding, paddings)


def check_choice(name: str, value, choices: tuple) -> None:
    """Refuse an argument ``name`` that is not one of ``choices``, in one line naming it."""
    if value not in choices:
        raise ArgumentError(f"{name}={value!r} is not known; use one of {list(choices)}")


def circular_same(padding: str, kernel_size: int) -> dict:
    """The ``nn.Conv2d`` keywords of a network built with unpadded convolutions: with
    ``padding="circular"``, circular padding that keeps the map size (odd ``kernel_size``); else none."""
    return {"padding": kernel_size // 2, "padding_mode": "circular"} if padding == "circular" else {}
