"""``shiftprobe.app.config_checks``: every option of every config group composes and passes; every bad
setting is one line naming the key, the value and the fix; keys no code reads are refused naming the
closest; each setting is checked once, where it is set (Hydra's compose API, no subprocess)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import fields
from pathlib import Path

import hydra
import pytest
import torch
import yaml
from conftest import CONF_DIR, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from shiftprobe.app.config_checks import (
    PROBE,
    SECTIONS,
    TOP_LEVEL_OTHERS,
    TRANSFORM_OPTIONS,
    ModelSettings,
    Rule,
    _allowed,
    _engine_check,
    _target_parameters,
    check_known_keys,
    check_transform,
    validate_config,
)
from shiftprobe.app.evaluate import restore_transforms
from shiftprobe.app.train import instantiate_callbacks, resolved_config
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.callbacks import ShiftProbeCallback, family_settings

GROUPS = ("data", "model", "optimizer", "trainer", "logger", "callbacks", "shift", "paths", "experiment", "debug")
LIE = f"{PROBE}.lie_derivative"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_with(tmp_path: Path, *overrides: str, config_name: str = "train"):
    return compose_config(config_name, [f"paths.output_dir={tmp_path}", *overrides], tmp_path)


def compose(*overrides: str, config_name: str = "train"):
    extra = ["ckpt_path=/x.ckpt"] if config_name == "eval" else []
    return compose_config(config_name, ["data.root=/tmp", *extra, *overrides])


def refusal(cfg, **kwargs) -> str:
    """The one-line message ``validate_config`` refuses ``cfg`` with."""
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def probe_callback(cfg) -> ShiftProbeCallback:
    return next(cb for cb in instantiate_callbacks(cfg) if isinstance(cb, ShiftProbeCallback))


# -- every shipped option --------------------------------------------------------------------------------
def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group
    assert {"default", "cpu", "gpu", "mps", "ddp", "ddp_cpu"} <= set(options("trainer"))
    assert {"adam", "adamw", "sgd"} <= set(options("optimizer"))
    assert {"lab", "blurpool", "circular"} <= set(options("model"))


def test_defaults_reproduce_the_lab(tmp_path):
    cfg = compose_with(tmp_path)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 5 and cfg.seed == 0
    assert cfg.model.pool == "max" and cfg.model.padding == "valid" and cfg.model.normalize is False
    assert cfg.data.normalize is False and cfg.data.train_shift == 0 and cfg.data.val_size == 5000
    assert cfg.train is True and cfg.test is True and cfg.ckpt_path is None and cfg.task_name == "train"
    assert cfg.data.num_workers == 0 and cfg.data.download is True


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_builds(tmp_path, group, option):
    if (group, option) == ("model", "timm"):
        pytest.importorskip("timm", reason="model=timm needs the optional extra shiftprobe[timm]")
    cfg = compose_with(tmp_path, f"{group}={option}", "data.root=" + str(tmp_path))
    validate_config(cfg)
    resolved_config(cfg)  # every interpolation of the job config resolves
    if group == "model":
        out = hydra.utils.instantiate(cfg.model)(torch.rand(2, 1, 28, 28))  # the lab's triple, or the logits
        assert (out if isinstance(out, torch.Tensor) else out[0]).shape == (2, 10)
    if group == "optimizer":
        opt = hydra.utils.instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if group == "logger":
        for conf in (cfg.logger or {}).values():
            assert str(tmp_path) in str(hydra.utils.instantiate(conf).log_dir)
    if group == "callbacks":
        for name, conf in (cfg.callbacks or {}).items():
            assert "_target_" in conf, name
            hydra.utils.instantiate(conf)
    if group == "trainer":
        assert cfg.trainer.default_root_dir == str(tmp_path)
        if option in ("default", "cpu", "ddp_cpu"):
            trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
            assert trainer.max_epochs == 5
            if option == "ddp_cpu":
                assert trainer.num_devices == 2 and type(trainer.strategy).__name__ == "DDPStrategy"
    if group == "experiment":
        assert cfg.task_name == option


def test_the_schemas_name_only_keys_the_code_reads():
    """A schema's field is a parameter of its section's ``_target_``; a section without one (the top
    level, ``shift``) and the callback's have a field for every key the shipped configs set."""
    cfg = compose("transform=[translation,rot90,flip,rotation,subpixel]", "optimizer=sgd")
    for path, schema in SECTIONS:
        node, names = OmegaConf.select(cfg, path) if path else cfg, {f.name for f in fields(schema)}
        if "_target_" in node:
            assert names <= set(_target_parameters(node._target_)), path
        if "_target_" not in node or path == PROBE:
            assert set(node) - {"_target_"} <= names | ({*TOP_LEVEL_OTHERS} if path == "" else set()), path
    models = {OmegaConf.select(compose(f"model={m}"), "model._target_") for m in options("model")}
    assert {f.name for f in fields(ModelSettings)} <= {p for m in models for p in _target_parameters(m)}


