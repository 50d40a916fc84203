"""Shared fixtures: small synthetic MNIST files in the real idx format, and config composition.

The synthetic set (600 train / 200 test images) is written as ``MNIST/raw/*-idx?-ubyte`` so the real
torchvision loader reads it. Each class is a bright blob at its own place, jittered, with noise:
easy to learn in a few steps, so end-to-end tests can check that training actually learns.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from kernel_jitter import ENV as KERNEL_JITTER_ENV
from kernel_jitter import kernel_jitter
from omegaconf import DictConfig, open_dict, read_write

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
#: test folders marked ``numerics`` (float results of networks: run again by .ci/run on the scalar kernels)
NUMERICS_DIRS = ("probe", "models")
CONF_DIR = ROOT / "conf"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

N_TRAIN, N_TEST, VAL_SIZE = 600, 200, 100
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images: class ``c`` is a 6x6 blob centred on one of ten places, jittered +-1 px."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        cy = 6 + 4 * (int(c) // 5) * 2 + int(rng.integers(-1, 2))
        cx = 4 + 4 * (int(c) % 5) + int(rng.integers(-1, 2))
        images[i, cy - 3 : cy + 3, cx - 2 : cx + 3] = 255
    return images, labels


def write_idx_images(path: Path, images: np.ndarray) -> None:
    with path.open("wb") as fh:
        fh.write(struct.pack(">iiii", 2051, len(images), 28, 28))
        fh.write(images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    with path.open("wb") as fh:
        fh.write(struct.pack(">ii", 2049, len(labels)))
        fh.write(labels.astype(np.uint8).tobytes())


def write_synthetic_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        write_idx_images(raw / f"{split}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A folder holding ``MNIST/raw/`` with the four synthetic files (read-only use, shared)."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("synthetic_mnist"))


@pytest.fixture
def mnist_copy(mnist_root, tmp_path) -> Path:
    """A private copy of the synthetic files, for tests that break or remove them."""
    dst = tmp_path / "mnist_copy"
    shutil.copytree(mnist_root, dst)
    return dst


def compose_config(config_name: str = "train", overrides=(), output_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as Hydra would, with the Hydra section set for resolvers
    (``hydra.runtime.output_dir`` = ``output_dir`` when given, as in a real run)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg


def test_overrides(mnist_root: Path, out_dir: Path) -> list[str]:
    """Fast settings: synthetic data, tiny batches, one epoch, CSV logger, output in ``out_dir``."""
    return [
        f"data.root={mnist_root}",
        "data.download=false",
        "data.batch_size=32",
        "data.eval_batch_size=100",
        f"data.val_size={VAL_SIZE}",
        "trainer.max_epochs=1",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        "callbacks=[model_checkpoint]",
        f"paths.output_dir={out_dir}",
    ]


test_overrides.__test__ = False  # a helper, not a test


@pytest.fixture
def make_cfg(mnist_root, tmp_path):
    """``make_cfg(*overrides, config_name="train", out=None)`` -> a composed test config."""

    def _make(*overrides: str, config_name: str = "train", out: Path | None = None) -> DictConfig:
        out_dir = Path(out) if out is not None else tmp_path / "run"
        return compose_config(config_name, test_overrides(mnist_root, out_dir) + list(overrides), out_dir)

    return _make


def pytest_collection_modifyitems(config, items):
    """Every test under ``NUMERICS_DIRS`` is marked ``numerics`` (others may carry the marker themselves)."""
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        if len(parts) > 1 and parts[0] in NUMERICS_DIRS:
            item.add_marker(pytest.mark.numerics)


@pytest.fixture(autouse=True)
def _kernel_jitter_when_asked(request):
    """With ``SHIFTPROBE_KERNEL_JITTER=1``, a ``numerics`` test runs under ``kernel_jitter`` (a CPU whose
    kernels round differently by shape; tests/kernel_jitter.py)."""
    if os.environ.get(KERNEL_JITTER_ENV) == "1" and request.node.get_closest_marker("numerics"):
        with kernel_jitter():
            yield
    else:
        yield
