"""Every option of every config group composes, validates and builds (Hydra's compose API)."""

from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONF_DIR, compose_config
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.train import instantiate_callbacks, resolved_config
from shiftprobe.errors import ShiftProbeError

GROUPS = ("data", "model", "optimizer", "trainer", "logger", "callbacks", "shift", "paths", "experiment", "debug")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUPS for o in options(g)]


def compose_with(tmp_path: Path, *overrides: str, config_name: str = "train"):
    return compose_config(config_name, [f"paths.output_dir={tmp_path}", *overrides], tmp_path)


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


@pytest.mark.parametrize("group,option", ALL)
def test_every_option_composes_validates_and_builds(tmp_path, group, option):
    cfg = compose_with(tmp_path, f"{group}={option}", "data.root=" + str(tmp_path))
    validate_config(cfg)
    resolved_config(cfg)  # every interpolation of the job config resolves
    if group == "model":
        net = hydra.utils.instantiate(cfg.model)
        out = net(torch.rand(2, 1, 28, 28))  # the lab's triple, or the logits (model=torchvision|timm)
        assert (out if isinstance(out, torch.Tensor) else out[0]).shape == (2, 10)
    if group == "optimizer":
        factory = hydra.utils.instantiate(cfg.optimizer)
        opt = factory(params=[torch.nn.Parameter(torch.zeros(1))])
        assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if group == "logger":
        for conf in (cfg.logger or {}).values():
            logger = hydra.utils.instantiate(conf)
            assert str(tmp_path) in str(logger.log_dir)
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
    """``debug=<name>`` (conf/debug/, as in lightning-hydra-template) on train.py and eval.py: its settings
    win over the defaults, the measurement keeps its other settings, and Lightning accepts the trainer."""
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
    cfg = compose_with(tmp_path, "trainer.accelerator=gpu")
    assert cfg.trainer.accelerator == "gpu"
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
    assert cfg.logger.tensorboard.default_hp_metric is False
    assert cfg.logger.tensorboard.save_dir == str(tmp_path)


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
    cfg = compose_with(tmp_path, "ckpt_path=/x.ckpt", config_name="eval")
    assert cfg.ckpt_path == "/x.ckpt" and "optimizer" not in cfg


def test_unknown_option_lists_the_allowed_ones(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_with(tmp_path, "optimizer=foo")
    assert "adam" in str(err.value) and "sgd" in str(err.value)


# -- issue 18, item 5: settings that gave tracebacks or were silently wrong, one line before training ----
ONE_LINE = [
    ("seed=-1", "seed=-1 is not allowed: use an integer from 0 to 4294967295, e.g. seed=0."),
    ("seed=4294967296", "seed=4294967296 is not allowed: use an integer from 0 to 4294967295"),
    ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not allowed: use an integer >= 1."),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 is not allowed: use an integer >= 1."),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed: it trains nothing, so the network measured as "
                             "trained would be its initial weights; use at least 1, or measure the untrained "
                             "network with experiment=untrained (train=false)."),
    ("trainer.max_steps=0", "trainer.max_steps=0 is not allowed: it trains nothing"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is not allowed: it trains nothing"),
    ("callbacks.shift_probe.max_images=0", "callbacks.shift_probe.max_images=0 is not allowed: use an integer >= 2"),
    ("callbacks.shift_probe.max_images=1", "callbacks.shift_probe.max_images=1 is not allowed: use an integer >= 2"),
    ("callbacks.shift_probe.batch_size=0", "callbacks.shift_probe.batch_size=0 is not allowed: use an integer >= 1"),
    ("callbacks.shift_probe.untrained_inits=0", "callbacks.shift_probe.untrained_inits=0 is not allowed: use an integer >= 1"),
    ("callbacks.shift_probe.lie_derivative_images=0",
     "callbacks.shift_probe.lie_derivative_images=0 is not allowed: use an integer >= 2"),
    ("callbacks.shift_probe.export_pairs=-1", "callbacks.shift_probe.export_pairs=-1 is not allowed: use an integer >= 0"),
    ("callbacks.shift_probe.pairs_per_chunk=0", "callbacks.shift_probe.pairs_per_chunk=0 is not allowed"),
    ("callbacks.shift_probe.untrained=maybe", "callbacks.shift_probe.untrained='maybe' is not allowed: use true or false."),
    ("callbacks.shift_probe.layers=[]", "callbacks.shift_probe.layers=[] measures nothing: name at least one module"),
    ("callbacks.shift_probe.layers=conv2", "callbacks.shift_probe.layers='conv2' is not allowed: use a list of module"),
    ("callbacks.shift_probe.layers=[0,3]", "callbacks.shift_probe.layers=[0, 3] is not allowed: use a list of module"),
    ("+sead=5", "sead is not a top-level setting: nothing would read it. Did you mean seed? Allowed keys: "),
]


@pytest.mark.parametrize("override,start", ONE_LINE)
def test_bad_setting_is_one_line_before_lightning(tmp_path, override, start):
    """``validate_config(known_keys=False)`` is the preflight's check (before Lightning is imported)."""
    cfg = compose_with(tmp_path, "data.root=" + str(tmp_path), override)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg, known_keys=False)
    assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=0"], ["seed=4294967295"], ["train=false", "trainer.max_epochs=0"], ["experiment=untrained", "trainer.max_epochs=0"],
        ["trainer.fast_dev_run=true", "trainer.max_steps=0"], ["callbacks.shift_probe.max_images=2"],
        ["callbacks.shift_probe.layers=[conv1,output]"], ["callbacks.shift_probe.layers=null"],
        ["trainer.check_val_every_n_epoch=null", "trainer.accumulate_grad_batches=2"],
    ],
)
def test_good_settings_pass(tmp_path, overrides):
    validate_config(compose_with(tmp_path, "data.root=" + str(tmp_path), *overrides))


def test_eval_does_not_refuse_zero_epochs(tmp_path):
    """eval.py trains nothing anyway: trainer.max_epochs=0 there changes nothing and is not refused."""
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"")
    cfg = compose_with(tmp_path, "data.root=" + str(tmp_path), f"ckpt_path={ckpt}", "trainer.max_epochs=0",
                       config_name="eval")
    validate_config(cfg, require_ckpt=True)


def test_empty_layers_mean_the_same_in_the_cli_and_the_api(tmp_path):
    """``layers=[]``: refused by both, with the same fix (null / None: the model's default layers)."""
    import shiftprobe
    from shiftprobe.models.lab import LabCNN

    with pytest.raises(ValueError, match=r"layers=\[\] measures nothing"):
        shiftprobe.measure(LabCNN(), torch.rand(2, 28, 28), layers=[])
    cfg = compose_with(tmp_path, "data.root=" + str(tmp_path), "callbacks.shift_probe.layers=[]")
    with pytest.raises(ShiftProbeError, match=r"layers=\[\] measures nothing.*null"):
        validate_config(cfg, known_keys=False)
