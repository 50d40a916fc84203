"""The lab CNN's variants, training-time shift augmentation and the experiment presets.

What ``tests/probe/test_metrics.py`` (lab conv exactness in crop mode, circular conv exactness on a few
roll shifts) and ``tests/probe/test_geometry.py`` (inferred strides and fields) already check is not
repeated here. This file covers: the variants as the config builds them, the blurpool exactness
pattern on its certified region, the circular variant measured end to end with roll and crop shifts,
that the measurement follows the variant, that ``data.train_shift`` shifts the training batches of a
real ``Trainer.fit`` (and nothing else), and the ``experiment`` presets (``untrained`` run end to end
without a checkpoint).
"""

import json

import hydra
import lightning as L
import pytest
import torch
from conftest import VAL_SIZE, compose_config, test_overrides

from shiftprobe.app.train import train
from shiftprobe.data import MNISTDataModule
from shiftprobe.lit.module import ShiftProbeModule
from shiftprobe.models.lab import LabCNN
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.engine import subset_indices
from shiftprobe.probe.geometry import LayerGeometry, infer_geometry
from shiftprobe.probe.measure import measure_family
from shiftprobe.probe.metrics import aligned_rel_at, aligned_values
from shiftprobe.probe.resample import shift_images
from shiftprobe.probe.translation import Translation

EXACT = 1e-5
SHIFTS_UP_TO_2 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    return torch.rand(4, 1, 28, 28, generator=g)


@pytest.fixture(scope="module")
def uint8_set():
    g = torch.Generator().manual_seed(6)
    return (torch.rand(24, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (24,), generator=g)


# -- the variants as the config builds them -------------------------------------------------------------
@pytest.mark.parametrize(
    "model,pool,padding,maps,fc1_in,crop_windows",
    [
        ("lab", "max", "valid", (24, 8), 320, True),
        ("blurpool", "blur", "valid", (24, 8), 320, True),
        ("circular", "max", "circular", (28, 14), 20 * 7 * 7, False),
    ],
)
def test_variant_from_config(tmp_path, model, pool, padding, maps, fc1_in, crop_windows):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"model={model}"], tmp_path)
    net = hydra.utils.instantiate(cfg.model)
    assert (net.pool, net.padding) == (pool, padding)
    geo = infer_geometry(net, resolve_layers(net, ["conv1", "conv2"]), (1, 28, 28))
    assert (geo["conv1"].stride, geo["conv2"].stride) == ((1, 1), (2, 2))  # inferred, not declared
    assert (net.crop_windows() is not None) is crop_windows  # the measurement's fast path: valid convolutions only
    assert net.fc1.in_features == fc1_in
    p = net.probe(torch.rand(2, 1, 28, 28))
    assert p["conv1"].shape[-1] == maps[0] and p["conv2"].shape[-1] == maps[1]
    assert (net.map_sizes["conv1"], net.map_sizes["conv2"]) == maps


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_blur_filter_size_key(tmp_path, size):
    cfg = compose_config(
        "train", [f"paths.output_dir={tmp_path}", "model=blurpool", f"model.blur_filter_size={size}"], tmp_path
    )
    net = hydra.utils.instantiate(cfg.model)
    blur1, blur2 = net.pool1[1], net.pool2[1]
    assert blur1.filter_size == blur2.filter_size == size and blur1.stride == 2
    assert blur1.kernel.shape == (10, 1, size, size)
    torch.testing.assert_close(blur1.kernel.sum((-2, -1)), torch.ones(10, 1))  # normalised per channel
    assert net.fc1.in_features == 320  # the maps stay 12x12 and 4x4 whatever the filter
    assert net(torch.rand(2, 1, 28, 28))[1].shape == (2, 20, 8, 8)


# -- blurpool: conv1 exact; conv2 exact at even shifts on its certified region -----------------------
@pytest.fixture(scope="module", params=[3, 5], ids=["blur3", "blur5"])
def blurpool(request, images):
    """A blurpool net, its inferred geometry, and its conv1 / conv2 maps for every shift up to 2."""
    torch.manual_seed(0)
    net = LabCNN(pool="blur", blur_filter_size=request.param).eval()
    geo = infer_geometry(net, resolve_layers(net, ["conv1", "conv2"]), (1, 28, 28))
    n = len(images)
    with torch.no_grad():  # one forward for every shift
        maps = net.probe(torch.cat([images] + [shift_images(images, dy, dx) for dy, dx in SHIFTS_UP_TO_2]))
    maps = {k: maps[k] for k in ("conv1", "conv2")}
    shifted = {s: {k: v[(i + 1) * n : (i + 2) * n] for k, v in maps.items()} for i, s in enumerate(SHIFTS_UP_TO_2)}
    return geo, {k: v[:n] for k, v in maps.items()}, shifted


