"""The group-pooled controls (issue 10, "Positive and negative controls"): ``RotPooledCNN`` (model=rot_pool)
and ``FlipPooledCNN`` (model=flip_pool). Their logits are invariant by construction; the lab CNN inside
them is not equivariant, and the probe points show the untransformed copy's layers."""

import hydra
import pytest
import torch
from conftest import compose_config
from tolerances import assert_close_dtype

import shiftprobe
from shiftprobe.app.config_checks import validate_config
from shiftprobe.models import FlipPooledCNN, LabCNN, RotPooledCNN
from shiftprobe.models.crop_windows import CropWindowModel
from shiftprobe.models.pooled import RECEPTIVE_FIELDS
from shiftprobe.probe.capture import LayerCapture, resolve_layers

INVARIANT_TOL = 1e-5  # float32: the copies are permuted, only the order of the float sum changes
NOT_EQUIVARIANT = 1e-2

ROT90 = {k: (lambda x, k=k: torch.rot90(x, k, dims=(-2, -1))) for k in (1, 2, 3)}
FLIPS = {"horizontal": lambda x: x.flip(-1), "vertical": lambda x: x.flip(-2), "both": lambda x: x.flip(-2, -1)}
CASES = [(RotPooledCNN, name, t) for name, t in ROT90.items()] + [(FlipPooledCNN, n, t) for n, t in FLIPS.items()]
IDS = [f"{cls.__name__}-{name}" for cls, name, _ in CASES]
INNER = ["conv1", "pool1", "conv2", "pool2", "fc1"]


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 28, 28, generator=g)


def build(cls, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(**kw).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def capture(net, x, layers):
    with torch.no_grad(), LayerCapture(net, resolve_layers(net, layers)) as cap:
        return cap.run(x)


@pytest.mark.parametrize("cls,name,t", CASES, ids=IDS)
def test_logits_are_invariant_to_the_group(cls, name, t, x):
    net = build(cls)
    with torch.no_grad():
        log_probs, _, _ = net(x)
        moved, _, _ = net(t(x))
    got = capture(net, t(x), ["logits"])["logits"]
    ref = capture(net, x, ["logits"])["logits"]
    assert (got - ref).abs().max().item() < INVARIANT_TOL
    assert (moved - log_probs).abs().max().item() < INVARIANT_TOL
    # the transformation does change the input (the test could fail): the inner layers see it
    assert relative(capture(net, t(x), ["fc1"])["fc1"], capture(net, x, ["fc1"])["fc1"]) > NOT_EQUIVARIANT


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot_pool_conv1_is_not_rotation_equivariant(k, x):
    """rot90(f(x)) against f(rot90 x) for the inner conv probe points: the lab CNN inside is a plain CNN."""
    net = build(RotPooledCNN)
    plain = capture(net, x, ["conv1", "conv2"])
    turned = capture(net, torch.rot90(x, k, dims=(-2, -1)), ["conv1", "conv2"])
    for layer in ("conv1", "conv2"):
        assert relative(turned[layer], torch.rot90(plain[layer], k, dims=(-2, -1))) > NOT_EQUIVARIANT, layer


def test_flip_pool_conv1_is_not_flip_equivariant(x):
    net = build(FlipPooledCNN)
    plain = capture(net, x, ["conv1"])["conv1"]
    flipped = capture(net, x.flip(-1), ["conv1"])["conv1"]
    assert relative(flipped, plain.flip(-1)) > NOT_EQUIVARIANT


@pytest.mark.parametrize("cls", [RotPooledCNN, FlipPooledCNN])
def test_forward_contract_and_inner_probe_points_are_the_untransformed_copy(cls, x):
    """``(log_probs, conv2, fc1)`` as LabCNN's; every inner probe point (captured once per forward) is
    what the shared lab CNN computes on x itself, and the logits are the mean over the 4 copies.

    The pooled model runs the CNN on the 4 B copies at once, the references on the B images: another
    batch composition, so other kernels may round apart (float32 tolerance, not bit for bit). The same
    forward on the same input is bit for bit (``output``, the identity copy's logits)."""
    net = build(cls)
    with torch.no_grad():
        log_probs, conv2, fc1 = net(x)
        ref = net.cnn.probe(x)
        per_copy = torch.stack([net.cnn.probe(net.transform(x, g))["logits"] for g in net.group])
    assert log_probs.shape == (4, 10) and conv2.shape == (4, 20, 8, 8) and fc1.shape == (4, 50)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(4))
    assert_close_dtype(conv2, ref["conv2"])
    assert_close_dtype(fc1, ref["fc1"])
    torch.testing.assert_close(log_probs, torch.log_softmax(per_copy.mean(0), dim=1), atol=1e-5, rtol=0)
    got = capture(net, x, [*INNER, "logits", "output"])
    shapes = {k: tuple(v.shape) for k, v in got.items()}
    assert shapes == {"conv1": (4, 10, 24, 24), "pool1": (4, 10, 12, 12), "conv2": (4, 20, 8, 8),
                      "pool2": (4, 20, 4, 4), "fc1": (4, 50), "logits": (4, 10), "output": (4, 10)}
    with torch.no_grad():
        conv1 = net.cnn.conv1(x)
        pool1 = net.cnn.pool1(conv1)
    for layer, expected in {"conv1": conv1, "pool1": pool1, "conv2": ref["conv2"], "fc1": ref["fc1"],
                            "pool2": net.cnn.pool2(ref["conv2"])}.items():
        assert_close_dtype(got[layer], expected, msg=layer)
    torch.testing.assert_close(got["logits"], per_copy.mean(0), atol=1e-5, rtol=0)
    assert torch.equal(got["output"], log_probs)  # the same forward on the same input
    # the shared CNN is the lab CNN: its weights load into a LabCNN and give the identity copy's logits
    lab = LabCNN().eval()
    lab.load_state_dict(net.cnn.state_dict())
    with torch.no_grad():  # the same layers on the same B images as the identity copy's probe
        assert torch.equal(lab.probe(x)["logits"], per_copy[0])


