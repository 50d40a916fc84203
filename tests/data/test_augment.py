"""Training-time rotations and flips (``data.train_rotate``, ``data.train_flip``, issue 10): the batched
operations against independent references, the data module's seeded per-batch draws (order shift, rotate,
flip; one generator each, saved for resume), training batches only, and the config checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import VAL_SIZE, compose_config, test_overrides

import shiftprobe.app.train as train_module
from shiftprobe.app.config_checks import validate_config
from shiftprobe.app.evaluate import DATA_KEYS_FROM_RUN, apply_run_config
from shiftprobe.data import (
    AUGMENT_STREAM,
    FLIP_STREAM,
    ROTATE_STREAM,
    MNISTDataModule,
    flip_per_sample,
    rotate_per_sample,
    stream_seed,
)
from shiftprobe.errors import ShiftProbeError
from shiftprobe.probe.resample import rotate as family_rotate
from shiftprobe.probe.resample import shift_images_per_sample

FLOAT32_TOL = 1e-5


def reference_rotation(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """An independent float64 rotation of one ``H x W`` image, written out pixel by pixel: the output
    pixel (row i, column j) reads the input, bilinearly with zeros outside, at the point that a
    counter-clockwise (as displayed) rotation by ``angle_deg`` about ((H-1)/2, (W-1)/2) moves onto it."""
    h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = math.radians(angle_deg)
    out = np.zeros((h, w))

    def pixel(r: int, c: int) -> float:
        return float(image[r, c]) if 0 <= r < h and 0 <= c < w else 0.0

    for i in range(h):
        for j in range(w):
            x, y = j - cx, i - cy  # x to the right, y down
            # CCW as displayed moves (x, y) to (x cos t + y sin t, -x sin t + y cos t); invert it
            src_x, src_y = x * math.cos(t) - y * math.sin(t), x * math.sin(t) + y * math.cos(t)
            c, r = src_x + cx, src_y + cy
            c0, r0 = math.floor(c), math.floor(r)
            fc, fr = c - c0, r - r0
            out[i, j] = (
                (1 - fr) * (1 - fc) * pixel(r0, c0)
                + (1 - fr) * fc * pixel(r0, c0 + 1)
                + fr * (1 - fc) * pixel(r0 + 1, c0)
                + fr * fc * pixel(r0 + 1, c0 + 1)
            )
    return out


@pytest.fixture
def batch():
    return torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))


# -- the batched operations -----------------------------------------------------------------------
def test_rotation_against_an_independent_float64_reference(batch):
    angles = torch.tensor([30.0, -17.5, 45.0, -45.0, 3.0])
    got = rotate_per_sample(batch, angles)
    for b, angle in enumerate(angles.tolist()):
        ref = reference_rotation(batch[b, 0].double().numpy(), angle)
        assert np.abs(got[b, 0].double().numpy() - ref).max() < FLOAT32_TOL, angle
    # one grid for the batch is the same as rotating image by image (no per-image loop in the code)
    for b, angle in enumerate(angles.tolist()):
        torch.testing.assert_close(got[b : b + 1], rotate_per_sample(batch[b : b + 1], torch.tensor([angle])))


def test_rotation_by_zero_is_the_identity_and_quarter_turns_are_rot90(batch):
    torch.testing.assert_close(rotate_per_sample(batch, torch.zeros(5)), batch, atol=FLOAT32_TOL, rtol=0)
    for k, angle in ((1, 90.0), (2, 180.0), (3, 270.0), (3, -90.0)):
        expected = torch.rot90(batch, k, dims=(-2, -1))
        torch.testing.assert_close(rotate_per_sample(batch, torch.full((5,), angle)), expected,
                                   atol=FLOAT32_TOL, rtol=0)
    # non-square: half a turn is both flips
    wide = batch[..., :20]
    torch.testing.assert_close(rotate_per_sample(wide, torch.full((5,), 180.0)), wide.flip(-2, -1),
                               atol=FLOAT32_TOL, rtol=0)


def test_rotation_is_the_measurements_rotation(batch):
    """The augmentation rotates as the Rotation family measures (same centre, direction, fill)."""
    angles = [-40.0, -5.0, 12.5, 33.0, 45.0]
    got = rotate_per_sample(batch, torch.tensor(angles))
    for b, angle in enumerate(angles):
        torch.testing.assert_close(got[b], family_rotate(batch[b], angle), atol=FLOAT32_TOL, rtol=0)


def test_flip_per_sample(batch):
    flags = torch.tensor([True, False, True, False, False])
    got = flip_per_sample(batch, flags)
    for b, flag in enumerate(flags.tolist()):
        assert torch.equal(got[b], batch[b].flip(-1) if flag else batch[b])
    with pytest.raises(ValueError, match="one per image"):
        flip_per_sample(batch, flags[:2])
    with pytest.raises(ValueError, match="one angle per image"):
        rotate_per_sample(batch, torch.zeros(2))


# -- the data module's draws ----------------------------------------------------------------------
def make_dm(root, **kw):
    kw = {"download": False, "batch_size": 32, "eval_batch_size": 50, "val_size": VAL_SIZE} | kw
    dm = MNISTDataModule(root=str(root), **kw)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def fake_trainer(completed: int | None = None, epoch: int = 0, training: bool = True):
    """Just enough of a Trainer for the data module: training, its epoch and rank (and the batches done)."""
    trainer = SimpleNamespace(training=training, current_epoch=epoch, global_rank=0, world_size=1)
    if completed is not None:
        current = SimpleNamespace(completed=completed)
        trainer.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=current)))
    return trainer


def stream(seed: int, key: int, epoch: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, key, epoch, 0))


def transferred(dm, batch):
    return dm.on_after_batch_transfer(batch, 0)[0]


@pytest.mark.parametrize("training", [True, False])
def test_shift_then_rotate_then_flip_on_training_batches_only(mnist_root, training):
    dm = make_dm(mnist_root, train_shift=2, train_rotate=30.0, train_flip=True, seed=3)
    dm.trainer = fake_trainer(training=training)
    images, labels = next(iter(dm.val_dataloader()))
    x = transferred(dm, (images, labels))
    plain = images.unsqueeze(1).float() / 255
    if not training:
        assert torch.equal(x, plain)
        return
    n = len(images)
    # each augmentation from its own generator, seeded from (seed, its stream, epoch 0, rank 0)
    shifts = torch.randint(-2, 3, (n, 2), generator=stream(3, AUGMENT_STREAM))
    angles = (2 * torch.rand(n, generator=stream(3, ROTATE_STREAM), dtype=torch.float64) - 1) * 30.0
    flips = torch.rand(n, generator=stream(3, FLIP_STREAM)) < 0.5
    expected = flip_per_sample(rotate_per_sample(shift_images_per_sample(plain, shifts, "crop"), angles), flips)
    assert torch.equal(x, expected)
    assert 0 < int(flips.sum()) < n and angles.abs().max() <= 30.0 and (angles > 0).any() and (angles < 0).any()


def test_each_augmentation_has_its_own_stream(mnist_root):
    """Switching rotation on changes neither the shifts nor the flips drawn for the same batches."""
    images = next(iter(make_dm(mnist_root).train_dataloader()))[0]
    outputs = {}
    for name, kw in {"shift": {"train_shift": 2}, "shift+rotate": {"train_shift": 2, "train_rotate": 20.0},
                     "flip": {"train_flip": True}, "rotate+flip": {"train_rotate": 20.0, "train_flip": True},
                     "rotate": {"train_rotate": 20.0}}.items():
        dm = make_dm(mnist_root, seed=1, **kw)
        dm.trainer = fake_trainer()
        outputs[name] = transferred(dm, (images, torch.zeros(len(images))))
    angles = (2 * torch.rand(len(images), generator=stream(1, ROTATE_STREAM), dtype=torch.float64) - 1) * 20.0
    assert torch.equal(outputs["shift+rotate"], rotate_per_sample(outputs["shift"], angles))
    assert torch.equal(outputs["rotate"], rotate_per_sample(images.unsqueeze(1).float() / 255, angles))
    flips = torch.rand(len(images), generator=stream(1, FLIP_STREAM)) < 0.5
    assert torch.equal(outputs["rotate+flip"], flip_per_sample(outputs["rotate"], flips))
    assert torch.equal(outputs["flip"], flip_per_sample(images.unsqueeze(1).float() / 255, flips))


def test_same_seed_same_draws_other_seed_other_draws(mnist_root):
    images = next(iter(make_dm(mnist_root).train_dataloader()))[0]
    runs = []
    for seed in (0, 0, 1):
        dm = make_dm(mnist_root, train_rotate=45.0, train_flip=True, seed=seed)
        dm.trainer = fake_trainer()
        runs.append(torch.stack([transferred(dm, (images, torch.zeros(len(images)))) for _ in range(3)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0][0], runs[0][1])  # every batch draws afresh


def test_a_small_square_turns_by_the_drawn_angle_within_the_range(mnist_root):
    """A small bright square 10 px right of the centre: after the augmentation its mass stays on its
    circle about the centre, turned by the drawn angle, so every angle seen is within [-D, D] and both
    signs occur."""
    degrees = 25.0
    image = torch.zeros(64, 28, 28, dtype=torch.uint8)
    image[:, 13:16, 23:26] = 255  # centre (13.5, 13.5): the square's centre is at x = +10.5, y = +0.5
    dm = make_dm(mnist_root, train_rotate=degrees, seed=7)
    dm.trainer = fake_trainer()
    x = transferred(dm, (image, torch.zeros(64)))[:, 0].double()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = x.sum(dim=(1, 2))
    cy = (x * rows.double()).sum(dim=(1, 2)) / mass - 13.5
    cx = (x * cols.double()).sum(dim=(1, 2)) / mass - 13.5
    before = math.degrees(math.atan2(-0.5, 10.5))  # as displayed (y up): counter-clockwise positive
    seen = torch.rad2deg(torch.atan2(-cy, cx)) - before
    drawn = (2 * torch.rand(64, generator=stream(7, ROTATE_STREAM), dtype=torch.float64) - 1) * degrees
    assert (mass > 8.0).all()  # (9 pixels of 1) spread over neighbours, not lost
    radius = (cx**2 + cy**2).sqrt()
    assert (radius - math.hypot(10.5, 0.5)).abs().max() < 0.3  # on its circle about the centre
    assert (seen - drawn).abs().max() < 0.25  # the drawn angle, up to bilinear sampling (0.07 degrees here)
    assert seen.abs().max() <= degrees + 0.5 and seen.max() > degrees / 2 and seen.min() < -degrees / 2


@pytest.mark.parametrize("stopped_inside_a_batch", [False, True])
def test_angle_and_flip_generators_are_saved_and_restored(mnist_root, stopped_inside_a_batch):
    """As the shifts' (tests/data/test_mnist.py): a resumed run continues with the same angles and flips."""
    kw = {"train_rotate": 40.0, "train_flip": True, "seed": 5}
    dm = make_dm(mnist_root, **kw)
    dm.trainer = fake_trainer(completed=3 if stopped_inside_a_batch else 4)

    def draw(module):
        return torch.cat([module.augment_angles(8, 40.0), module.augment_flips(8).double()])

    drawn = [draw(dm) for _ in range(4)]
    state = dm.state_dict()
    assert {"rotate_epoch", "rotate_state", "flip_epoch", "flip_state"} <= set(state)
    assert "augment_state" not in state  # the shifts' generator has not drawn: nothing to save
    after = [draw(dm) for _ in range(2)]
    resumed = make_dm(mnist_root, **kw)
    resumed.trainer = fake_trainer()
    resumed.load_state_dict(state)
    again = [draw(resumed) for _ in range(2)]
    expected = [drawn[3], after[0]] if stopped_inside_a_batch else after
    for a, b in zip(expected, again, strict=True):
        assert torch.equal(a, b)
    fresh = make_dm(mnist_root, **kw)
    fresh.trainer = fake_trainer(epoch=1)
    dm.trainer = fake_trainer(epoch=1)
    assert torch.equal(draw(dm), draw(fresh))  # a new epoch starts from its own seed