DEBUG_EXPECTED = {
    "default": lambda c: c.trainer.max_epochs == 1,
    "fdr": lambda c: c.trainer.fast_dev_run is True and c.callbacks.shift_probe.max_images == 64
    and c.callbacks.shift_probe.untrained is False and c.callbacks.model_checkpoint.save_last is False,
    "limit": lambda c: c.trainer.max_epochs == 1 and c.trainer.limit_train_batches == 10
    and c.trainer.limit_val_batches == c.trainer.limit_test_batches == 2 and c.callbacks.shift_probe.max_images == 200,
    "overfit": lambda c: c.trainer.overfit_batches == 3 and c.trainer.max_epochs == 50 and c.test is False,
    "profiler": lambda c: c.trainer.profiler == "simple" and c.trainer.max_epochs == 1,
}


def test_debug_group_lists_every_preset():
    assert set(options("debug")) == set(DEBUG_EXPECTED)


@pytest.mark.parametrize("config_name", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(DEBUG_EXPECTED))
def test_debug_presets_compose_and_build_a_trainer(tmp_path, config_name, name):
    """``debug=<name>`` on train.py and eval.py: its settings win over the defaults, the measurement keeps
    its other settings, and Lightning accepts the trainer."""
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"")  # validation only checks that the file exists
    extra = [f"ckpt_path={ckpt}"] if config_name == "eval" else []
    cfg = compose_with(tmp_path, f"debug={name}", "data.root=" + str(tmp_path), *extra, config_name=config_name)
    validate_config(cfg, require_ckpt=config_name == "eval")
    assert cfg.task_name == "debug" and DEBUG_EXPECTED[name](cfg)
    assert cfg.hydra.runtime.choices.debug == name
    assert cfg.callbacks.shift_probe._target_.endswith("ShiftProbeCallback")  # merged into, not replaced
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert type(trainer.profiler).__name__ == ("SimpleProfiler" if name == "profiler" else "PassThroughProfiler")


@pytest.mark.parametrize("name", ["fdr", "limit"])
def test_debug_preset_without_the_callbacks_it_tunes(tmp_path, name):
    """The presets' ``callbacks.<name>`` keys must not build half callbacks when those are not chosen."""
    cfg = compose_with(tmp_path, f"debug={name}", "callbacks=[on_exception]")
    assert [type(cb).__name__ for cb in instantiate_callbacks(cfg)] == ["InterruptCheckpoint"]


def test_trainer_accelerator_override(tmp_path):
    assert compose_with(tmp_path, "trainer.accelerator=gpu").trainer.accelerator == "gpu"
    assert compose_with(tmp_path, "trainer=ddp_cpu").trainer.strategy == "ddp"


