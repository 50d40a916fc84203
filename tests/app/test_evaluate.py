"""``eval.py`` on a run's checkpoint reproduces that run's results.json: the run's seed, shift and
measurement settings are restored from the checkpoint unless the eval command line sets them."""

import json
from pathlib import Path

from conftest import compose_config, test_overrides

from shiftprobe.app.evaluate import apply_run_config, evaluate, saved_run_config
from shiftprobe.app.train import train

TIMING_KEYS = {"seconds", "seconds_total"}
#: a small measurement: 5x5 shifts on 24 images, no untrained control, no figures
PROBE = [
    "callbacks=[model_checkpoint,shift_probe]",
    "shift=small",
    "callbacks.shift_probe.max_images=24",
    "callbacks.shift_probe.untrained=false",
    "callbacks.shift_probe.figures=false",
    "callbacks.shift_probe.progress=false",
]


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def results(run: Path) -> dict:
    return without_timings(json.loads((run / "results.json").read_text()))


def base(mnist_root: Path, out: Path) -> list[str]:
    return [a for a in test_overrides(mnist_root, out) if not a.startswith("callbacks=")]


def test_eval_of_a_seed_3_run_reproduces_its_results(mnist_root, tmp_path):
    run = tmp_path / "run"
    train(
        compose_config(
            "train", [*base(mnist_root, run), *PROBE, "seed=3", "+trainer.limit_train_batches=3"], run
        )
    )
    ckpt = f"ckpt_path={run}/checkpoints/best.ckpt"

    # eval with nothing but the checkpoint: seed 3, shift=small, 24 images, no control, as the run
    plain = tmp_path / "eval"
    cfg = compose_config("eval", [*base(mnist_root, plain), "callbacks=[shift_probe]", ckpt], plain)
    evaluate(cfg)
    assert results(plain) == results(run)
    assert cfg.seed == 3 and cfg.shift.seed == 3 and cfg.shift.max_shift == 2
    assert cfg.callbacks.shift_probe.max_images == 24 and cfg.callbacks.shift_probe.untrained is False

    # what the eval command line sets wins (and what follows it: callbacks.shift_probe.seed: ${shift.seed})
    seeded = tmp_path / "eval_seed5"
    cfg = compose_config(
        "eval", [*base(mnist_root, seeded), "callbacks=[shift_probe]", ckpt, "shift.seed=5"], seeded
    )
    evaluate(cfg)
    assert cfg.seed == 3 and cfg.shift.seed == 5 and cfg.callbacks.shift_probe.seed == 5
    other = results(seeded)
    assert other["families"]["translation"]["n_images"] == 24 and other != results(run)  # the seed alone changes the figures

    for given, expected in (
        (["seed=7"], dict(seed=7, shift_seed=7, max_images=24, max_shift=2)),
        (
            ["shift=medium", "callbacks.shift_probe.max_images=30"],
            dict(seed=3, shift_seed=3, max_images=30, max_shift=4),
        ),
    ):
        cfg = compose_config(
            "eval", [*base(mnist_root, plain), "callbacks=[shift_probe]", ckpt, *given], plain
        )
        apply_run_config(cfg, saved_run_config(f"{run}/checkpoints/best.ckpt"))
        probe = cfg.callbacks.shift_probe
        assert (cfg.seed, cfg.shift.seed, probe.seed) == (
            expected["seed"],
            expected["shift_seed"],
            expected["shift_seed"],
        )
        assert (probe.max_images, cfg.shift.max_shift, probe.max_shift) == (
            expected["max_images"],
            expected["max_shift"],
            expected["max_shift"],
        )


def test_without_hydra_config_every_run_setting_is_restored(mnist_root, tmp_path):
    """A config composed without Hydra's runtime section (the Python API): no command line to respect."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config("eval", [*base(mnist_root, tmp_path), "callbacks=[shift_probe]", "shift.seed=5"])
    saved = {"seed": 3, "shift": {"max_shift": 1, "seed": 3}, "callbacks": {"shift_probe": {"max_images": 8}}}
    previous, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        apply_run_config(cfg, saved)
    finally:
        HydraConfig.instance().cfg = previous
    assert (cfg.seed, cfg.shift.seed, cfg.shift.max_shift, cfg.callbacks.shift_probe.max_images) == (
        3,
        3,
        1,
        8,
    )


def test_a_run_that_said_layers_empty_is_measured_with_the_default_layers(mnist_root, tmp_path):
    """``layers=[]`` meant the model's default layers until it was refused (issue 18): eval.py of such a run
    restores null, the same layers, instead of refusing the run's own setting."""
    from omegaconf import OmegaConf

    from shiftprobe.app.config_checks import validate_config

    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")  # validation only checks that the file exists
    cfg = compose_config("eval", [*base(mnist_root, tmp_path), "callbacks=[shift_probe]", f"ckpt_path={ckpt}"])
    cfg.callbacks.shift_probe.layers = ["conv1"]
    apply_run_config(cfg, {"callbacks": {"shift_probe": {"layers": []}}})
    assert OmegaConf.select(cfg, "callbacks.shift_probe.layers") is None
    validate_config(cfg)


def test_a_data_setting_on_the_command_line_that_differs_from_the_run_is_one_line(mnist_root, tmp_path):
    """The run's data settings replace the command line's (the network's input is what it was trained on):
    a differing ``data.normalize=true`` was dropped without a word; the same value is fine."""
    import pytest

    from shiftprobe.errors import ShiftProbeError

    saved = {"data": {"normalize": False, "mean": [0.1307], "val_size": 5000}}
    for given in (["data.normalize=false"], ["data.mean=[0.1307]"], []):
        cfg = compose_config("eval", [*base(mnist_root, tmp_path), "callbacks=[shift_probe]", *given])
        apply_run_config(cfg, saved)
        assert cfg.data.val_size == 100  # given (base): it does not change the test, the command line's wins
    for given, expected in ((["data.normalize=true"], "data.normalize=True differs from the run's data.normalize=False"),
                            (["data.mean=[0.5]"], "data.mean=[0.5] differs from the run's data.mean=[0.1307]")):
        cfg = compose_config("eval", [*base(mnist_root, tmp_path), "callbacks=[shift_probe]", *given])
        with pytest.raises(ShiftProbeError) as err:
            apply_run_config(cfg, saved)
        assert str(err.value).startswith(expected) and "remove data." in str(err.value)
