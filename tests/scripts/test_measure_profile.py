"""scripts/measure_profile.py: the phase profile of the lab measurement, on a small synthetic MNIST."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import measure_profile  # noqa: E402

from shiftprobe.probe import accumulator, capture, engine, metrics  # noqa: E402


def test_profile_reports_every_phase_and_restores_the_engine(mnist_root, capsys):
    originals = {
        "sort_channels": engine.sort_channels, "run": capture.LayerCapture.run,
        "aligned": engine._Probe.aligned, "update": accumulator.PairMetricAccumulator.update,
    }
    assert measure_profile.main(["--root", str(mnist_root), "--images", "6", "--train-batches", "0"]) == 0
    out = capsys.readouterr().out
    for phase in measure_profile.PHASE_NAMES + ("python / other", "total (CPU of the serial run)"):
        assert phase in out
    assert engine.sort_channels is metrics.sort_channels is originals["sort_channels"]
    assert capture.LayerCapture.run is originals["run"] and engine._Probe.aligned is originals["aligned"]
    assert accumulator.PairMetricAccumulator.update is originals["update"]


def test_sort_bench_times_each_method_per_layer(mnist_root, capsys):
    argv = ["--root", str(mnist_root), "--images", "2", "--train-batches", "0", "--sort", "--no-profile", "--reps", "1"]
    assert measure_profile.main(argv) == 0
    out = capsys.readouterr().out
    for layer in ("conv1", "conv2"):
        for method in ("today (torch.stack + sort)", "sort (np.stack + sort)", "select"):
            assert f"{layer:6s} {method}" in out