def test_data_normalize_normalises_in_the_module_not_in_the_net(tmp_path, mnist_root):
    """data.normalize=true: the network stays a pixel-space network (model.normalize false) and the
    training module applies the dataset's (mean, std) to its input, the same numbers as the network's
    own MNIST normalisation (model.normalize=true, checkpoints from before data=<name>)."""
    from shiftprobe.app.train import build_module

    cfg = compose_with(tmp_path, "data.normalize=true", "model=blurpool", f"data.root={mnist_root}")
    assert cfg.model.normalize is False and cfg.model.pool == "blur"
    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg, {}, datamodule=datamodule)
    assert module.net.normalize is False and module.input_normalization == ((0.1307,), (0.3081,))
    inside = hydra.utils.instantiate(cfg.model, normalize=True)
    inside.load_state_dict(module.net.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(module(x), inside(x)[0])
    old_style = build_module(cfg, {}, datamodule=datamodule, net=inside)  # the net normalises: not twice
    assert old_style.input_normalization is None and torch.equal(old_style(x), inside(x)[0])


def test_callbacks_default_and_none(tmp_path):
    cfg = compose_with(tmp_path)
    ckpt = cfg.callbacks.model_checkpoint
    assert ckpt.monitor == "val/acc" and ckpt.mode == "max" and ckpt.filename == "best" and ckpt.save_last
    assert ckpt.dirpath == f"{tmp_path}/checkpoints"
    assert {"lr_monitor", "progress_bar"} <= set(cfg.callbacks)
    assert not compose_with(tmp_path, "callbacks=none").get("callbacks")


def test_tensorboard_logger_has_no_placeholder_hp_metric(tmp_path):
    cfg = compose_with(tmp_path)
    assert cfg.logger.tensorboard.default_hp_metric is False and cfg.logger.tensorboard.save_dir == str(tmp_path)


def test_run_and_sweep_dirs_under_outputs(tmp_path):
    cfg = compose_with(tmp_path)
    root = cfg.paths.root_dir
    assert Path(root, "conf").is_dir() and Path(root, "train.py").is_file()  # the project root
    assert cfg.hydra.run.dir.startswith(f"{root}/outputs/runs/")
    assert cfg.hydra.sweep.dir.startswith(f"{root}/outputs/multirun/")
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
    assert cfg.hydra.job.chdir is False


def test_data_root_follows_mnist_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_ROOT", "/some/where")
    assert compose_with(tmp_path).data.root == "/some/where"
    monkeypatch.delenv("MNIST_ROOT")
    cfg = compose_with(tmp_path)
    assert cfg.data.root == f"{cfg.paths.root_dir}/data"


def test_eval_config_requires_a_checkpoint(tmp_path):
    cfg = compose_with(tmp_path, config_name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")
    assert refusal(cfg, require_ckpt=True).startswith("ckpt_path is required: python eval.py ckpt_path=")
    cfg = compose_with(tmp_path, "ckpt_path=/x.ckpt", config_name="eval")
    assert cfg.ckpt_path == "/x.ckpt" and "optimizer" not in cfg


def test_unknown_option_lists_the_allowed_ones(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_with(tmp_path, "optimizer=foo")
    assert "adam" in str(err.value) and "sgd" in str(err.value)


# -- one line per bad setting: key, value, fix -----------------------------------------------------------
T = "callbacks.shift_probe"
BAD = [
    (["seed=-1"], "seed=-1 is not allowed: use an integer from 0 to 4294967295, e.g. seed=0."),
    (["seed=4294967296"], "seed=4294967296 is not allowed: use an integer from 0 to 4294967295"),
    (["seed=1.5"], "seed=1.5 is not allowed: use an integer from 0"),  # was named shift.seed (its interpolation)
    (["train=maybe"], "train='maybe' is not allowed: use true or false."),  # was accepted (a truthy text)
    (["optimizer.lr=0"], "optimizer.lr=0 is not allowed: use a positive number, e.g. optimizer.lr=1e-3."),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is not allowed: use a number >= 0, e.g. "),
    (["optimizer=sgd", "optimizer.momentum=1"], "optimizer.momentum=1 is not allowed: use a number in [0, 1), e.g. "),
    (["data.normalize=maybe"], "data.normalize='maybe' is not allowed: use true or false."),
    # OmegaConf would read these as False / 3, but the job would receive the text ("no" is truthy)
    (["data.normalize=no"], "data.normalize='no' is not allowed: use true or false."),
    (["data.train_flip=off"], "data.train_flip='off' is not allowed: use true or false."),
    (["model.normalize=no"], "model.normalize='no' is not allowed: use true or false."),
    (["data.val_size='3'"], "data.val_size='3' is not allowed: use an integer >= 1 and below the number of training"),
    (["data.batch_size=true"], "data.batch_size=True is not allowed: use an integer >= 1, e.g. data.batch_size=64."),
    (["data.eval_batch_size=big"], "data.eval_batch_size='big' is not allowed: use an integer >= 1, e.g. "),
    (["data.eval_batch_size=null"], "data.eval_batch_size=None is not allowed: use an integer >= 1"),  # was accepted
    (["data.train_shift=28"], "data.train_shift=28 is not allowed: use an integer from 0 to 27 (0: no augmentation)"),
    (["data.train_rotate=200"], "data.train_rotate=200 is not allowed: use a number from 0 to 180 degrees"),
    (["model.pool=avg"], "model.pool='avg' is not allowed: use one of ['max', 'blur', 'aps']."),
    (["model.padding=same"], "model.padding='same' is not allowed: use one of ['valid', 'circular']."),
    (["shift.mode=sideways"], "shift.mode='sideways' is not allowed: use one of ['crop', 'roll']."),
    (["shift.pattern=spiral"], "shift.pattern='spiral' is not allowed: use one of ['grid', 'axis', 'random']."),
    (["shift.max_shift=1.5"], "shift.max_shift=1.5 is not allowed: use an integer from 1 to 27 (presets: shift="),
    (["shift.max_shift=28"], "shift.max_shift=28 is not allowed: use an integer from 1 to 27"),
    (["shift.pattern=random", "shift.max_shift=0"], "shift.max_shift=0 is not allowed: use an integer from 1 to 27"),
    (["shift.max_shift=0"], "shift.max_shift=0 is not allowed: use an integer from 1 to 27"),  # grid: no shift at all
    # the callback's own value, where it does not follow shift.* (was checked only by the engine, after training)
    ([f"{T}.max_shift=40"], f"{T}.max_shift=40 is not allowed: use an integer from 1 to 27"),
    ([f"{T}.pattern=random", f"{T}.max_shift=0"], f"{T}.max_shift=0 is not allowed: use an integer from 1 to 27"),
    ([f"{T}.mode=wrap"], f"{T}.mode='wrap' is not allowed: use one of ['crop', 'roll']."),
    (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is not allowed: use an integer >= 1."),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 is not allowed: use an integer >= 1."),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 is not allowed: use an integer >= 0, e.g. trainer.max_epochs=5."),
    (["+trainer.min_epochs=9"], "trainer.min_epochs=9 is not allowed: it must not exceed trainer.max_epochs=5."),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed: it trains nothing, so the network measured as "
                               "trained would be its initial weights; use at least 1, or measure the untrained "
                               "network with experiment=untrained (train=false)."),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed: it trains nothing"),
    # without ckpt_path nothing is trained or loaded: the "trained" and the untrained block were the same weights
    (["train=false"], "train=False is not allowed: without ckpt_path nothing is trained or loaded"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 is not allowed: it trains nothing"),
    ([f"{T}.max_images=1"], f"{T}.max_images=1 is not allowed: use an integer >= 2 (or null for all the test images)."),
    ([f"{T}.max_images=few"], f"{T}.max_images='few' is not allowed: use an integer >= 2 (or null for all"),
    ([f"{T}.batch_size=0"], f"{T}.batch_size=0 is not allowed: use an integer >= 1"),
    ([f"{T}.untrained_inits=0"], f"{T}.untrained_inits=0 is not allowed: use an integer >= 1"),
    ([f"{T}.export_pairs=-1"], f"{T}.export_pairs=-1 is not allowed: use an integer >= 0"),
    ([f"{T}.pairs_per_chunk=0"], f"{T}.pairs_per_chunk=0 is not allowed"),
    ([f"{T}.untrained=maybe"], f"{T}.untrained='maybe' is not allowed: use true or false."),
    ([f"{T}.figures=no"], f"{T}.figures='no' is not allowed: use true or false."),
    ([f"{T}.layers=[]"], f"{T}.layers=[] measures nothing: name at least one module"),
    ([f"{T}.layers=conv2"], f"{T}.layers='conv2' is not allowed: use a list of module"),
    ([f"{T}.layers=[0,3]"], f"{T}.layers=[0, 3] is not allowed: use a list of module"),
    ([f"{T}.initial_state=/no/such.pt"], f"{T}.initial_state='/no/such.pt' is not allowed: no such file"),  # new
    (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not allowed: no such checkpoint file"),
    (["+sead=5"], "sead is not a top-level setting: nothing would read it. Did you mean seed? Allowed keys: "),
    (["+shift.rotation=15"], "shift.rotation is not a setting of shift: nothing would read it."),
]


@pytest.mark.parametrize("overrides,start", BAD)
def test_a_bad_setting_is_one_line_before_lightning(overrides, start):
    """``known_keys=False`` is the preflight's check (before Lightning is imported)."""
    message = refusal(compose(*overrides), known_keys=False)
    assert message.startswith(start), message


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=0"], ["seed=4294967295"], ["train=false", f"{T}.untrained=false", "trainer.max_epochs=0"], ["experiment=untrained", "trainer.max_epochs=0"],
        ["trainer.fast_dev_run=true", "trainer.max_steps=0"], [f"{T}.max_images=2"], [f"{T}.layers=[conv1,output]"],
        [f"{T}.layers=null"], ["trainer.check_val_every_n_epoch=null", "trainer.accumulate_grad_batches=2"],
        ["data.seed=null"], ["shift=large", "shift.pattern=random"], ["data.train_rotate=12.5"],
    ],
)
def test_good_settings_pass(overrides):
    validate_config(compose(*overrides))


def test_a_value_that_follows_another_setting_is_checked_once_where_it_is_set():
    """``callbacks.shift_probe.max_shift: ${shift.max_shift}``: a bad shift is named as shift.max_shift,
    the one key the user set, not again as the callback's."""
    assert refusal(compose("shift.max_shift=40")).startswith("shift.max_shift=40 is not allowed")
    assert refusal(compose("seed=abc")).startswith("seed='abc' is not allowed")  # data.seed, shift.seed follow it


def test_eval_does_not_refuse_zero_epochs(tmp_path):
    """eval.py trains nothing anyway: trainer.max_epochs=0 there changes nothing and is not refused."""
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"")
    validate_config(compose(f"ckpt_path={ckpt}", "trainer.max_epochs=0", config_name="eval"), require_ckpt=True)


def test_empty_layers_mean_the_same_in_the_cli_and_the_api():
    """``layers=[]``: refused by both, with the same fix (null / None: the model's default layers)."""
    import shiftprobe
    from shiftprobe.models.lab import LabCNN

    with pytest.raises(ValueError, match=r"layers=\[\] measures nothing"):
        shiftprobe.measure(LabCNN(), torch.rand(2, 28, 28), layers=[])
    with pytest.raises(ShiftProbeError, match=r"layers=\[\] measures nothing.*null"):
        validate_config(compose(f"{T}.layers=[]"), known_keys=False)


def test_blurpool_and_circular_presets_pass():
    for preset in ("model=blurpool", "model=circular", "experiment=circular"):
        validate_config(compose(preset))


# -- the rules: one message form per kind of setting ---------------------------------------------------
@pytest.mark.parametrize(
    "kind,rule,high,expected",
    [
        (float, Rule(low=0, open_low=True, fix=", e.g. {key}=1e-3"), None, "use a positive number, e.g. {key}=1e-3"),
        (int, Rule(low=1), None, "use an integer >= 1"),
        (int, Rule(low=0, high=27), "27", "use an integer from 0 to 27"),
        (float, Rule(low=0, high=1, open_high=True), "1", "use a number in [0, 1)"),
        (float, Rule(low=0, open_low=True, high=180), "180", "use a number above 0 and at most 180"),
        (float, Rule(low=0.5, open_low=True), None, "use a number > 0.5"),
        (int, Rule(), None, "use an integer"),
        (bool, Rule(), None, "use true or false"),
        (str, Rule(text="use a name"), None, "use a name"),
    ],
)
def test_each_kind_of_rule_says_what_to_write(kind, rule, high, expected):
    assert _allowed(kind, rule, high, ()) == expected
    assert _allowed(str, Rule(), None, ("a", "b")) == "use one of ['a', 'b']"


def test_an_engine_check_is_one_line_naming_the_key():
    def engine(value):
        raise ValueError(f"value {value!r} is not known; use 'a'.")

    with pytest.raises(ShiftProbeError) as err:
        _engine_check("section.key", "b", engine, "b")
    assert str(err.value) == "section.key='b' is not allowed: value 'b' is not known; use 'a'."
    _engine_check("section.key", "a", lambda v: v, "a")  # no error: nothing raised


# -- keys no code reads ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key",
    [
        ("+shift.rotation=15", "shift.rotation"),
        ("+model.depth=3", "model.depth"),
        ("+data.augment=true", "data.augment"),
        ("+optimizer.nesterov=true", "optimizer.nesterov"),
        (f"+{T}.max_imags=10", f"{T}.max_imags"),
    ],
)
def test_unknown_key_is_refused(override, key):
    with pytest.raises(ShiftProbeError, match=rf"{key} is not a setting") as err:
        check_known_keys(compose_config("train", [override]))
    assert "Allowed keys:" in str(err.value)