def test_resumed_run_continues_with_the_same_rotations_and_flips(make_cfg, tmp_path):
    """Two epochs in one run, or one epoch then a resume from last.ckpt: the same weights, bit for bit."""
    # monitor=null: last.ckpt at the end of every epoch (with val/acc it follows only improvements)
    common = ("data.train_rotate=30", "data.train_flip=true", "test=false", "+trainer.limit_train_batches=4",
              "+trainer.limit_val_batches=1", "callbacks.model_checkpoint.monitor=null")
    train_module.train(make_cfg(*common, "trainer.max_epochs=2", out=tmp_path / "straight"))
    train_module.train(make_cfg(*common, out=tmp_path / "first"))
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train_module.train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={first}", out=tmp_path / "resumed"))
    ckpts = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
             for run in ("straight", "resumed")]
    assert ckpts[0]["global_step"] == ckpts[1]["global_step"] == 8
    for key, value in ckpts[0]["state_dict"].items():
        assert torch.equal(value, ckpts[1]["state_dict"][key]), key
    assert {"rotate_state", "flip_state"} <= set(ckpts[1]["MNISTDataModule"])
    # the draws reach the weights (the equality above is not trivial): other angles, other weights
    other = make_cfg(*common, "trainer.max_epochs=2", "data.train_rotate=10", out=tmp_path / "other")
    train_module.train(other)
    weights = torch.load(tmp_path / "other" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(not torch.equal(v, weights["state_dict"][k]) for k, v in ckpts[0]["state_dict"].items())


class Recorder:
    """Every batch a fit / test sees, after ``on_after_batch_transfer``, by split."""

    def __init__(self, dm):
        self.seen = {"train": [], "val": [], "test": []}
        real = dm.on_after_batch_transfer

        def hook(batch, dataloader_idx=0):
            out = real(batch, dataloader_idx)
            trainer = dm.trainer
            split = "train" if trainer.training else "test" if trainer.testing else "val"
            if not trainer.sanity_checking:
                self.seen[split].append(out[0].clone())
            return out

        dm.on_after_batch_transfer = hook


def fit_and_record(mnist_root, **kw) -> dict:
    import lightning as L

    from shiftprobe.lit.module import ShiftProbeModule
    from shiftprobe.models import LabCNN

    L.seed_everything(0)
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=VAL_SIZE, batch_size=32,
                         eval_batch_size=50, **kw)
    rec = Recorder(dm)
    module = ShiftProbeModule(net=LabCNN(), optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return {k: torch.cat(v) for k, v in rec.seen.items()}


def test_validation_and_test_batches_are_untouched_in_a_real_fit(mnist_root):
    plain = fit_and_record(mnist_root)
    augmented = fit_and_record(mnist_root, train_rotate=45.0, train_flip=True)
    assert plain["train"].shape == augmented["train"].shape == (64, 1, 28, 28)
    for split in ("val", "test"):
        assert len(plain[split]) > 0 and torch.equal(augmented[split], plain[split]), split
    assert not torch.equal(augmented["train"], plain["train"])


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override,shown",
    [
        ("data.train_rotate=200", "data.train_rotate=200"),
        ("data.train_rotate=-5", "data.train_rotate=-5"),
        ("data.train_rotate=nan", "data.train_rotate=nan"),
        ("data.train_flip=1", "data.train_flip=1"),
        ("data.train_flip=maybe", "data.train_flip='maybe'"),
    ],
)
def test_bad_values_fail_in_one_line(override, shown, mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), override], tmp_path)
    with pytest.raises(ShiftProbeError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{shown} is not allowed: use ") and "\n" not in msg


@pytest.mark.parametrize("override", ["data.train_rotate=0", "data.train_rotate=180", "data.train_rotate=12.5",
                                      "data.train_flip=true", "experiment=rotate_augmented"])
def test_good_values_pass(override, mnist_root, tmp_path):
    validate_config(compose_config("train", [*test_overrides(mnist_root, tmp_path), override], tmp_path))


def test_experiment_and_eval_keep_the_runs_augmentation(mnist_root, tmp_path):
    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "experiment=rotate_augmented"], tmp_path)
    assert cfg.data.train_rotate == 45 and cfg.data.train_flip is False and "rotation" in cfg.transform
    assert {"train_rotate", "train_flip"} <= set(DATA_KEYS_FROM_RUN)
    ev = compose_config("eval", [*test_overrides(mnist_root, tmp_path), "ckpt_path=x.ckpt"], tmp_path)
    apply_run_config(ev, {"data": {"train_rotate": 45, "train_flip": True}})
    assert ev.data.train_rotate == 45 and ev.data.train_flip is True


def test_rotate_augmented_experiment_runs_end_to_end(make_cfg, tmp_path):
    """``python train.py experiment=rotate_augmented`` (synthetic data, a few batches): trains with
    rotations and measures translations and rotations."""
    import json

    train_module.train(make_cfg(
        "experiment=rotate_augmented", "callbacks=[shift_probe]", "callbacks.shift_probe.figures=false",
        "callbacks.shift_probe.progress=false", "callbacks.shift_probe.max_images=20",
        "callbacks.shift_probe.untrained=false", "shift=small", "+trainer.limit_train_batches=3",
        out=tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["families"]) == ["translation", "rotation"]
    assert results["families"]["rotation"]["groups"]["param"][0]["param"] == -45.0
