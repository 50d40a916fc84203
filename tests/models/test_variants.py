"""The pool / padding variants (``shiftprobe.models.variants``, ``shiftprobe.models.aps``) and the
positive control: circular padding + APS at every down-sampling + a global-pooling head is exactly
invariant to every circular shift, trained or not; the same network with max-pool down-sampling is not.

The references here import nothing from the code they check: APS by slicing the polyphase components
one by one, the default networks as plain ``nn.Conv2d`` / ``nn.Linear`` layers drawn in the same order,
the invariance by ``torch.roll`` and a direct comparison of the outputs."""

import copy
import functools
import io
import json
import pickle

import hydra
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, test_overrides
from reference import one_thread
from torch import nn

import shiftprobe
from shiftprobe.errors import ShiftProbeError
from shiftprobe.models import AllConvCNN, GapCNN, LabCNN, SmallResNet, apply_variants
from shiftprobe.models.aps import APSDownsample2d, PolyphaseChoice
from shiftprobe.models.blurpool import BlurPool2d
from shiftprobe.models.crop_windows import CropWindowModel
from shiftprobe.models.variants import DownsampledConv2d
from shiftprobe.probe.geometry import pads_circularly


# -- APS against a reference ----------------------------------------------------------------------------
def reference_aps(x: torch.Tensor, s: int) -> torch.Tensor:
    """Per image: the s x s polyphase component x[:, i::s, j::s] of largest l2 norm (float64), first on a tie."""
    out = []
    for img in x:
        parts = [img[:, i::s, j::s] for i in range(s) for j in range(s)]
        norms = [float((p.detach().double() ** 2).sum()) for p in parts]
        out.append(parts[norms.index(max(norms))])
    return torch.stack(out)


@pytest.mark.parametrize("stride", [2, 3])
def test_aps_keeps_the_component_of_largest_norm(stride):
    torch.manual_seed(0)
    x = torch.randn(5, 3, 6 * stride, 4 * stride)
    assert torch.equal(APSDownsample2d(stride)(x), reference_aps(x, stride))


def test_aps_breaks_a_tie_at_the_lowest_index():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0::2, 1::2] = 1.0  # components 1 (row phase 0, column phase 1) and 2 tie, the others are 0
    x[0, 0, 1::2, 0::2] = -1.0
    out = APSDownsample2d(2)(x)
    assert torch.equal(out[0], x[0, :, 0::2, 1::2]) and torch.equal(out[1], x[1, :, 0::2, 0::2])


def test_aps_pads_an_odd_map_circularly_to_ceil_size():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 5, 7)
    padded = torch.cat([x, x[:, :, :1]], dim=2)
    padded = torch.cat([padded, padded[:, :, :, :1]], dim=3)
    out = APSDownsample2d(2)(x)
    assert out.shape == (3, 2, 3, 4) and torch.equal(out, reference_aps(padded, 2))