@pytest.mark.parametrize(
    "model, allowed",
    [
        ("lab", "blur_filter_size, image_size, normalize, padding, pool"),
        ("rot_pool", "blur_filter_size, image_size, normalize, padding, pool"),  # the lab CNN's, passed on to it
        ("gap", "blur_filter_size, in_channels, normalize, num_classes, padding, pool"),
        ("resnet", "blur_filter_size, in_channels, normalize, num_classes, padding, pool, width"),
        ("allconv", "blur_filter_size, image_size, in_channels, normalize, num_classes, padding, pool"),
    ],
)
def test_the_key_check_reads_each_models_whole_signature(model, allowed):
    """A model's keys are its constructor's parameters, also where they are passed on (``**settings``)."""
    with pytest.raises(ShiftProbeError) as err:
        check_known_keys(compose_config("train", [f"model={model}", "+model.depth=3"]))
    assert str(err.value).endswith(f"Allowed keys: {allowed}.")


@pytest.mark.parametrize(
    "override, closest",
    [(f"+{T}.max_imags=10", f"{T}.max_images"), ("+data.batch_sise=3", "data.batch_size"), ("+sead=5", "seed"),
     ("trainer.max_epoch=3", "trainer.max_epochs")],
)
def test_unknown_key_names_the_closest_one(override, closest):
    with pytest.raises(ShiftProbeError) as err:
        check_known_keys(compose_config("train", [override]))
    assert f"Did you mean {closest}? Allowed keys: " in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("group", ["model", "optimizer", "experiment", "debug", "trainer", "logger", "callbacks", "shift"])
