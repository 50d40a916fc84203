"""The typed schemas of the config sections: enums in step with the code, one-line errors."""

from dataclasses import fields

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.schemas import (
    DataConfig,
    LabModelConfig,
    Padding,
    Pool,
    ShiftConfig,
    ShiftMode,
    ShiftPattern,
    ShiftProbeConfig,
)
from shiftprobe.errors import ShiftProbeError
from shiftprobe.models.lab import PADDINGS, POOLS
from shiftprobe.probe.resample import SHIFT_MODES
from shiftprobe.probe.translation import SHIFT_PATTERNS


def test_enums_hold_exactly_the_values_the_code_accepts():
    assert tuple(m.value for m in ShiftMode) == SHIFT_MODES
    assert tuple(m.value for m in ShiftPattern) == SHIFT_PATTERNS
    assert tuple(m.value for m in Pool) == POOLS
    assert tuple(m.value for m in Padding) == PADDINGS


def test_schema_defaults_are_the_shipped_defaults(tmp_path):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}"], tmp_path)
    assert cfg.shift.max_shift == ShiftConfig.max_shift and cfg.shift.mode == ShiftConfig.mode.value
    assert cfg.shift.pattern == ShiftConfig.pattern.value
    assert cfg.model.pool == LabModelConfig.pool.value and cfg.model.padding == LabModelConfig.padding.value
    assert cfg.data.batch_size == DataConfig.batch_size and cfg.data.val_size == DataConfig.val_size
    probe = OmegaConf.to_container(cfg.callbacks.shift_probe, resolve=True)
    for field in fields(ShiftProbeConfig):
        default = getattr(ShiftProbeConfig, field.name)
        assert probe[field.name] == getattr(default, "value", default), field.name


BAD = [
    ("shift.mode=sideways", "shift.mode='sideways' is not allowed: use one of ['crop', 'roll']."),
    ("shift.pattern=spiral", "shift.pattern='spiral' is not allowed: use one of ['grid', 'axis', 'random']."),
    ("shift.max_shift=1.5", "shift.max_shift=1.5 is not allowed: use an integer, e.g. max_shift=4."),
    ("model.pool=avg", "model.pool='avg' is not allowed: use one of ['max', 'blur', 'aps']."),
    ("model.padding=same", "model.padding='same' is not allowed: use one of ['valid', 'circular']."),
    ("data.normalize=maybe", "data.normalize='maybe' is not allowed: use true or false."),
    # OmegaConf would read these as False / 3, but the job would receive the text ("no" is truthy)
    ("data.normalize=no", "data.normalize='no' is not allowed: use true or false."),
    ("data.train_flip=off", "data.train_flip='off' is not allowed: use true or false."),
    ("model.normalize=no", "model.normalize='no' is not allowed: use true or false."),
    ("data.val_size='3'", "data.val_size='3' is not allowed: use an integer, e.g. val_size=5000."),
    ("data.batch_size=true", "data.batch_size=True is not allowed: use an integer, e.g. batch_size=64."),
    ("data.eval_batch_size=big", "data.eval_batch_size='big' is not allowed: use an integer or null"),
    ("callbacks.shift_probe.figures=no", "callbacks.shift_probe.figures='no' is not allowed: use true or false."),
    ("callbacks.shift_probe.max_images=few",
     "callbacks.shift_probe.max_images='few' is not allowed: use an integer or null, e.g. max_images=null."),
    ("callbacks.shift_probe.mode=wrap", "callbacks.shift_probe.mode='wrap' is not allowed: use one of ['crop', 'roll']."),
]


@pytest.mark.parametrize("override,message", BAD)
def test_a_badly_typed_value_is_one_line_naming_key_value_and_fix(tmp_path, override, message):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}", override], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text


def test_blurpool_and_circular_presets_pass_the_schema(tmp_path):
    for preset in ("model=blurpool", "model=circular", "experiment=circular"):
        cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"data.root={tmp_path}", preset], tmp_path)
        validate_config(cfg)