def test_blurpool_certified_region_is_smaller_than_the_map(blurpool):
    """The reflect padding of the blur reads pixels beyond the border: conv2's outer ring is not
    certified (receptive field [2q - 1, 2q + 14] for filter 3, [2q - 2, 2q + 15] for filter 5)."""
    geo, _, _ = blurpool
    assert geo["conv1"].interior == (0, 23, 0, 23)  # before any pool: the whole map
    c2 = geo["conv2"]
    assert c2.stride == (2, 2) and c2.shape == (20, 8, 8) and not c2.circular
    assert c2.receptive_field[0] < 0  # reaches before the first pixel
    assert c2.interior == (1, 6, 1, 6)


@pytest.mark.parametrize("dy,dx", SHIFTS_UP_TO_2)
def test_blurpool_exactness(blurpool, dy, dx):
    geo, base, shifted = blurpool
    t = shifted[dy, dx]
    conv1, _ = aligned_values(base["conv1"], t["conv1"], dy, dx, geo["conv1"], "crop")
    assert conv1.max() < EXACT  # before any pool
    conv2, nearest = aligned_values(base["conv2"], t["conv2"], dy, dx, geo["conv2"], "crop")
    if dy % 2 or dx % 2:
        assert conv2 is None
        assert nearest.min() > 1e-3  # the blur does not make odd shifts exact
        return
    # the blur commutes with even shifts wherever the padding is not involved: the certified region
    assert conv2.max() < EXACT
    if (dy, dx) != (0, 0):
        # ...but not on the whole overlap: the reflect padding at the map border does not move with
        # the content (the lab's max-pool net is exact on its whole overlap: tests/probe/test_metrics.py)
        whole = LayerGeometry("conv2", "spatial", (20, 8, 8), stride=(2, 2), receptive_field=(0, 0, 0, 0),
                              interior=(0, 7, 0, 7))
        assert aligned_rel_at(base["conv2"], t["conv2"], dy // 2, dx // 2, whole, "crop").min() > 1e-3


# -- circular padding measured with roll shifts: the exact setting -------------------------------------
def test_circular_roll_measurement_is_exact(uint8_set):
    torch.manual_seed(1)
    net = LabCNN(padding="circular")
    x, y = uint8_set
    r = measure_family(net, x, y, Translation(3, mode="roll"), batch_size=8)
    assert r["config"]["mode"] == "roll" and len(r["groups"]["param"]) == 49
    assert r["geometry"]["conv1"]["circular"] and r["geometry"]["conv2"]["circular"]  # compared on the whole map
    for s in r["groups"]["param"]:
        c1, c2 = s["conv1"], s["conv2"]
        assert c1["aligned_rel_max"] < EXACT and c1["sorted_rel"] < EXACT, s  # every shift
        assert c1["equivariance_score"] == pytest.approx(1.0, abs=EXACT)
        if s["param"][0] % 2 == 0 and s["param"][1] % 2 == 0:
            assert c2["aligned_rel_max"] < EXACT and c2["sorted_rel"] < EXACT, s
        else:
            # the stride-2 pool sees another phase: neither moved nor permuted values
            assert c2["aligned_rel"] is None and c2["nearest_aligned_rel"] > 1e-3 and c2["sorted_rel"] > 1e-4, s
    assert r["summary"]["conv1"]["sorted_rel"] < EXACT


def test_circular_with_crop_shifts_is_exact_only_on_the_certified_region(uint8_set):
    """Circular padding wraps content around; a crop shift loses it instead, so the border positions
    (those whose receptive field wraps) differ and the sorted values change. The positions that see
    only image pixels are certified and exact."""
    torch.manual_seed(1)
    net = LabCNN(padding="circular")
    x, y = uint8_set
    r = measure_family(net, x, y, Translation(1, mode="crop"), batch_size=8)
    geo = r["geometry"]["conv1"]
    assert geo["circular"] and geo["interior"] == {"y": [2, 25], "x": [2, 25]}  # of a 28x28 map
    moved = [s for s in r["groups"]["param"] if s["param"] != [0, 0]]
    assert all(s["conv1"]["aligned_rel_max"] < EXACT for s in moved)
    assert all(s["conv1"]["sorted_rel"] > 1e-3 for s in moved)


# -- data.train_shift: the batches a real fit sees ------------------------------------------------------
class BatchRecorder(L.Callback):
    """Keeps the first images (after ``on_after_batch_transfer``) of every train / val / test batch."""

    def __init__(self):
        self.seen = {"train": [], "val": [], "test": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].append(batch[0].detach().clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.seen["val"].append(batch[0].detach().clone())

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["test"].append(batch[0].detach().clone())


def fit_and_record(mnist_root, train_shift: int, seed: int = 0) -> dict:
    L.seed_everything(seed)
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=VAL_SIZE, batch_size=32,
                         eval_batch_size=50, train_shift=train_shift, seed=seed)
    module = ShiftProbeModule(net=LabCNN(), optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    rec = BatchRecorder()
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[rec],
    )
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return {k: torch.cat(v) for k, v in rec.seen.items()}


@pytest.mark.slow
def test_train_shift_shifts_training_batches_only(mnist_root):
    k = 3
    plain = fit_and_record(mnist_root, train_shift=0)
    shifted = fit_and_record(mnist_root, train_shift=k)
    again = fit_and_record(mnist_root, train_shift=k)
    other_seed = fit_and_record(mnist_root, train_shift=k, seed=1)
    assert plain["train"].shape == shifted["train"].shape == (96, 1, 28, 28)
    # validation and test batches are untouched (and the same images in the same order)
    for split in ("val", "test"):
        assert torch.equal(shifted[split], plain[split]), split
    # training batches: same images in the same order, each moved by its own (dy, dx) in [-k, k]^2
    moved = 0
    for a, b in zip(plain["train"], shifted["train"], strict=True):
        candidates = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)
                      if torch.equal(shift_images(a, dy, dx), b)]
        assert candidates, "a training image is not an integer translate within the range"
        moved += (0, 0) not in candidates
    assert moved >= 0.8 * len(plain["train"])  # (0, 0) is drawn for 1 in 49 images
    assert torch.equal(shifted["train"], again["train"])  # seeded
    assert not torch.equal(shifted["train"], other_seed["train"])


