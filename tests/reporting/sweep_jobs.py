"""A fake sweep job for the sweep-summary tests: ``.hydra/overrides.yaml`` and a results.json."""

from __future__ import annotations

import json
from pathlib import Path


def write_job(sweep: Path, num: int, overrides: list[str], results: dict | str | None) -> None:
    """Job ``num`` of ``sweep``: its overrides, and ``results`` as results.json (a dict as JSON, a string as
    it is, None: no results.json, a failed job)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if results is not None:
        (job / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
