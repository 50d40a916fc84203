"""A checkpoint of another model variant, resumed or tested, ends in one ShiftProbeError line naming what
differs and the fix, before anything is trained (``shiftprobe.app.checkpoint_compat``)."""

from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, VAL_SIZE
from hydra import initialize_config_dir

from shiftprobe.app.evaluate import evaluate
from shiftprobe.app.train import train
from shiftprobe.errors import ShiftProbeError


def circular_checkpoint(make_cfg, out: Path) -> Path:
    train(make_cfg("model=circular", "+trainer.limit_train_batches=2", "test=false", out=out))
    return out / "checkpoints" / "last.ckpt"


def as_hydra_app():
    """The config search path a running ``train.py`` / ``eval.py`` has (model options can be looked up)."""
    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")


def test_resuming_another_variant_names_the_setting_and_the_fix(make_cfg, tmp_path):
    ckpt = circular_checkpoint(make_cfg, tmp_path / "circular")
    cfg = make_cfg(f"ckpt_path={ckpt}", out=tmp_path / "resumed")  # the default model=lab
    with as_hydra_app(), pytest.raises(ShiftProbeError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "size mismatch" not in msg
    assert "model.padding is 'circular' in the checkpoint but 'valid' in this run" in msg
    assert "add model=circular (or model.padding=circular)" in msg
    assert not (tmp_path / "resumed" / "checkpoints").exists()  # stopped before training
    # outside a Hydra app (no config group to look the option up in): the key override alone
    cfg = make_cfg(f"ckpt_path={ckpt}", "train=false", out=tmp_path / "tested")
    with pytest.raises(ShiftProbeError, match=r"To test it, .*: add model\.padding=circular\.$"):
        train(cfg)


def test_checkpoint_without_settings_names_the_first_differing_weights(make_cfg, tmp_path):
    checkpoint = torch.load(circular_checkpoint(make_cfg, tmp_path / "circular"), weights_only=True)
    del checkpoint["hyper_parameters"]["config"]  # e.g. written by another tool: only the weights tell
    bare = tmp_path / "bare" / "weights.ckpt"  # no <run>/.hydra/config.yaml next to it either
    bare.parent.mkdir()
    torch.save(checkpoint, bare)
    for resume in (False, True):
        cfg = (
            make_cfg(f"ckpt_path={bare}", out=tmp_path / "resumed")
            if resume
            else make_cfg(f"ckpt_path={bare}", config_name="eval", out=tmp_path / "eval")
        )
        with as_hydra_app(), pytest.raises(ShiftProbeError) as err:
            (train if resume else evaluate)(cfg)
        msg = str(err.value)
        assert "\n" not in msg and "size mismatch" not in msg and len(msg) < 400
        # circular padding keeps 28x28 -> 14x14 -> 7x7 maps: fc1 sees 20*7*7 = 980 inputs, not 320
        assert "net.fc1.weight is [50, 980] in the file but [50, 320] in the model" in msg
        assert msg.endswith(
            f"To {'resume' if resume else 'test'} it, it fits model=circular: add model=circular."
        )


def test_a_pooled_control_checkpoint_names_its_model_option(make_cfg, tmp_path):
    """A model=rot_pool checkpoint resumed as the default lab model: the fix names model=rot_pool; the
    right option resumes it."""
    out = tmp_path / "rot_pool"
    train(make_cfg("model=rot_pool", "+trainer.limit_train_batches=2", "test=false", out=out))
    ckpt = out / "checkpoints" / "last.ckpt"
    cfg = make_cfg(f"ckpt_path={ckpt}", out=tmp_path / "as_lab")  # the default model=lab
    with as_hydra_app(), pytest.raises(ShiftProbeError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "size mismatch" not in msg
    assert "model._target_ is 'shiftprobe.models.RotPooledCNN' in the checkpoint" in msg
    assert "add model=rot_pool (or model._target_=shiftprobe.models.RotPooledCNN)" in msg
    cfg = make_cfg(f"ckpt_path={ckpt}", "model=rot_pool", "train=false", out=tmp_path / "tested")
    assert "test/acc" in train(cfg)


def test_resuming_with_other_optimizer_settings_names_them_before_training(make_cfg, tmp_path):
    """A resume restores the optimizer's state and settings: another optimizer failed at its first step
    (SGD's KeyError 'momentum' on Adam's state) and another lr was silently replaced by the checkpoint's."""
    train(make_cfg("+trainer.limit_train_batches=2", "test=false", out=tmp_path / "adam"))
    ckpt = tmp_path / "adam" / "checkpoints" / "last.ckpt"
    for overrides, expected in (
        (["optimizer=sgd"], "optimizer._target_ is 'torch.optim.Adam' in the checkpoint but 'torch.optim.SGD'"),
        (["optimizer.lr=0.01"], "optimizer.lr is 0.001 in the checkpoint but 0.01 in this run"),
    ):
        cfg = make_cfg(f"ckpt_path={ckpt}", "trainer.max_epochs=2", *overrides, out=tmp_path / "resumed")
        with as_hydra_app(), pytest.raises(ShiftProbeError) as err:
            train(cfg)
        msg = str(err.value)
        assert "\n" not in msg and expected in msg, msg
        assert "add optimizer=adam" in msg or "add optimizer.lr=0.001" in msg, msg
        assert not (tmp_path / "resumed" / "checkpoints").exists()  # stopped before training


def test_resuming_with_another_split_names_it_before_training(make_cfg, tmp_path):
    """``data.val_size`` / ``data.split_seed`` / ``data.dataset`` decide which images are training and which
    validation: a resume with others silently moved training images into validation mid-run."""
    train(make_cfg("+trainer.limit_train_batches=2", "test=false", out=tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for overrides, expected, fix in (
        (["data.val_size=300"], f"data.val_size is {VAL_SIZE} in the checkpoint but 300 in this run",
         f"add data.val_size={VAL_SIZE}, or start"),
        (["data.split_seed=1"], "data.split_seed is 0 in the checkpoint but 1 in this run", "add data.split_seed=0, "),
        (["data=fashion_mnist", f"data.val_size={VAL_SIZE}"], "data.dataset is 'mnist' in the checkpoint but "
         "'fashion_mnist' in this run", "add data.dataset=mnist"),
    ):
        cfg = make_cfg(f"ckpt_path={ckpt}", "trainer.max_epochs=2", *overrides, out=tmp_path / "resumed")
        with as_hydra_app(), pytest.raises(ShiftProbeError) as err:
            train(cfg)
        msg = str(err.value)
        assert "\n" not in msg and expected in msg and fix in msg, msg
        assert not (tmp_path / "resumed" / "checkpoints").exists()  # stopped before training