def test_every_shipped_option_has_known_keys_only(group):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        check_known_keys(compose_config("train", [f"{group}={path.stem}"]))
    check_known_keys(compose_config("eval", ["ckpt_path=x.ckpt"]))


def test_no_progress_bar_drops_the_progress_bar_callback():
    """``+trainer.enable_progress_bar=false`` with the default callbacks must not make Lightning refuse the run."""
    from lightning.pytorch.callbacks import ProgressBar

    assert not any(isinstance(c, ProgressBar) for c in instantiate_callbacks(compose("+trainer.enable_progress_bar=false")))
    assert any(isinstance(c, ProgressBar) for c in instantiate_callbacks(compose()))


# -- the transform list group --------------------------------------------------------------------------
TRANSFORMS = sorted(p.stem for p in (CONF_DIR / "transform").glob("*.yaml"))


def transforms_of(cfg) -> dict:
    return OmegaConf.to_container(cfg.transform, resolve=True)


def test_transform_options_are_the_checked_ones_and_their_files_hold_their_settings():
    assert TRANSFORMS == sorted(TRANSFORM_OPTIONS)
    for name in TRANSFORMS:
        text = (CONF_DIR / "transform" / f"{name}.yaml").read_text()
        assert text.startswith(f"# @package transform.{name}\n"), name
        schema = TRANSFORM_OPTIONS[name]
        assert tuple(yaml.safe_load(text) or {}) == (tuple(f.name for f in fields(schema)) if schema else ()), name


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_default_is_translation_only_and_shift_keys_unchanged(config_name):
    cfg = compose(config_name=config_name)
    assert transforms_of(cfg) == {"translation": {}}
    assert OmegaConf.to_container(cfg.shift, resolve=True) == {"max_shift": 4, "mode": "crop", "pattern": "grid", "seed": 0}
    validate_config(cfg) if config_name == "train" else check_transform(cfg)
    assert probe_callback(cfg).transforms == [("translation", {})]