def test_probe_points_fire_once_per_forward(x):
    net = build(RotPooledCNN)
    calls = []
    handles = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: calls.append(name))
               for name in [*INNER, "logits"]]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    assert calls == [*INNER, "logits"]


def test_settings_are_the_lab_cnns():
    net = RotPooledCNN(pool="blur", padding="circular", blur_filter_size=5, normalize=True)
    assert (net.pool, net.padding, net.normalize) == ("blur", "circular", True)
    assert net.cnn.fc1.in_features == 20 * 7 * 7
    assert net(torch.rand(2, 1, 28, 28))[0].shape == (2, 10)
    assert not isinstance(net, CropWindowModel)  # no crop fast path
    with pytest.raises(ValueError, match="square"):
        net(torch.rand(2, 1, 28, 30))


@pytest.mark.parametrize("cls", [RotPooledCNN, FlipPooledCNN])
def test_measure_with_the_engine(cls):
    """shiftprobe.measure on random images: the inner probe points are the lab CNN's maps of the
    untransformed image (conv1 exactly equivariant to crop shifts; the inferred geometry is the lab's)."""
    net = build(cls)
    images = torch.rand(6, 28, 28, generator=torch.Generator().manual_seed(1))
    res = shiftprobe.measure(net, images, torch.arange(6) % 10, layers=["conv1", "conv2", "fc1", "logits"],
                             transform=shiftprobe.Translation(max_shift=1))
    assert set(res.summary) >= {"conv1", "conv2", "fc1", "logits"}
    assert res.summary["conv1"]["aligned_rel_max"] < INVARIANT_TOL  # a rotated copy's conv1 would not align
    geometry = res.to_dict()["families"]["translation"]["geometry"]
    for layer in ("conv1", "conv2"):
        r, a, b = RECEPTIVE_FIELDS[layer]
        assert geometry[layer]["stride"] == [r, r]
        assert geometry[layer]["receptive_field"]["y"] == [a, b] == geometry[layer]["receptive_field"]["x"]
    assert res.summary["fc1"]["rel"] > NOT_EQUIVARIANT


