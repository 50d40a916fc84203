"""End to end through ``train(cfg)`` / ``evaluate(cfg)`` and the command line, on synthetic MNIST."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FILES, ROOT, compose_config, test_overrides

from shiftprobe.app.evaluate import evaluate
from shiftprobe.app.train import train
from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.module import INITIAL_STATE_KEY
from shiftprobe.models.lab import LabCNN


def read_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # our checkpoints stay weights-only


def test_train_end_to_end(make_cfg, tmp_path):
    metrics = train(make_cfg("optimizer.lr=0.01"))
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert key in metrics and metrics[key] == metrics[key], key
    assert metrics["test/acc"] > 0.3  # learns (chance is 0.1)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss_step", "val/acc", "test/acc"):
        assert key in header
    hparams = (run / "csv" / "hparams.yaml").read_text()
    assert "optimizer.lr: 0.01" in hparams and "data.batch_size: 32" in hparams and "seed: 0" in hparams
    ckpt = read_ckpt(run / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)
    untrained = LabCNN().state_dict()  # same init seed as the run
    for k, v in untrained.items():
        assert torch.equal(ckpt[INITIAL_STATE_KEY][k], v), k
    assert ckpt["hyper_parameters"]["config"]["optimizer"]["lr"] == 0.01


def test_same_seed_same_metrics(make_cfg, tmp_path):
    a = train(make_cfg("+trainer.limit_train_batches=5", out=tmp_path / "a"))
    b = train(make_cfg("+trainer.limit_train_batches=5", out=tmp_path / "b"))
    c = train(make_cfg("+trainer.limit_train_batches=5", "seed=1", out=tmp_path / "c"))
    keys = ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert [a[k] for k in keys] != [c[k] for k in keys]


def test_train_shift_and_fast_dev_run(make_cfg):
    # a Trainer argument without "+" (issue 18): the trainer section takes every argument of Trainer
    metrics = train(make_cfg("data.train_shift=3", "trainer.fast_dev_run=true", "callbacks=none"))
    assert "test/acc" in metrics


def test_no_logger_runs_with_the_default_callbacks(make_cfg, tmp_path, caplog):
    """``logger=none`` (documented) must just work: the LR monitor, which needs a logger, is left out."""
    cfg = make_cfg("logger=none", "callbacks=[model_checkpoint,lr_monitor]", "+trainer.limit_train_batches=3")
    with caplog.at_level("INFO", logger="shiftprobe.app.train"):
        metrics = train(cfg)
    assert "test/acc" in metrics and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "learning-rate monitor" in caplog.text and not (tmp_path / "run" / "csv").exists()


@pytest.mark.parametrize("name", ["fdr", "limit"])
def test_debug_presets_run_end_to_end(mnist_root, tmp_path, name):
    """``debug=fdr`` and ``debug=limit`` with every callback but the progress bar (the tests turn it off):
    the run ends cleanly, with the measurement on the preset's subset."""
    callbacks = "callbacks=[model_checkpoint,on_exception,lr_monitor,shift_probe]"
    overrides = [o if not o.startswith("callbacks=") else callbacks for o in test_overrides(mnist_root, tmp_path)]
    fast = ["callbacks.shift_probe.figures=false", "callbacks.shift_probe.progress=false", "shift=small"]
    metrics = train(compose_config("train", [*overrides, f"debug={name}", *fast], tmp_path))
    assert "test/acc" in metrics
    results = json.loads((tmp_path / "results.json").read_text())["families"]["translation"]
    checkpoints = sorted(p.name for p in tmp_path.glob("checkpoints/*.ckpt"))
    if name == "fdr":  # Lightning's fast_dev_run writes no checkpoints; no untrained control
        assert checkpoints == [] and "untrained" not in results
        assert results["n_images"] == 64
    else:
        assert checkpoints == ["best.ckpt", "last.ckpt"] and "untrained" in results
        assert read_ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 10
        assert results["n_images"] == 200


