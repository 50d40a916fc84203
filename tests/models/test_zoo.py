"""``model=torchvision`` / ``model=timm`` (``shiftprobe.models.zoo``): built for the data's channels and
classes, the CIFAR stem, the default probe points per architecture, the variants where offered, the
image-size check, safe weight loading, training through the Lightning module, and the configs.

Small architectures keep it fast: shufflenet_v2_x0_5 (0.35M parameters), squeezenet1_1 (0.7M), and
resnet18 where a ResNet is the point."""

import functools

import hydra
import pytest
import torch
from conftest import compose_config, test_overrides
from reference import one_thread
from torch import nn

from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.train import build_network
from shiftprobe.errors import ArgumentError, ShiftProbeError
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.models import timm_model, torchvision_model
from shiftprobe.models.aps import APSDownsample2d
from shiftprobe.models.variants import DownsampledConv2d
from shiftprobe.probe.capture import resolve_layers


@pytest.fixture(scope="module")
def resnet18_small():
    torch.manual_seed(0)
    return torchvision_model("resnet18", in_channels=1, num_classes=10, small_input=True, image_size=28)


def test_an_unknown_name_lists_close_matches_in_one_line():
    with pytest.raises(ValueError) as err:
        torchvision_model("resnt18")
    text = str(err.value)
    assert text.startswith("name='resnt18' is not a torchvision classification model; close matches: resnet18")
    assert "\n" not in text
    with pytest.raises(ValueError, match="is not a torchvision classification model"):
        torchvision_model("fasterrcnn_resnet50_fpn")  # detection: not a classifier


def test_resnet18_with_the_cifar_stem(resnet18_small):
    net = resnet18_small
    assert isinstance(net.maxpool, nn.Identity) and net.conv1.weight.shape == (64, 1, 3, 3)
    assert net.conv1.stride == (1, 1) and net.conv1.padding == (1, 1) and net.fc.out_features == 10
    assert net.default_probe_layers == ("relu", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
    assert net.layer_aliases == {"logits": "fc"} and net.outputs_logits is True
    assert [layer.name for layer in resolve_layers(net, None)][-1] == "logits"
    with torch.no_grad(), one_thread():
        layer1 = net.layer1(net.relu(net.bn1(net.conv1(torch.rand(2, 1, 28, 28)))))
    assert layer1.shape == (2, 64, 28, 28)  # no down-sampling before the first stage


def test_the_first_convolution_takes_the_datas_channels():
    torch.manual_seed(0)
    net = torchvision_model("shufflenet_v2_x0_5", in_channels=1, num_classes=7)
    assert net.conv1[0].weight.shape[1] == 1 and net.fc.out_features == 7
    with torch.no_grad(), one_thread():
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    torch.manual_seed(0)
    rgb = torchvision_model("shufflenet_v2_x0_5", in_channels=3, num_classes=7)
    torch.manual_seed(0)
    import torchvision

    plain = torchvision.models.shufflenet_v2_x0_5(num_classes=7)  # three channels: torchvision's own network
    assert all(torch.equal(a, b) for a, b in zip(rgb.state_dict().values(), plain.state_dict().values(), strict=True))


def test_default_probe_layers_per_architecture():
    torch.manual_seed(0)
    shuffle = torchvision_model("shufflenet_v2_x0_5")
    assert shuffle.default_probe_layers == ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5", "fc")
    assert shuffle.layer_aliases == {"logits": "fc"}
    squeeze = torchvision_model("squeezenet1_1")  # its head ends in a pool, not a linear layer
    assert squeeze.default_probe_layers[-2:] == ("classifier", "output") and squeeze.layer_aliases == {}
    assert squeeze.default_probe_layers[0] == "features.0"
    resnet = torchvision_model("resnet18")
    assert resnet.default_probe_layers == ("maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def test_vgg_probe_points_and_variants():
    torch.manual_seed(0)
    net = torchvision_model("vgg11", in_channels=3, pool="aps", padding="circular", image_size=32)
    pools = ("features.2", "features.5", "features.10", "features.15", "features.20")
    assert net.default_probe_layers == (*pools, "classifier") and net.layer_aliases == {"logits": "classifier"}
    for name in pools:
        layers = list(net.get_submodule(name))
        assert isinstance(layers[1], nn.MaxPool2d) and layers[1].stride == 1 and isinstance(layers[2], APSDownsample2d)
    assert all(m.padding_mode == "circular" for m in net.features if isinstance(m, nn.Conv2d))


def test_resnet_variants_rewrite_stem_and_stages():
    torch.manual_seed(0)
    net = torchvision_model("resnet18", pool="blur", padding="circular")
    assert isinstance(net.conv1, DownsampledConv2d) and net.conv1.padding_mode == "circular"
    assert isinstance(net.layer2[0].conv1, DownsampledConv2d) and isinstance(net.layer2[0].downsample[0], DownsampledConv2d)
    torch.manual_seed(0)
    plain = torchvision_model("resnet18")
    assert list(net.state_dict()) == list(plain.state_dict())  # weights of the plain network load into it


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pool": "aps"}, r"^pool='aps' is not offered for name='shufflenet_v2_x0_5': the variants are offered for "
                          r"torchvision's ResNets"),
        ({"padding": "circular"}, "^padding='circular' is not offered for name='shufflenet_v2_x0_5'"),
        ({"small_input": True}, "^small_input=True is not available for name='shufflenet_v2_x0_5'"),
        ({"padding": "valid"}, r"^padding='valid' is not known; use one of \['zeros', 'circular'\]"),
    ],
)
def test_what_an_architecture_does_not_offer_is_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        torchvision_model("shufflenet_v2_x0_5", **kwargs)
    assert "\n" not in str(err.value)