@pytest.mark.parametrize("option,cls", [("rot_pool", RotPooledCNN), ("flip_pool", FlipPooledCNN)])
def test_model_options_compose_validate_and_build(option, cls, mnist_root, tmp_path):
    from conftest import test_overrides

    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"model={option}"], tmp_path)
    validate_config(cfg)
    lab = compose_config("train", [*test_overrides(mnist_root, tmp_path), "model=lab"], tmp_path)
    assert set(cfg.model) - {"_target_"} == set(lab.model) - {"_target_"}
    net = hydra.utils.instantiate(cfg.model)
    assert type(net) is cls and net.pool == "max" and net.padding == "valid"
    assert net(torch.rand(2, 1, 28, 28))[0].shape == (2, 10)


@pytest.mark.parametrize("override,shown", [("model.blur_filter_size=9", "model.blur_filter_size=9"),
                                            ("model.pool=avg", "model.pool='avg'")])
def test_the_lab_keys_are_checked_for_the_pooled_models(override, shown, mnist_root, tmp_path):
    from conftest import test_overrides

    from shiftprobe.errors import ShiftProbeError

    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "model=rot_pool", override], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(f"{shown} is not allowed: use ") and "\n" not in str(err.value)


@pytest.mark.parametrize("cls,family", [(RotPooledCNN, shiftprobe.Rotation90()), (FlipPooledCNN, shiftprobe.Flip())],
                         ids=["rot_pool-rot90", "flip_pool-flip"])
def test_the_family_measurement_finds_the_control(cls, family):
    """What a correct tool must find (issue 10): the pooled logits invariant at every parameter of the
    family, conv1 not equivariant to it (the map action's aligned_rel far from 0)."""
    net = build(cls)
    images = torch.rand(8, 28, 28, generator=torch.Generator().manual_seed(2))
    res = shiftprobe.measure(net, images, torch.arange(8), layers=["conv1", "fc1", "logits"], transform=family)
    section = res.to_dict()["families"][family.name]
    assert len(section["groups"]["param"]) == len(family.params())
    for entry in section["groups"]["param"]:
        assert entry["logits"]["rel"] < INVARIANT_TOL and entry["logits"]["consistency"] == 1.0
        assert entry["conv1"]["aligned_rel_max"] > NOT_EQUIVARIANT
        assert entry["fc1"]["rel"] > NOT_EQUIVARIANT
    assert section["exact"]["conv1"]["exact_params"] == []


def test_train_py_model_rot_pool_transform_rot90(make_cfg, tmp_path):
    """``python train.py model=rot_pool transform=rot90`` (synthetic data): results.json reports the
    logits invariant to every quarter-turn, trained and untrained."""
    import json

    from shiftprobe.app.train import train

    train(make_cfg("model=rot_pool", "transform=[rot90]", "callbacks=[shift_probe]", "callbacks.shift_probe.figures=false",
                   "callbacks.shift_probe.progress=false", "callbacks.shift_probe.max_images=20",
                   "+trainer.limit_train_batches=3", out=tmp_path / "run"))
    section = json.loads((tmp_path / "run" / "results.json").read_text())["families"]["rot90"]
    for block in (section, section["untrained"]):
        assert [e["param"] for e in block["groups"]["param"]] == [1, 2, 3]
        assert all(e["logits"]["rel"] < INVARIANT_TOL for e in block["groups"]["param"])
        assert block["summary"]["conv1"]["aligned_rel_max"] > NOT_EQUIVARIANT