def test_resume_from_last_checkpoint(make_cfg, tmp_path):
    train(make_cfg(out=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    steps = read_ckpt(last)["global_step"]
    train(make_cfg(f"ckpt_path={last}", "trainer.max_epochs=2", out=tmp_path / "second"))
    resumed = read_ckpt(tmp_path / "second" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps
    first_init = read_ckpt(last)[INITIAL_STATE_KEY]
    for k, v in resumed[INITIAL_STATE_KEY].items():
        assert torch.equal(v, first_init[k])


@pytest.mark.parametrize("first, second", [(["+trainer.gradient_clip_val=1e9"], []), ([], ["+trainer.gradient_clip_val=1e9"])])
def test_resume_across_automatic_and_manual_optimization(make_cfg, tmp_path, first, second):
    """The module steps its optimizer itself (manual optimization) unless gradients are clipped or
    accumulated; a checkpoint of either mode resumes in the other with global_step counted on, and a
    clip that never bites gives the very weights of the manual step."""
    train(make_cfg(*first, out=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    steps = read_ckpt(last)["global_step"]
    assert steps > 0
    train(make_cfg(f"ckpt_path={last}", "trainer.max_epochs=2", *second, out=tmp_path / "second"))
    resumed = read_ckpt(tmp_path / "second" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps
    train(make_cfg("trainer.max_epochs=2", out=tmp_path / "straight"))
    straight = read_ckpt(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k


def test_eval_uses_the_checkpoint_settings(make_cfg, tmp_path):
    trained = train(make_cfg("model=blurpool", "optimizer.lr=0.01", out=tmp_path / "run"))
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    # the eval command line names the default model: the checkpoint's blurpool settings must win
    cfg = make_cfg(f"ckpt_path={best}", config_name="eval", out=tmp_path / "eval")
    assert cfg.model.pool == "max"
    metrics = evaluate(cfg)
    assert cfg.model.pool == "blur"
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"])


def test_eval_requires_an_existing_checkpoint(make_cfg, tmp_path):
    with pytest.raises(ShiftProbeError, match="ckpt_path"):
        evaluate(make_cfg(config_name="eval"))
    with pytest.raises(ShiftProbeError, match="no such checkpoint"):
        evaluate(make_cfg(f"ckpt_path={tmp_path}/nope.ckpt", config_name="eval"))


BAD = [
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1"),
    ("shift.max_shift=-1", "shift.max_shift=-1"),
    ("shift.max_shift=28", "shift.max_shift=28"),
    ("shift.mode=wrap", "shift.mode='wrap'"),
    ("shift.pattern=spiral", "shift.pattern='spiral'"),
    ("data.train_shift=-1", "data.train_shift=-1"),
    ("data.val_size=0", "data.val_size=0"),
    ("data.seed=abc", "data.seed='abc'"),
    ("optimizer=sgd optimizer.momentum=1.5", "optimizer.momentum=1.5"),
]


@pytest.mark.parametrize("overrides,named", BAD)
def test_bad_input_stops_before_training(make_cfg, tmp_path, overrides, named):
    with pytest.raises(ShiftProbeError) as err:
        train(make_cfg(*overrides.split()))
    msg = str(err.value)
    assert msg.startswith(named) and "use" in msg
    assert not (tmp_path / "run").exists()  # nothing was built or written


def test_data_root_that_is_a_file(make_cfg, tmp_path):
    f = tmp_path / "mnist.txt"
    f.write_text("not a folder")
    with pytest.raises(ShiftProbeError, match="data.root=.*is a file"):
        train(make_cfg(f"data.root={f}"))


def test_missing_files_offline(make_cfg, tmp_path):
    with pytest.raises(ShiftProbeError) as err:
        train(make_cfg(f"data.root={tmp_path / 'empty'}"))
    msg = str(err.value)
    assert all(name in msg for name in FILES) and "MNIST/raw" in msg and "MNIST_ROOT" in msg


def test_corrupted_file(make_cfg, mnist_copy):
    path = mnist_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ShiftProbeError) as err:
        train(make_cfg(f"data.root={mnist_copy}"))
    assert str(path) in str(err.value) and "Delete it" in str(err.value)


def test_divergence_stops_with_a_message(make_cfg, tmp_path):
    with pytest.raises(ShiftProbeError) as err:
        train(make_cfg("optimizer.lr=1e3"))
    msg = str(err.value)
    assert "diverged" in msg and "optimizer.lr=1000" in msg and "lower" in msg
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


# -- the command line ------------------------------------------------------------------------------
def cli(script: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True, env=env, timeout=240
    )


@pytest.mark.slow
def test_cli_train_then_eval(mnist_root, tmp_path):
    run_dir = tmp_path / "cli_run"
    args = [a for a in test_overrides(mnist_root, run_dir) if not a.startswith("paths.output_dir")]
    args[args.index("logger=csv")] = "logger=many"
    done = cli("train.py", *args, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (
        run_dir / "checkpoints" / "best.ckpt"
    ).is_file()
    events = list((run_dir / "train").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in events:
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags().get("tensors", []))
    assert {"train/loss_step", "val/acc", "val/loss", "test/acc", "train/acc"} <= tags
    assert "hp_metric" not in tags
    hparams = (run_dir / "train" / "hparams.yaml").read_text()
    assert "optimizer.lr" in hparams and "choice.optimizer: adam" in hparams

    eval_dir = tmp_path / "cli_eval"
    eargs = [a for a in args if not a.startswith("trainer.max_epochs")]
    done = cli("eval.py", *eargs, f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"hydra.run.dir={eval_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test/acc" in done.stdout


def test_cli_bad_trainer_is_short(tmp_path):
    """Lightning's refusal of the trainer, after the preflight, is one line too (the preflight's lines:
    ``test_preflight``; Hydra's composition errors: ``test_command_line``)."""
    args = ["trainer=gpu"] if not torch.cuda.is_available() else ["trainer.accelerator=tpu"]
    expected = "error: trainer"
    done = cli("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 1
    assert expected in done.stderr
    # one line (Hydra's own message for an unknown group option listed every option, one per line)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_an_accelerator_whose_library_is_missing_is_one_line(make_cfg, tmp_path):
    """``trainer.accelerator=tpu`` without torch_xla: Lightning's ImportError came as Hydra's multi-line
    instantiation error (``test_cli_bad_trainer_is_short`` tries it where a CUDA GPU exists)."""
    import importlib.util

    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    with pytest.raises(ShiftProbeError) as err:
        train(make_cfg("trainer.accelerator=tpu"))
    msg = str(err.value)
    assert msg.startswith("trainer settings (accelerator='tpu'") and "torch_xla" in msg and "\n" not in msg


def test_cli_offline_missing_files(tmp_path):
    done = cli(
        "train.py", f"data.root={tmp_path}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: MNIST files are missing" in done.stderr and "MNIST_ROOT" in done.stderr


@pytest.mark.realdata
def test_real_mnist_short_training(tmp_path):
    root = os.environ.get("MNIST_ROOT")
    if not root:
        pytest.skip("real MNIST not available: set MNIST_ROOT to the folder holding MNIST/raw/")
    out = tmp_path / "real"
    cfg = compose_config(
        "train",
        [
            f"data.root={root}",
            "data.download=false",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=200",
            "+trainer.enable_progress_bar=false",
            "logger=csv",
            "callbacks=[model_checkpoint]",
            f"paths.output_dir={out}",
        ],
        out,
    )
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.9
