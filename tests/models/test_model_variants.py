"""The variants GapCNN, AllConvCNN, SmallResNet: shapes of every probe point for 28x28 input, the
lab's forward contract, the probe-layer attributes, other input sizes and channels, one training
step through the LightningModule, and their configs (compose, validate, instantiate)."""

import functools
import inspect

import hydra
import hydra.errors
import lightning as L
import pytest
import torch
from conftest import compose_config, test_overrides
from torch.utils.data import DataLoader, TensorDataset

from shiftprobe.app.config_checks import validate_config
from shiftprobe.errors import ArgumentError, ShiftProbeError
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.models import AllConvCNN, FlipPooledCNN, GapCNN, LabCNN, RotPooledCNN, SmallResNet

# probe point -> output shape (without the batch axis) for a 28x28 grey image
SHAPES = {
    GapCNN: {
        "conv1": (10, 24, 24),
        "pool1": (10, 12, 12),
        "conv2": (20, 8, 8),
        "pool2": (20, 4, 4),
        "gap": (20,),
        "fc1": (50,),
        "fc2": (10,),
    },
    AllConvCNN: {
        "conv1": (10, 24, 24),
        "down1": (10, 12, 12),
        "conv2": (20, 8, 8),
        "down2": (20, 4, 4),
        "fc1": (50,),
        "fc2": (10,),
    },
    SmallResNet: {
        "stem": (16, 28, 28),
        "layer1": (16, 28, 28),
        "layer2": (32, 14, 14),
        "layer3": (64, 7, 7),
        "gap": (64,),
        "fc": (10,),
    },
}
# forward's (spatial repr, vector repr) shapes
CONTRACT = {GapCNN: ((20, 8, 8), (50,)), AllConvCNN: ((20, 8, 8), (50,)), SmallResNet: ((64, 7, 7), (64,))}
MODELS = list(SHAPES)
IDS = [cls.__name__ for cls in MODELS]
CONFIGS = {"gap": GapCNN, "allconv": AllConvCNN, "resnet": SmallResNet}


def probe_outputs(net, x, layers):
    """Outputs of the named modules, captured with forward hooks."""
    out, handles = {}, []
    for name in layers:
        handles.append(
            net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o))
        )
    try:
        result = net(x)
    finally:
        for h in handles:
            h.remove()
    return out, result


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(3, 1, 28, 28)


@pytest.mark.parametrize("cls", MODELS, ids=IDS)
def test_probe_point_shapes_for_28x28(cls, x):
    out, _ = probe_outputs(cls().eval(), x, SHAPES[cls])
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == SHAPES[cls]


@pytest.mark.parametrize("cls", MODELS, ids=IDS)
def test_forward_keeps_the_lab_contract(cls, x):
    net = cls().eval()
    out, result = probe_outputs(net, x, [net.layer_aliases["logits"]])
    assert isinstance(result, tuple) and len(result) == 3
    log_probs, spatial, vector = result
    assert log_probs.shape == (3, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(3))
    torch.testing.assert_close(log_probs, torch.log_softmax(out[net.layer_aliases["logits"]], dim=1))
    assert (tuple(spatial.shape[1:]), tuple(vector.shape[1:])) == CONTRACT[cls]


@pytest.mark.parametrize("cls", MODELS, ids=IDS)
def test_probe_layer_attributes_name_modules(cls):
    net = cls()
    modules = dict(net.named_modules())
    assert isinstance(cls.default_probe_layers, tuple) and cls.default_probe_layers
    assert all(name in modules for name in cls.default_probe_layers)
    assert all(isinstance(k, str) and v in modules and k not in modules for k, v in cls.layer_aliases.items())
    assert cls.layer_aliases["logits"] == list(SHAPES[cls])[-1]


def test_gap_defaults_and_aliases():
    assert GapCNN.default_probe_layers == ("conv1", "conv2", "gap", "fc1", "fc2")
    assert GapCNN.layer_aliases == {"logits": "fc2"}
    assert SmallResNet.layer_aliases == {"logits": "fc"}


@pytest.mark.parametrize("cls", MODELS, ids=IDS)
def test_normalize_is_the_first_step(cls, x):
    torch.manual_seed(1)
    plain = cls().eval()
    normed = cls(normalize=True).eval()
    normed.load_state_dict(plain.state_dict())
    torch.testing.assert_close(normed(x)[0], plain((x - 0.1307) / 0.3081)[0])


@pytest.mark.parametrize(
    "net,size,spatial",
    [
        (GapCNN(), 16, (20, 2, 2)),
        (GapCNN(), 40, (20, 14, 14)),
        (GapCNN(in_channels=3), 33, (20, 10, 10)),
        (AllConvCNN(image_size=32), 32, (20, 10, 10)),
        (AllConvCNN(in_channels=3), 28, (20, 8, 8)),
        (SmallResNet(), 33, (64, 9, 9)),
        (SmallResNet(in_channels=3, width=4), 64, (16, 16, 16)),
        (SmallResNet(width=8), 9, (32, 3, 3)),
    ],
    ids=[
        "gap16",
        "gap40",
        "gap33-rgb",
        "allconv32",
        "allconv-rgb",
        "resnet33",
        "resnet64-rgb-w4",
        "resnet9-w8",
    ],
)
def test_other_sizes_and_channels(net, size, spatial):
    log_probs, rep, _ = net.eval()(torch.rand(2, net.in_channels, size, size))
    assert log_probs.shape == (2, 10) and tuple(rep.shape[1:]) == spatial