def test_images_the_architecture_cannot_take_are_refused_at_build_time():
    with pytest.raises(ValueError) as err:
        torchvision_model("squeezenet1_1", image_size=8)
    text = str(err.value)
    assert text.startswith("name='squeezenet1_1' cannot take 1x8x8 images (RuntimeError") and "\n" not in text
    assert "small_input=True" in text


def test_normalize_is_the_first_step():
    torch.manual_seed(0)
    plain = torchvision_model("shufflenet_v2_x0_5").eval()
    torch.manual_seed(0)
    normed = torchvision_model("shufflenet_v2_x0_5", normalize=True).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad(), one_thread():
        torch.testing.assert_close(normed(x), plain((x - 0.1307) / 0.3081), rtol=0, atol=0)


def test_weights_load_safely_and_the_untrained_control_stays_random(tmp_path):
    torch.manual_seed(0)
    trained = torchvision_model("shufflenet_v2_x0_5")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(0)
    fresh = torchvision_model("shufflenet_v2_x0_5")
    torch.manual_seed(0)
    loaded = torchvision_model("shufflenet_v2_x0_5", weights=str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert all(torch.equal(loaded.untrained_state[k], v) for k, v in fresh.state_dict().items())
    module = ShiftProbeModule(net=loaded)
    assert all(torch.equal(module.initial_net_state[k], v) for k, v in fresh.state_dict().items())
    assert not hasattr(loaded, "untrained_state")  # read once, not kept twice


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    path = tmp_path / "rgb.pt"
    torch.save(torchvision_model("shufflenet_v2_x0_5", in_channels=3).state_dict(), path)
    with pytest.raises(ShiftProbeError) as err:
        torchvision_model("shufflenet_v2_x0_5", in_channels=1, weights=str(path))
    text = str(err.value)
    assert "\n" not in text and text.startswith("weights=") and "does not fit name='shufflenet_v2_x0_5'" in text
    assert "conv1.0.weight is [24, 3, 3, 3] in the file but [24, 1, 3, 3] in the model" in text
    with pytest.raises(ShiftProbeError, match="^weights=.*: no such file"):
        torchvision_model("shufflenet_v2_x0_5", weights=str(tmp_path / "missing.pt"))


def test_a_logits_network_trains_through_the_lightning_module():
    """The module takes ``log_softmax`` of a network that returns logits: its loss is the cross-entropy."""
    torch.manual_seed(0)
    net = torchvision_model("shufflenet_v2_x0_5")
    module = ShiftProbeModule(net=net, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with one_thread():
        torch.testing.assert_close(module.eval()(x), torch.log_softmax(net(x), dim=1))
        loss, preds, _ = module.train()._step((x, y))
        torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(net(x), y))
        optimizer = module.configure_optimizers()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        loss.backward()
        optimizer.step()
    assert preds.shape == (8,) and any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


# -- timm (optional extra) -----------------------------------------------------------------------------------
def test_timm_resnet_with_the_cifar_stem():
    pytest.importorskip("timm", reason="model=timm needs the optional extra shiftprobe[timm]")
    torch.manual_seed(0)
    net = timm_model("resnet18", in_channels=1, num_classes=10, small_input=True, image_size=28)
    assert net.conv1.weight.shape == (64, 1, 3, 3) and isinstance(net.maxpool, nn.Identity)
    assert net.default_probe_layers == ("act1", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc")
    assert net.layer_aliases == {"logits": "fc"} and net.outputs_logits


def test_timm_probe_points_from_feature_info_and_unknown_names():
    pytest.importorskip("timm", reason="model=timm needs the optional extra shiftprobe[timm]")
    torch.manual_seed(0)
    net = timm_model("convnext_atto", in_channels=1, num_classes=10, image_size=32)
    assert net.default_probe_layers == ("stages.0", "stages.1", "stages.2", "stages.3", "head.fc")
    assert net.layer_aliases == {"logits": "head.fc"}
    with pytest.raises(ValueError, match=r"^name='resnet1888' is not a timm model; close matches: resnet18"):
        timm_model("resnet1888")


def test_timm_variants_are_refused_in_one_line_naming_the_argument():
    """Before timm is imported: the same line with or without the optional extra."""
    with pytest.raises(ArgumentError, match=r"^pool='aps' is not offered for timm models: the variants are offered "):
        timm_model("resnet18", pool="aps")
    with pytest.raises(ArgumentError, match=r"^padding='circular' is not offered for timm models"):
        timm_model("resnet18", padding="circular")


# -- the configs ---------------------------------------------------------------------------------------------
def test_torchvision_config_composes_validates_and_builds(mnist_root, tmp_path):
    overrides = ["model=torchvision", "model.name=shufflenet_v2_x0_5", "data.normalize=true"]
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), *overrides], tmp_path)
    validate_config(cfg)
    assert (cfg.model.in_channels, cfg.model.num_classes, cfg.model.image_size) == (1, 10, 28)
    net = build_network(cfg)
    # data.normalize=true: the training module normalises with the dataset's mean/std, not the network
    assert net.fc.out_features == 10 and len(net._forward_pre_hooks) == 0


