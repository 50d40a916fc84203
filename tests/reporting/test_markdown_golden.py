"""results.md is the same text as before schema 3, for the same results.

``data/<name>.json.gz`` are results.json files written by shiftprobe 0.2 (the reference runs of
f301417: lab crop grid, circular roll, axis with the Lie derivative's layer-wise decomposition, the
families on the lab net, the rot_pool net with the Lie derivative, a foreign CNN, the random pattern,
and the test factory's newer keys: untrained initialisations, near-constant predictions, a score-vs-rel
disagreement), trimmed to small shifts and rounded to 5 significant digits to stay small;
``data/<name>.md.gz`` is the results.md the code of commit 0f13115 (before schema 3) wrote from each.
Today's code renders the migrated file: the text must be the same. (The one intended change to
results.md, one z for every 95 % interval, ``shiftprobe.probe.stats.Z95`` = 1.959964 instead of
results.md's own 1.96, moves no half-width of these files; of the full reference set it moves one,
from ± 0.0052 to ± 0.0051.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from shiftprobe.probe.results import Results
from shiftprobe.reporting.markdown import results_markdown

DATA = Path(__file__).parent / "data"
NAMES = sorted(p.name[: -len(".json.gz")] for p in DATA.glob("*.json.gz"))


def _read(name: str, suffix: str):
    return gzip.decompress((DATA / f"{name}.{suffix}.gz").read_bytes()).decode("utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_results_md_text_is_unchanged(name):
    old = json.loads(_read(name, "json"))
    expected = _read(name, "md")
    assert results_markdown(old) == expected  # the 0.2 dict, migrated on the way in
    assert Results(old).markdown() == expected


def test_the_fixtures_cover_every_part_of_the_report():
    text = "\n".join(_read(name, "md") for name in NAMES)
    for part in ("## Key scores by radius", "## What holds exactly", "## Geometry inferred", "untrained, 3 inits",
                 "**Warning: the untrained network's predictions are near-constant**", "**the two disagree",
                 "itself an exact test", "## Rotations by 90°", "## Sub-pixel shifts", "## Flips", "## Rotations (",
                 "## Lie derivative", "### Layer-wise decomposition", "no translation measured"):
        assert part in text, part