def test_aps_of_a_circular_shift_is_a_circular_shift_of_aps():
    """Bit for bit: APS only selects values, and a roll permutes the components and their norms."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, 8, 8)
    aps = APSDownsample2d(2)
    base = aps(x)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            out = aps(torch.roll(x, (dy, dx), dims=(-2, -1)))
            for b in range(4):
                rolls = [torch.roll(base[b], (my, mx), dims=(-2, -1)) for my in range(4) for mx in range(4)]
                assert any(torch.equal(out[b], r) for r in rolls), (dy, dx, b)


def test_a_shared_choice_makes_the_second_layer_keep_the_first_layers_component():
    choice = PolyphaseChoice()
    main, skip = APSDownsample2d(2, choice), APSDownsample2d(2, choice)
    x = torch.zeros(1, 1, 4, 4)
    x[..., 1::2, 1::2] = 5.0  # the main path's largest component: 3
    y = torch.zeros(1, 1, 4, 4)
    y[..., 0::2, 0::2] = 7.0  # the skip path's own largest would be 0
    choice.reset()
    main(x)
    assert torch.equal(skip(y), y[..., 1::2, 1::2])
    choice.reset()  # the next call of the block chooses afresh
    assert torch.equal(skip(y), y[..., 0::2, 0::2])


def test_residual_blocks_share_one_choice_and_copies_keep_their_own():
    net = SmallResNet(pool="aps")
    for name in ("layer2", "layer3"):
        block = net.get_submodule(name)
        assert isinstance(block.conv1, DownsampledConv2d) and isinstance(block.shortcut[0], DownsampledConv2d)
        assert block.conv1.down.choice is block.shortcut[0].down.choice is not None
        assert len(block._forward_pre_hooks) == 1
    assert net.layer2.conv1.down.choice is not net.layer3.conv1.down.choice
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        choice = other.layer2.conv1.down.choice
        assert choice is other.layer2.shortcut[0].down.choice and choice is not net.layer2.conv1.down.choice
        assert next(iter(other.layer2._forward_pre_hooks.values())).__self__ is choice
        x = torch.rand(2, 1, 16, 16)
        torch.testing.assert_close(other.eval()(x)[0], net.eval()(x)[0], rtol=0, atol=0)


# -- apply_variants: what it rewrites ---------------------------------------------------------------------
def small_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
    )


@pytest.mark.parametrize("pool,padding", [("blur", "zeros"), ("aps", "zeros"), ("aps", "circular"), ("max", "circular")])
def test_apply_variants_keeps_the_weights_and_draws_no_random_numbers(pool, padding):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    apply_variants(net, pool, padding)
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    # the map sizes: as built (9 -> 5 -> 3 -> 1, 16 -> 8 -> 4 -> 2), except that with circular padding
    # every stride-1 layer made by blur / APS keeps the size, so each down-sampling rounds up (9 -> 5 -> 3 -> 2)
    rounds_up = padding == "circular" and pool != "max"
    for side, last in ((9, 2 if rounds_up else 1), (16, 2)):
        assert net(torch.rand(1, 2, side, side)).shape == (1, 4, last, last)
        assert small_net()(torch.rand(1, 2, side, side)).shape[-1] == (1 if side == 9 else 2)


def test_apply_variants_structure():
    net = apply_variants(small_net(), "blur", "circular")
    assert isinstance(net[0], DownsampledConv2d) and net[0].stride == (1, 1) and net[0].padding_mode == "circular"
    assert isinstance(net[0].down, BlurPool2d) and net[0].down.channels is None
    assert [type(m) for m in net[1]] == [nn.CircularPad2d, nn.MaxPool2d, BlurPool2d] and net[1][1].stride == 1
    assert [type(m) for m in net[2]] == [nn.CircularPad2d, nn.AvgPool2d, BlurPool2d]  # "same": pads (0, 1)
    assert net[2][0].padding == (0, 1, 0, 1) and [type(m) for m in apply_variants(small_net(), "aps")[2]] == [
        nn.AvgPool2d, APSDownsample2d]  # zero padding: the 2x2 pool at stride 1 as it was, unpadded
    assert net[3].padding_mode == "circular"


def test_a_strided_convolution_becomes_the_stride_one_convolution_then_the_down_sampling():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.rand(2, 3, 10, 10)
    net = apply_variants(nn.Sequential(copy.deepcopy(conv)), "aps")
    conv.stride = (1, 1)
    torch.testing.assert_close(net(x), reference_aps(conv(x), 2), rtol=0, atol=0)


def test_apply_variants_refuses_a_layer_it_cannot_rewrite():
    class OwnConv(nn.Conv2d):
        pass

    net = nn.Sequential(OwnConv(1, 2, 3, stride=2))
    with pytest.raises(ValueError, match=r"^pool='aps' cannot rewrite '0' \(OwnConv\)") as err:
        apply_variants(net, "aps")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^pool='avg' is not known"):
        apply_variants(small_net(), "avg")


# -- the defaults are today's networks -------------------------------------------------------------------
def reference_weights(layers) -> list[torch.Tensor]:
    """The parameters of plain layers made one after another with seed 0 (the built-in CNNs' order)."""
    torch.manual_seed(0)
    return [p for make in layers for p in make().parameters()]


REFERENCES = {
    "gap": (GapCNN, [lambda: nn.Conv2d(1, 10, 5), lambda: nn.Conv2d(10, 20, 5), lambda: nn.Linear(20, 50),
                     lambda: nn.Linear(50, 10)]),
    "allconv": (AllConvCNN, [lambda: nn.Conv2d(1, 10, 5), lambda: nn.Conv2d(10, 10, 2, stride=2),
                             lambda: nn.Conv2d(10, 20, 5), lambda: nn.Conv2d(20, 20, 2, stride=2),
                             lambda: nn.Linear(320, 50), lambda: nn.Linear(50, 10)]),
}


def resnet_reference() -> list:
    """SmallResNet's convolutions in construction order (BatchNorm draws nothing), then fc."""
    conv = functools.partial(nn.Conv2d, bias=False)
    blocks = []
    for c_in, c_out, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        blocks += [lambda a=c_in, b=c_out, s=stride: conv(a, b, 3, stride=s, padding=1),
                   lambda b=c_out: conv(b, b, 3, padding=1)]
        if stride != 1:
            blocks.append(lambda a=c_in, b=c_out: conv(a, b, 1, stride=2))
    return [lambda: conv(1, 16, 3, padding=1), *blocks, lambda: nn.Linear(64, 10)]


@pytest.mark.parametrize("name", ["gap", "allconv", "resnet"])
def test_the_default_variant_is_todays_network(name, mnist_root, tmp_path):
    """Same seed, same weights in the same order; the config's defaults build it; the crop fast path stays."""
    cls, layers = REFERENCES.get(name, (SmallResNet, resnet_reference()))
    expected = reference_weights(layers)
    torch.manual_seed(0)
    net = cls()
    weights = [v for k, v in net.state_dict().items() if "bn" not in k and "shortcut.1" not in k and "stem.1" not in k]
    assert len(weights) == len(expected) and all(torch.equal(a, b) for a, b in zip(weights, expected, strict=True))
    assert not any(isinstance(m, (DownsampledConv2d, APSDownsample2d, BlurPool2d, nn.CircularPad2d)) for m in net.modules())
    assert (isinstance(net, CropWindowModel) and net.crop_windows() is not None) is (name != "resnet")
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"model={name}"], tmp_path)
    torch.manual_seed(0)
    built = hydra.utils.instantiate(cfg.model)
    assert type(built) is cls and (built.pool, built.padding) == ("max", "zeros" if name == "resnet" else "valid")
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), net.state_dict().values(), strict=True))