def test_timm_config_builds(mnist_root, tmp_path):
    pytest.importorskip("timm", reason="model=timm needs the optional extra shiftprobe[timm]")
    overrides = [*test_overrides(mnist_root, tmp_path), "model=timm", "model.small_input=true"]
    cfg = compose_config("train", overrides, tmp_path)
    validate_config(cfg)
    assert isinstance(hydra.utils.instantiate(cfg.model).maxpool, nn.Identity)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.pool=avg"], "model.pool='avg' is not allowed: use one of ['max', 'blur', 'aps']."),
        (["model.padding=valid"], "model.padding='valid' is not allowed: use one of ['zeros', 'circular']."),
        (["model.small_input=maybe"], "model.small_input='maybe' is not allowed: use true or false."),
        (["model.weights=/no/such/file.pt"], "model.weights='/no/such/file.pt' is not allowed: no such file"),
        (["+model.width=3"], "model.width is not a setting of model"),
    ],
)
def test_bad_torchvision_settings_are_refused_before_building(overrides, message, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "model=torchvision", *overrides], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model.name=resnt18"], "model.name='resnt18' is not a torchvision classification model; close matches"),
        (["model.name=squeezenet1_1", "model.image_size=8"], "model.name='squeezenet1_1' cannot take 1x8x8 images"),
        (["model.name=vit_b_16", "model.pool=blur"], "model.pool='blur' is not offered for name='vit_b_16': the "
                                                     "variants are offered for torchvision's ResNets and VGGs"),
        (["model.name=shufflenet_v2_x0_5", "model.padding=circular"], "model.padding='circular' is not offered for"),
        (["model.name=shufflenet_v2_x0_5", "model.small_input=true"], "model.small_input=True is not available for "
                                                                      "name='shufflenet_v2_x0_5'"),
    ],
)
def test_what_only_the_build_can_tell_is_one_line_too(overrides, expected, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "model=torchvision", *overrides], tmp_path)
    validate_config(cfg)
    with pytest.raises(ShiftProbeError) as err:
        build_network(cfg)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_checkpoint_of_a_run_that_started_from_a_weights_file_loads_without_it(tmp_path):
    """The recorded ``model.weights`` file is where training started; the checkpoint holds the weights, so
    rebuilding its network (``shiftprobe.load_network``, eval.py) does not read that file again."""
    import shiftprobe

    torch.manual_seed(0)
    net = torchvision_model("shufflenet_v2_x0_5")
    settings = {"_target_": "shiftprobe.models.torchvision_model", "name": "shufflenet_v2_x0_5", "in_channels": 1,
                "num_classes": 10, "small_input": False, "pool": "max", "padding": "zeros", "blur_filter_size": 3,
                "weights": str(tmp_path / "gone.pt"), "normalize": False, "image_size": 28}
    checkpoint = {"pytorch-lightning_version": "2.6.0", "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                  "hyper_parameters": {"config": {"model": settings}}}
    torch.save(checkpoint, tmp_path / "run.ckpt")
    loaded = shiftprobe.load_network(tmp_path / "run.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    from shiftprobe.app.checkpoint_compat import model_differences

    assert model_differences(settings, {**settings, "weights": None}) == []
