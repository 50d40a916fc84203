"""The ``transform`` list group: every option and lists of them compose, settings are overridable from
the command line, bad values stop before anything runs, and eval.py restores the run's families."""

from __future__ import annotations

import logging

import pytest
import yaml
from conftest import CONF_DIR, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.evaluate import restore_transforms
from shiftprobe.app.train import instantiate_callbacks
from shiftprobe.app.transform_checks import TRANSFORM_OPTIONS, check_transform
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.callbacks import ShiftProbeCallback, family_settings

OPTIONS = sorted(p.stem for p in (CONF_DIR / "transform").glob("*.yaml"))


def compose(*overrides: str, config_name: str = "train"):
    extra = ["ckpt_path=/x.ckpt"] if config_name == "eval" else []
    return compose_config(config_name, ["data.root=/tmp", *extra, *overrides])


def transforms_of(cfg) -> dict:
    return OmegaConf.to_container(cfg.transform, resolve=True)


def probe_callback(cfg) -> ShiftProbeCallback:
    return next(cb for cb in instantiate_callbacks(cfg) if isinstance(cb, ShiftProbeCallback))


def test_options_are_the_checked_ones_and_their_files_hold_their_settings():
    assert OPTIONS == sorted(TRANSFORM_OPTIONS)
    for name in OPTIONS:
        text = (CONF_DIR / "transform" / f"{name}.yaml").read_text()
        assert text.startswith(f"# @package transform.{name}\n"), name
        settings = yaml.safe_load(text) or {}
        assert tuple(settings) == TRANSFORM_OPTIONS[name], name


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_default_is_translation_only_and_shift_keys_unchanged(config_name):
    cfg = compose(config_name=config_name)
    assert transforms_of(cfg) == {"translation": {}}
    assert OmegaConf.to_container(cfg.shift, resolve=True) == {"max_shift": 4, "mode": "crop", "pattern": "grid", "seed": 0}
    validate_config(cfg) if config_name == "train" else check_transform(cfg)
    assert probe_callback(cfg).transforms == [("translation", {})]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_composes_alone_and_validates(option):
    cfg = compose(f"transform={option}")
    assert list(transforms_of(cfg)) == [option]
    validate_config(cfg)
    assert [name for name, _ in probe_callback(cfg).transforms] == [option]


def test_a_list_keeps_its_order_and_each_option_its_own_settings():
    cfg = compose("transform=[translation,rot90,flip,rotation,subpixel]")
    validate_config(cfg)
    got = transforms_of(cfg)
    assert list(got) == ["translation", "rot90", "flip", "rotation", "subpixel"]
    assert got["rotation"] == {"max_angle": 45.0, "step": 5.0}
    assert got["subpixel"] == {"max_offset": 1.0, "step": 0.125, "axes": "xy", "method": "bilinear", "mode": "crop"}
    assert got["flip"] == {"axes": ["horizontal", "vertical"]}
    assert got["translation"] == {} and got["rot90"] == {}
    # the callback receives the same families, in the same order, through ${transform}
    assert probe_callback(cfg).transforms == list(got.items())


def test_settings_are_overridable_from_the_command_line():
    cfg = compose(
        "transform=[rotation,subpixel,flip]",
        "transform.subpixel.method=fourier",
        "transform.subpixel.mode=roll",
        "transform.subpixel.axes=both",
        "transform.rotation.max_angle=90",
        "transform.rotation.step=15",
        "transform.flip.axes=[vertical]",
    )
    validate_config(cfg)
    got = transforms_of(cfg)
    assert got["subpixel"]["method"] == "fourier" and got["subpixel"]["mode"] == "roll"
    assert got["subpixel"]["axes"] == "both"
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


BAD = [
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
    (["transform=[subpixel]", "transform.subpixel.step=2"], "transform.subpixel.step=2"),
    (["transform=[flip]", "transform.flip.axes=[diagonal]"], "transform.flip.axes=['diagonal']"),
    (["transform=[flip]", "transform.flip.axes=[]"], "transform.flip.axes=[]"),
    (["transform=[flip]", "transform.flip.axes=[vertical,vertical]"], "transform.flip.axes="),
    (["transform=[rot90]", "+transform.rot90.k=2"], "transform.rot90.k is not a setting of transform.rot90"),
    (["+transform.translation.max_shift=2"], "translation's settings are shift.*"),
    (["transform=[rotation]", "+transform.rotation.fill=1"], "allowed keys: max_angle, step"),
    (["+transform.scale.factor=2"], "transform.scale is not a transformation family"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_values_stop_with_one_line_naming_key_value_and_fix(overrides, message):
    cfg = compose(*overrides)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "use" in text or "Remove" in text or "choose" in text


def test_family_settings_accepts_every_form():
    assert family_settings(None) == [("translation", {})]
    assert family_settings(["rot90", {"name": "rotation", "step": 10}, "rot90"]) == [
        ("rot90", {}),
        ("rotation", {"step": 10}),
    ]
    assert family_settings(OmegaConf.create({"flip": {"axes": ["vertical"]}})) == [("flip", {"axes": ["vertical"]})]

    class Family:
        name = "rot90"

    obj = Family()
    assert family_settings([obj]) == [("rot90", obj)]


# -- eval.py -------------------------------------------------------------------------------------
SAVED = {"transform": {"translation": {}, "rotation": {"max_angle": 30.0, "step": 10.0}}}


def test_eval_restores_the_run_families(caplog):
    cfg = compose(config_name="eval")
    with caplog.at_level(logging.INFO, logger="shiftprobe.app.evaluate"):
        restore_transforms(cfg, SAVED)
    assert transforms_of(cfg) == SAVED["transform"]
    assert "restored from the checkpoint's run: transform=[translation,rotation]" in caplog.text
    # the callback follows: its transforms interpolate ${transform}
    assert probe_callback(cfg).transforms == list(SAVED["transform"].items())


@pytest.mark.parametrize("override", ["transform=[rot90]", "+transform=flip"])
def test_eval_keeps_the_families_given_on_its_command_line(override, caplog):
    cfg = compose(override, config_name="eval")
    before = transforms_of(cfg)
    with caplog.at_level(logging.INFO, logger="shiftprobe.app.evaluate"):
        restore_transforms(cfg, SAVED)
    assert transforms_of(cfg) == before
    assert "not restored" in caplog.text


def test_eval_of_a_run_from_before_the_group_measures_translation():
    cfg = compose(config_name="eval")
    restore_transforms(cfg, {"shift": {"max_shift": 2}})
    assert transforms_of(cfg) == {"translation": {}}


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_builds_its_family_with_the_class_defaults(option):
    """The YAML settings are the family class's own defaults, and every setting is a field of it."""
    import dataclasses

    from shiftprobe.probe.families import FAMILIES, family_from_name

    settings = transforms_of(compose(f"transform={option}"))[option]
    if option == "translation":  # its settings are shift.*
        assert settings == {}
        return
    assert family_from_name(option, **settings) == FAMILIES[option]()
    defaults = {f.name for f in dataclasses.fields(FAMILIES[option]) if f.name != "name"}
    assert set(settings) == defaults


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