@pytest.mark.parametrize("option,kwargs", [("blurpool", {"pool": "blur"}), ("circular", {"padding": "circular"})])
def test_the_named_lab_variants_are_unchanged(option, kwargs, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"model={option}"], tmp_path)
    torch.manual_seed(0)
    built = hydra.utils.instantiate(cfg.model)
    torch.manual_seed(0)
    net = LabCNN(**kwargs)
    assert list(built.state_dict()) == list(net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), net.state_dict().values(), strict=True))
    assert ("pool1.1.kernel" in net.state_dict()) is (option == "blurpool")  # the lab's blur keeps its filter


@pytest.mark.parametrize(
    "net",
    [GapCNN(pool="aps"), GapCNN(pool="blur"), GapCNN(padding="circular"), AllConvCNN(pool="aps"),
     AllConvCNN(padding="circular"), LabCNN(pool="aps")],
    ids=["gap-aps", "gap-blur", "gap-circular", "allconv-aps", "allconv-circular", "lab-aps"],
)
def test_a_variant_has_no_crop_fast_path(net):
    """The fast path computes windows of one padded pass: wrong for APS (its choice depends on the whole
    map), circular padding and a blur inside the phases. The engine then runs every shifted image."""
    assert net.crop_windows() is None
    images = torch.rand(3, 1, 28, 28)
    res = shiftprobe.measure(net.eval(), images, layers=["logits"], transform=shiftprobe.Translation(max_shift=1))
    assert res["families"]["translation"]["fast_path"] is False


@pytest.mark.parametrize("cls", [GapCNN, AllConvCNN, SmallResNet, LabCNN])
@pytest.mark.parametrize("pool", ["max", "blur", "aps"])
@pytest.mark.parametrize("circular", [False, True])
def test_every_built_in_cnn_builds_every_variant(cls, pool, circular):
    padding = "circular" if circular else ("zeros" if cls is SmallResNet else "valid")
    net = cls(pool=pool, padding=padding).eval()
    assert (net.pool, net.padding) == (pool, padding)
    log_probs = net(torch.rand(2, 1, 28, 28))[0]
    assert log_probs.shape == (2, 10) and torch.isfinite(log_probs).all()


@pytest.mark.parametrize("size", [28, 30, 31])
@pytest.mark.parametrize("pool", ["max", "blur", "aps"])
def test_allconv_sizes_its_head_for_every_variant(size, pool):
    for padding in ("valid", "circular"):
        net = AllConvCNN(image_size=size, pool=pool, padding=padding).eval()
        assert net(torch.rand(1, 1, size, size))[0].shape == (1, 10)