# -- the experiment presets ------------------------------------------------------------------------
EXPECTED = {
    "lab": lambda c: c.model.pool == "max" and c.data.train_shift == 0 and c.optimizer.lr == 1e-3
    and c.trainer.max_epochs == 5 and c.shift.mode == "crop",
    "augmented": lambda c: c.data.train_shift == 4 == c.shift.max_shift and c.model.pool == "max",
    "blurpool": lambda c: c.model.pool == "blur" and c.model.padding == "valid" and c.model.blur_filter_size == 3,
    "circular": lambda c: c.model.padding == "circular" and c.shift.mode == "roll",
    "untrained": lambda c: c.train is False and c.test is True and c.ckpt_path is None
    and c.callbacks.shift_probe.untrained is False,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_presets(tmp_path, name):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}", f"experiment={name}"], tmp_path)
    assert cfg.task_name == name
    assert EXPECTED[name](cfg)
    assert cfg.hydra.runtime.choices.experiment == name


def test_task_names_are_distinct(tmp_path):
    names = {
        compose_config("train", [f"paths.output_dir={tmp_path}", f"experiment={n}"], tmp_path).task_name
        for n in EXPECTED
    }
    assert len(names) == len(EXPECTED) and "train" not in names


@pytest.mark.slow
def test_untrained_experiment_measures_the_initial_weights(mnist_root, tmp_path):
    out = tmp_path / "untrained"
    args = [a for a in test_overrides(mnist_root, out) if not a.startswith("callbacks=")]
    cfg = compose_config(
        "train",
        [*args, "experiment=untrained", "callbacks=[shift_probe]", "callbacks.shift_probe.max_images=40",
         "callbacks.shift_probe.figures=false", "callbacks.shift_probe.progress=false", "shift=small", "seed=3"],
        out,
    )
    metrics = train(cfg)
    assert "train/loss" not in metrics and "val/acc" not in metrics  # nothing was trained
    torch.manual_seed(3)
    net0 = LabCNN().eval()  # the network the run starts from (same seed)
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=VAL_SIZE)
    dm.setup("test")
    with torch.no_grad():
        pred = net0(dm.test_images.unsqueeze(1).float() / 255)[0].argmax(1)
    assert metrics["test/acc"] == pytest.approx((pred == dm.test_labels).float().mean().item())
    results = json.loads((out / "results.json").read_text())
    section = results["families"]["translation"]
    assert "untrained" not in section and section["n_images"] == 40  # the 'trained' block is the initial net
    assert results["subset"]["how"] == "seeded random subset" and results["subset"]["seed"] == 3
    subset = subset_indices(len(dm.test_labels), 40, results["subset"]["seed"])
    assert section["accuracy"] == pytest.approx((pred[subset] == dm.test_labels[subset]).float().mean().item())
    assert not (out / "checkpoints").exists()