@pytest.mark.parametrize("option", TRANSFORMS)
def test_every_transform_option_composes_alone_validates_and_builds_its_family(option):
    """The YAML settings are the family class's own defaults, and every setting is a field of it."""
    from shiftprobe.probe.families import FAMILIES, family_from_name

    cfg = compose(f"transform={option}")
    validate_config(cfg)
    assert [name for name, _ in probe_callback(cfg).transforms] == [option]
    settings = transforms_of(cfg)[option]
    if option != "translation":  # translation's settings are shift.*
        assert family_from_name(option, **settings) == FAMILIES[option]()
        assert set(settings) == {f.name for f in dataclasses.fields(FAMILIES[option]) if f.name != "name"}


def test_a_transform_list_keeps_its_order_and_each_option_its_own_settings():
    cfg = compose("transform=[translation,rot90,flip,rotation,subpixel]")
    validate_config(cfg)
    got = transforms_of(cfg)
    assert list(got) == ["translation", "rot90", "flip", "rotation", "subpixel"]
    assert got["rotation"] == {"max_angle": 45.0, "step": 5.0} and got["flip"] == {"axes": ["horizontal", "vertical"]}
    assert got["subpixel"] == {"max_offset": 1.0, "step": 0.125, "axes": "xy", "method": "bilinear", "mode": "crop"}
    assert probe_callback(cfg).transforms == list(got.items())  # the callback's ${transform}