def test_signatures_list_every_setting_with_its_default():
    """Hydra's key check and a checkpoint's added defaults read ``inspect.signature``: the variants list
    their own parameters and the shared settings (with their own padding), the pooled models the lab's."""

    def defaults(cls) -> dict:
        return {name: p.default for name, p in inspect.signature(cls).parameters.items()}

    shared = {"in_channels": 1, "num_classes": 10, "normalize": False, "pool": "max", "blur_filter_size": 3}
    assert defaults(GapCNN) == {**shared, "padding": "valid"}
    assert defaults(SmallResNet) == {"width": 16, **shared, "padding": "zeros"}
    assert defaults(AllConvCNN) == {"image_size": 28, **shared, "padding": "valid"}
    assert defaults(RotPooledCNN) == defaults(FlipPooledCNN) == defaults(LabCNN)
    assert SmallResNet(width=2).padding == "zeros" and GapCNN().padding == "valid"


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: SmallResNet(width=0), "width=0 is not allowed: use an integer >= 1"),
        (lambda: GapCNN(in_channels=0), "in_channels=0 is not allowed: use an integer >= 1"),
        (lambda: AllConvCNN(image_size=12), "image_size=12 is not allowed: use an integer >= 16"),
        (lambda: SmallResNet(pool="avg"), "pool='avg' is not known; use one of ['max', 'blur', 'aps']"),
        (lambda: LabCNN(padding="zeros"), "padding='zeros' is not known; use one of ['valid', 'circular']"),
        (lambda: RotPooledCNN(blur_filter_size=9, pool="blur"), "blur_filter_size=9 is not allowed: use an integer from 1 to 7"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_argument(make, expected):
    """The Python API's message names the argument, not a config key; ``setting`` names the key."""
    with pytest.raises(ArgumentError) as err:
        make()
    assert str(err.value) == expected and isinstance(err.value, ValueError)
    assert str(err.value.setting("model")) == f"model.{expected}"


@pytest.mark.parametrize("cls", MODELS, ids=IDS)
def test_one_training_step_through_the_lightning_module(cls, tmp_path):
    torch.manual_seed(0)
    module = ShiftProbeModule(net=cls(), optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    data = TensorDataset(torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    assert trainer.global_step == 1
    after = module.net.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert set(module.initial_net_state) == set(before)


@pytest.mark.parametrize("option", sorted(CONFIGS))
def test_model_config_composes_validates_and_builds(option, mnist_root, tmp_path):
    cfg = compose_config(
        "train", [*test_overrides(mnist_root, tmp_path), f"model={option}", "data.normalize=true"], tmp_path
    )
    validate_config(cfg)
    net = hydra.utils.instantiate(cfg.model)
    # data.normalize=true normalises in the training module: the network itself stays in pixel space
    assert type(net) is CONFIGS[option] and net.normalize is False and net.in_channels == 1
    assert net(torch.rand(2, 1, 28, 28))[0].shape == (2, 10)


@pytest.mark.parametrize("name,cls", [("gap", GapCNN), ("resnet", SmallResNet)])
def test_experiment_config_composes_and_builds(name, cls, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"experiment={name}"], tmp_path)
    validate_config(cfg)
    assert cfg.task_name == name
    assert type(hydra.utils.instantiate(cfg.model)) is cls


def test_resnet_width_from_the_config(mnist_root, tmp_path):
    cfg = compose_config(
        "train", [*test_overrides(mnist_root, tmp_path), "model=resnet", "model.width=8"], tmp_path
    )
    validate_config(cfg)
    net = hydra.utils.instantiate(cfg.model)
    assert net.width == 8 and net.fc.in_features == 32


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model=resnet", "model.width=0"], "model.width=0"),
        (["model=resnet", "model.width=2.5"], "model.width=2.5"),
        (["model=gap", "model.in_channels=3"], "model.in_channels=3"),
        (["model=lab", "model.blur_filter_size=9"], "model.blur_filter_size=9"),
    ],
)
def test_config_checks_name_key_and_fix(overrides, key, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), *overrides], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert key in message and "use" in message and "\n" not in message


def test_lab_keys_are_not_checked_for_other_models(mnist_root, tmp_path):
    """The lab CNN's keys are not required of other models, and a lab key given to a model without it
    (GapCNN takes any image size) is refused as a key that model does not read (not as a bad lab value)."""
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "model=gap"], tmp_path)
    validate_config(cfg)
    cfg = compose_config(
        "train", [*test_overrides(mnist_root, tmp_path), "model=gap", "+model.image_size=32"], tmp_path
    )
    with pytest.raises(ShiftProbeError, match=r"model.image_size is not a setting of model"):
        validate_config(cfg)


@pytest.mark.parametrize(
    "option,override,message",
    [
        ("allconv", "model.pool=avg", "model.pool='avg' is not allowed: use one of ['max', 'blur', 'aps']."),
        ("gap", "model.padding=zeros", "model.padding='zeros' is not allowed: use one of ['valid', 'circular']."),
        ("resnet", "model.padding=valid", "model.padding='valid' is not allowed: use one of ['zeros', 'circular']."),
        ("resnet", "model.blur_filter_size=0", "model.blur_filter_size=0 is not allowed: use an integer from 1 to 7"),
    ],
)
def test_the_variant_keys_of_the_other_models_are_checked(option, override, message, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), f"model={option}", override], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