def test_bad_variant_names_are_one_line_errors():
    for make, match in [(lambda: GapCNN(pool="avg"), "^pool='avg' is not known"),
                        (lambda: GapCNN(padding="zeros"), r"^padding='zeros' is not known; use one of \['valid'"),
                        (lambda: SmallResNet(padding="valid"), r"use one of \['zeros', 'circular'\]")]:
        with pytest.raises(ValueError, match=match):
            make()


def test_circular_pad_layers_count_as_circular_padding():
    """The engine's geometry treats the circular variants' ``CircularPad2d`` as wrap-around padding."""
    assert pads_circularly(GapCNN(pool="aps", padding="circular"))
    assert pads_circularly(LabCNN(pool="aps", padding="circular"))
    assert not pads_circularly(GapCNN(pool="blur", padding="circular"))  # the blur pads by reflection


# -- the positive control ---------------------------------------------------------------------------------
def first(out) -> torch.Tensor:
    """A network's first output (the built-in CNNs return a triple, torchvision networks the logits)."""
    return out if isinstance(out, torch.Tensor) else out[0]


def sgd_steps(net: nn.Module, channels: int, side: int, steps: int = 3) -> nn.Module:
    """A few SGD steps on random images and labels (the weights move away from their initial values)."""
    torch.manual_seed(5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    with one_thread():
        for _ in range(steps):
            loss = F.cross_entropy(first(net(torch.rand(8, channels, side, side))), torch.randint(0, 10, (8,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def rolled_outputs(net: nn.Module, x: torch.Tensor, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), [f(roll(x, s)) for every shift s])``: the brute-force check, no shiftprobe code."""
    with torch.no_grad(), one_thread():
        base = first(net(x))
        shifts = range(-max_shift, max_shift + 1)
        rolled = torch.stack([first(net(torch.roll(x, (dy, dx), dims=(-2, -1)))) for dy in shifts for dx in shifts])
    return base, rolled


def exactly_invariant(section: dict, layer: str) -> bool:
    """Consistency 1 (where measured) and, at every shift and in the summary, a distance to the unshifted
    output within the dtype's rounding: ``rel`` (distance / norm) below ``precision.exact_tol`` (float32:
    1e-5), the test behind results.md's "exactly invariant". Not the invariance score: it divides that
    distance by the distance between unrelated images, which is tiny where a network barely separates
    its inputs (an untrained GAP network: logits alike to 1e-3), so rounding alone moves it by 1e-4."""
    tol = section["precision"]["exact_tol"]
    blocks = [section["summary"][layer]] + [s[layer] for s in section["groups"]["param"]]
    return all(b.get("consistency", 1.0) == 1.0 and b["rel"] < tol for b in blocks)


def assert_exactly_invariant(res, max_shift: int) -> None:
    """``exactly_invariant`` for the logits over the whole grid of shifts."""
    section = res["families"]["translation"]
    assert len(section["groups"]["param"]) == (2 * max_shift + 1) ** 2
    assert section["precision"] == {"dtype": "float32", "exact_tol": 1e-5}
    assert exactly_invariant(section, "logits")


@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32)])
@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_positive_control_gap_aps_circular_is_exactly_invariant_to_circular_shifts(channels, side, trained):
    torch.manual_seed(0)
    net = GapCNN(in_channels=channels, pool="aps", padding="circular")
    net = sgd_steps(net, channels, side) if trained else net.eval()
    x = torch.rand(3, channels, side, side)
    base, rolled = rolled_outputs(net, x, 3)
    assert (rolled - base).abs().max() <= 1e-5 * base.abs().max()
    assert torch.equal(rolled.argmax(-1), base.argmax(-1).expand_as(rolled.argmax(-1)))
    res = shiftprobe.measure(net, x, layers=["gap", "logits"], transform=shiftprobe.Translation(max_shift=3, mode="roll"))
    assert_exactly_invariant(res, 3)
    assert exactly_invariant(res["families"]["translation"], "gap")


def test_positive_control_is_exact_to_float64_precision():
    """In float64 the rolled outputs agree to 1e-12: the only differences are the order of float sums."""
    torch.manual_seed(0)
    net = sgd_steps(GapCNN(pool="aps", padding="circular"), 1, 28).double()
    base, rolled = rolled_outputs(net, torch.rand(3, 1, 28, 28, dtype=torch.float64), 2)
    assert (rolled - base).abs().max() <= 1e-12


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_the_same_network_with_max_pool_down_sampling_is_not_invariant(trained):
    torch.manual_seed(0)
    net = GapCNN(pool="max", padding="circular")
    net = sgd_steps(net, 1, 28) if trained else net.eval()
    x = torch.rand(3, 1, 28, 28)
    base, rolled = rolled_outputs(net, x, 3)
    assert (rolled - base).abs().max() > 1e-4 * base.abs().max()  # float32 error: about 1e-7 of it
    res = shiftprobe.measure(net, x, layers=["logits"], transform=shiftprobe.Translation(max_shift=3, mode="roll"))
    logits = res.summary["logits"]
    assert logits["consistency"] < 1.0 or logits["invariance_score"] < 1.0 - 1e-3


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_positive_control_torchvision_resnet18(trained):
    """resnet18 with the CIFAR stem, APS at its three down-samplings (main and skip paths sharing the
    choice) and circular padding, on 3x8x8 images (a multiple of 8: every APS sees an even map)."""
    torch.manual_seed(0)
    net = shiftprobe.torchvision_model("resnet18", in_channels=3, small_input=True, pool="aps", padding="circular")
    net = sgd_steps(net, 3, 8, steps=2) if trained else net.eval()
    x = torch.rand(2, 3, 8, 8)
    base, rolled = rolled_outputs(net, x, 2)
    assert (rolled - base).abs().max() <= 1e-5 * base.abs().max()
    res = shiftprobe.measure(net, x, layers=["logits"], transform=shiftprobe.Translation(max_shift=1, mode="roll"))
    assert_exactly_invariant(res, 1)
    plain = shiftprobe.torchvision_model("resnet18", in_channels=3, small_input=True, padding="circular").eval()
    base, rolled = rolled_outputs(plain, x, 1)
    assert (rolled - base).abs().max() > 1e-4 * base.abs().max()  # strided down-sampling: not invariant


def io_roundtrip(net: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_variants_load_the_plain_networks_weights():
    """The variants keep the state_dict keys: weights of the plain network load into every variant."""
    torch.manual_seed(0)
    state = io_roundtrip(SmallResNet())
    for pool in ("blur", "aps"):
        net = SmallResNet(pool=pool, padding="circular")
        net.load_state_dict(state)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["aps", "max"])
def test_train_py_reports_the_positive_control(pool, mnist_root, tmp_path):
    """``python train.py model=gap model.pool=aps model.padding=circular shift.mode=roll``: results.json
    holds logits consistency 1 and invariance score 1 for the trained and the untrained network; with
    max-pool down-sampling the invariance score is clearly below 1 and results.md does not call it exact."""
    from shiftprobe.app.train import train

    callbacks = "callbacks=[model_checkpoint,shift_probe]"
    overrides = [o if not o.startswith("callbacks=") else callbacks for o in test_overrides(mnist_root, tmp_path)]
    settings = ["model=gap", f"model.pool={pool}", "model.padding=circular", "shift.mode=roll", "shift=small",
                "+trainer.limit_train_batches=5", "callbacks.shift_probe.max_images=8",
                "callbacks.shift_probe.figures=false", "callbacks.shift_probe.progress=false"]
    train(compose_config("train", [*overrides, *settings], tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())["families"]["translation"]
    for network in (results, results["untrained"]):
        assert exactly_invariant(network, "logits") is (pool == "aps")
        if pool == "max":
            assert network["summary"]["logits"]["invariance_score"] < 1.0 - 1e-3
    exact = "**logits** is exactly invariant" in (tmp_path / "results.md").read_text()
    assert exact is (pool == "aps")


def test_a_checkpoint_written_before_the_variant_keys_still_fits():
    """A GapCNN checkpoint whose recorded settings have no pool / padding / blur_filter_size (written
    before they existed) was built at their defaults: resuming it with the defaults is no difference,
    with another pool it is one line naming the key."""
    from shiftprobe.app.checkpoint_compat import check_checkpoint_fits
    from shiftprobe.lit.module import ShiftProbeModule

    module = ShiftProbeModule(net=GapCNN())
    old = {"_target_": "shiftprobe.models.GapCNN", "in_channels": 1, "normalize": False}
    checkpoint = {"hyper_parameters": {"config": {"model": old}}, "state_dict": module.state_dict()}
    run = {**old, "pool": "max", "padding": "valid", "blur_filter_size": 3}
    check_checkpoint_fits(checkpoint, "old.ckpt", run, module, "resume")
    with pytest.raises(ShiftProbeError, match="model.pool is 'max' in the checkpoint but 'aps' in this run"):
        check_checkpoint_fits(checkpoint, "old.ckpt", {**run, "pool": "aps"}, module, "resume")