def test_transform_settings_are_overridable_from_the_command_line():
    cfg = compose("transform=[rotation,subpixel,flip]", "transform.subpixel.method=fourier", "transform.subpixel.mode=roll",
                  "transform.subpixel.axes=both", "transform.rotation.max_angle=90", "transform.rotation.step=15",
                  "transform.flip.axes=[vertical]")
    validate_config(cfg)
    got = transforms_of(cfg)
    assert got["subpixel"]["method"] == "fourier" and got["subpixel"]["mode"] == "roll" and got["subpixel"]["axes"] == "both"
    assert got["rotation"] == {"max_angle": 90, "step": 15} and got["flip"] == {"axes": ["vertical"]}


def test_plus_appends_to_the_default_list_and_the_shift_keys_still_work():
    cfg = compose("+transform=rot90", "shift=small", "shift.mode=roll")
    assert list(transforms_of(cfg)) == ["translation", "rot90"]
    cb = probe_callback(cfg)
    assert cb.max_shift == cfg.shift.max_shift and cb.mode == "roll"


def test_an_option_not_chosen_cannot_be_set_and_an_unknown_option_is_named():
    with pytest.raises(ConfigCompositionException, match="transform.rotation.step"):
        compose("transform.rotation.step=2")  # rotation is not in the default list
    with pytest.raises(MissingConfigException, match="transform/scale"):
        compose("transform=[translation,scale]")


BAD_TRANSFORMS = [
    (["transform=[]"], "transform=[] measures nothing"),
    (["transform=[rotation]", "transform.rotation.max_angle=0"], "transform.rotation.max_angle=0 is not allowed"),
    (["transform=[rotation]", "transform.rotation.max_angle=400"], "transform.rotation.max_angle=400"),
    (["transform=[rotation]", "transform.rotation.step=-5"], "transform.rotation.step=-5 is not allowed"),
    (["transform=[rotation]", "transform.rotation.step=50"], "at most transform.rotation.max_angle=45"),
    (["transform=[rotation]", "transform.rotation.step=abc"], "transform.rotation.step='abc'"),
    (["transform=[subpixel]", "transform.subpixel.method=cubic"], "transform.subpixel.method='cubic'"),
    (["transform=[subpixel]", "transform.subpixel.mode=wrap"], "transform.subpixel.mode='wrap'"),
    (["transform=[subpixel]", "transform.subpixel.axes=z"], "transform.subpixel.axes='z'"),
    (["transform=[subpixel]", "transform.subpixel.max_offset=0"], "transform.subpixel.max_offset=0"),
    (["transform=[subpixel]", "transform.subpixel.max_offset=30"], "at most 27"),
    (["transform=[subpixel]", "transform.subpixel.step=2"], "transform.subpixel.step=2"),
    (["transform=[flip]", "transform.flip.axes=[diagonal]"], "transform.flip.axes=['diagonal']"),
    (["transform=[flip]", "transform.flip.axes=[]"], "transform.flip.axes=[]"),
    (["transform=[flip]", "transform.flip.axes=[vertical,vertical]"], "transform.flip.axes="),
    (["transform=[rot90]", "+transform.rot90.k=2"], "transform.rot90.k is not a setting of transform.rot90"),
    (["+transform.translation.max_shift=2"], "translation's settings are shift.*"),
    (["transform=[rotation]", "+transform.rotation.fill=1"], "allowed keys: max_angle, step"),
    (["+transform.scale.factor=2"], "transform.scale is not a transformation family"),
]


@pytest.mark.parametrize("overrides,message", BAD_TRANSFORMS)
def test_bad_transform_values_stop_with_one_line_naming_key_value_and_fix(overrides, message):
    text = refusal(compose(*overrides))
    assert message in text and ("use" in text or "Remove" in text or "choose" in text)


@pytest.mark.parametrize(
    "option, key, value",
    [("subpixel", "axes", "x"), ("subpixel", "axes", "y"), ("subpixel", "axes", "both"), ("subpixel", "mode", "roll"),
     ("subpixel", "method", "fourier"), ("rotation", "max_angle", 180), ("flip", "axes", "[horizontal]")],
)
def test_every_value_the_family_accepts_passes(option, key, value):
    from shiftprobe.probe.families import family_from_name

    cfg = compose(f"transform=[{option}]", f"transform.{option}.{key}={value}")
    validate_config(cfg)
    family_from_name(option, **transforms_of(cfg)[option])


