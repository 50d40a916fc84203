"""scripts/sort_floor.py (the sorting test's CPU floor) and scripts/measure_profile.py (CPU time by phase), on a small synthetic MNIST."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sort_floor  # noqa: E402


def test_sort_floor_counts_the_values_the_measurement_sorts(mnist_root, capsys):
    assert sort_floor.main(["--root", str(mnist_root), "--images", "3"]) == 0
    out = capsys.readouterr().out
    # 81 shifts x (10 channels x 24 x 24 conv1 + 20 channels x 8 x 8 conv2) per image
    assert out.startswith(f"{81 * (10 * 576 + 20 * 64):,} values per image")
    assert "20,000 image-network measurements" in out


def test_sort_floor_times_the_shared_sort_too(mnist_root, capsys):
    assert sort_floor.main(["--root", str(mnist_root), "--images", "2"]) == 0
    assert "shared sort (sorted_windows, from the padded maps)" in capsys.readouterr().out


def test_measure_profile_times_every_phase(mnist_root, capsys):
    import measure_profile

    before = measure_profile.pairs.PairComputer.batch_updates
    assert measure_profile.main(["--root", str(mnist_root), "--images", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out[1:-1]] == [phase.split("  ")[0] for _, _, phase in measure_profile.PHASES]
    assert out[-1].startswith("measure_family, in all")
    assert measure_profile.pairs.PairComputer.batch_updates is before  # the timers are removed again