def test_family_settings_accepts_every_form():
    assert family_settings(None) == [("translation", {})]
    assert family_settings(["rot90", {"name": "rotation", "step": 10}, "rot90"]) == [("rot90", {}), ("rotation", {"step": 10})]
    assert family_settings(OmegaConf.create({"flip": {"axes": ["vertical"]}})) == [("flip", {"axes": ["vertical"]})]

    class Family:
        name = "rot90"

    obj = Family()
    assert family_settings([obj]) == [("rot90", obj)]


SAVED = {"transform": {"translation": {}, "rotation": {"max_angle": 30.0, "step": 10.0}}}


def test_eval_restores_the_run_families(caplog):
    cfg = compose(config_name="eval")
    with caplog.at_level(logging.INFO, logger="shiftprobe.app.evaluate"):
        restore_transforms(cfg, SAVED)
    assert transforms_of(cfg) == SAVED["transform"]
    assert "restored from the checkpoint's run: transform=[translation,rotation]" in caplog.text
    assert probe_callback(cfg).transforms == list(SAVED["transform"].items())  # the callback follows


@pytest.mark.parametrize("override", ["transform=[rot90]", "+transform=flip"])
def test_eval_keeps_the_families_given_on_its_command_line(override, caplog):
    cfg = compose(override, config_name="eval")
    before = transforms_of(cfg)
    with caplog.at_level(logging.INFO, logger="shiftprobe.app.evaluate"):
        restore_transforms(cfg, SAVED)
    assert transforms_of(cfg) == before and "not restored" in caplog.text


def test_eval_of_a_run_from_before_the_group_measures_translation():
    cfg = compose(config_name="eval")
    restore_transforms(cfg, {"shift": {"max_shift": 2}})
    assert transforms_of(cfg) == {"translation": {}}


# -- the Lie derivative's keys ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, generators, layerwise",
    [
        ([], None, False),
        ([f"{LIE}=true"], ("translate_x", "translate_y", "rotate"), False),
        ([f"{LIE}=[translate_x,rotate,scale]"], ("translate_x", "rotate", "scale"), False),
        ([f"{LIE}=[hyperbolic_rotate]", f"{LIE}_layerwise=true"], ("hyperbolic_rotate",), True),
        ([f"{LIE}=[translate_x,saturate]", "data=cifar10"], ("translate_x", "saturate"), False),  # RGB: was refused
    ],
)
def test_lie_settings_reach_the_callback(overrides, generators, layerwise):
    cfg = compose(*overrides)
    validate_config(cfg)
    cb = probe_callback(cfg)
    assert cb.lie_generators == generators
    assert cb.lie_derivative_layerwise is layerwise


BAD_LIE = [
    ([f"{LIE}=[sheer]"], f"{LIE}=['sheer'] is not allowed: generator 'sheer' is not known (did you mean 'shear'?)"),
    ([f"{LIE}=[rotate,rotate]"], "lists one twice"),
    ([f"{LIE}=[]"], f"{LIE}=[] is not allowed: use true, false or a list of generators"),
    ([f"{LIE}=[translate_x,saturate]"], "'saturate' changes colour saturation and needs RGB images (C = 3); these "
                                        "have C = 1: drop 'saturate' from generators (data.channels=1)."),
    ([f"{LIE}=maybe"], f"{LIE}='maybe' is not allowed"),
    ([f"{LIE}_layerwise=true"], f"{LIE}_layerwise=true needs the Lie derivative: set {LIE}=true"),
    ([f"{LIE}=true", f"{LIE}_layerwise=yes"], f"{LIE}_layerwise='yes' is not allowed: use true or false"),
    ([f"{LIE}=true", f"{LIE}_images=1"], f"{LIE}_images=1 is not allowed: use an integer >= 2"),
]


@pytest.mark.parametrize("overrides, message", BAD_LIE)
def test_bad_lie_values_stop_with_one_line(overrides, message):
    assert message in refusal(compose(*overrides), known_keys=False)


def test_the_callback_checks_its_arguments_too():
    with pytest.raises(ValueError, match="did you mean 'scale'"):
        ShiftProbeCallback(lie_derivative=["scal"])
    with pytest.raises(ValueError, match="lie_derivative_layerwise=true needs"):
        ShiftProbeCallback(lie_derivative_layerwise=True)
    assert ShiftProbeCallback(lie_derivative=True, lie_derivative_layerwise=True).lie_generators[0] == "translate_x"
