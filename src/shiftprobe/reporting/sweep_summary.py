"""Summarise a multirun sweep: every job's ``results.json`` and the overrides that made it.

``summarize_sweep(sweep_dir)`` finds the jobs (any folder below ``sweep_dir`` holding
``.hydra/overrides.yaml`` or ``results.json``), groups them by configuration (their overrides without
``seed``), and writes ``summary.csv`` (one row per job), ``summary.md`` (per configuration, mean ± std
over seeds) and comparison plots. Jobs whose results are missing or unreadable are listed, not fatal.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEED_KEYS = ("seed",)
LAYERS = ("conv1", "conv2", "fc1", "logits")
SCORE_BY_LAYER = {"conv1": "equivariance_score", "conv2": "equivariance_score", "fc1": "invariance_score", "logits": "invariance_score"}


@dataclass
class Job:
    path: Path
    overrides: list[str]
    results: dict | None = None
    problem: str | None = None

    @property
    def seed(self) -> str:
        for item in self.overrides:
            key, _, value = item.partition("=")
            if key.lstrip("+~") in SEED_KEYS:
                return value
        return "default"

    common: tuple[str, ...] = ()

    @property
    def config(self) -> str:
        """The job's configuration: its overrides without the seed and without those every job of the
        sweep shares (``default`` when nothing is left)."""
        rest = [
            o
            for o in self.overrides
            if o.partition("=")[0].lstrip("+~") not in SEED_KEYS and o not in self.common
        ]
        return " ".join(sorted(rest)) or "default"


@dataclass
class Summary:
    jobs: list[Job]
    rows: list[dict] = field(default_factory=list)
    configs: dict[str, list[Job]] = field(default_factory=dict)

    @property
    def broken(self) -> list[Job]:
        return [j for j in self.jobs if j.results is None]


def find_jobs(sweep_dir: Path) -> list[Job]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist; pass outputs/multirun/<date>/<time>")
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob("results.json")}
    jobs = []
    for path in sorted(dirs, key=_job_sort_key):
        overrides_file = path / ".hydra" / "overrides.yaml"
        overrides = []
        if overrides_file.is_file():
            try:
                overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
            except yaml.YAMLError as err:
                jobs.append(Job(path, [], problem=f"unreadable .hydra/overrides.yaml ({err.__class__.__name__})"))
                continue
        job = Job(path, overrides)
        results_file = path / "results.json"
        if not results_file.is_file():
            job.problem = "no results.json (job failed or still running)"
        else:
            try:
                job.results = json.loads(results_file.read_text())
                if not isinstance(job.results, dict) or "summary" not in job.results:
                    raise ValueError("no 'summary' key")
            except (json.JSONDecodeError, ValueError) as err:
                job.results, job.problem = None, f"broken results.json ({err})"
        jobs.append(job)
    return jobs


def _job_sort_key(path: Path):
    return [int(part) if part.isdigit() else part for part in path.parts]


def _get(d, *keys):
    for key in keys:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def job_row(job: Job) -> dict:
    r = job.results
    row = {
        "config": job.config,
        "seed": job.seed,
        "path": str(job.path),
        "accuracy": r.get("accuracy"),
        "conv2_aligned_even": _get(r, "parity", "even", "conv2", "aligned_rel"),
        "conv2_nearest_aligned_odd": _get(r, "parity", "odd", "conv2", "nearest_aligned_rel"),
        "consistency": _get(r, "summary", "logits", "consistency"),
        "consistency_two_shifts": _get(r, "summary", "logits", "consistency_two_shifts"),
    }
    for layer in LAYERS:
        row[f"{layer}_{SCORE_BY_LAYER[layer]}"] = _get(r, "summary", layer, SCORE_BY_LAYER[layer])
    for ring in r.get("radial", []):
        row[f"fc1_invariance_r{ring['radius']}"] = _get(ring, "fc1", "invariance_score")
    return row


def mean_std(values) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def fmt_mean_std(values, digits: int = 3) -> str:
    mean, std, n = mean_std(values)
    if mean is None:
        return "n/a"
    if abs(mean) < 1e-3 and mean != 0:
        return f"{mean:.1e} ± {std:.0e}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(sweep_dir) -> Summary:
    jobs = find_jobs(Path(sweep_dir))
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    for job in jobs:
        job.common = tuple(sorted(common))
    summary = Summary(jobs)
    for job in jobs:
        if job.results is not None:
            summary.rows.append(job_row(job))
            summary.configs.setdefault(job.config, []).append(job)
    return summary


def radii(summary: Summary) -> list[int]:
    found = set()
    for row in summary.rows:
        found |= {int(k.rsplit("_r", 1)[1]) for k in row if k.startswith("fc1_invariance_r")}
    return sorted(r for r in found if r > 0)


def summary_markdown(summary: Summary) -> str:
    rs = radii(summary)
    by_config = {}
    for row in summary.rows:
        by_config.setdefault(row["config"], []).append(row)
    lines = ["# Sweep summary", ""]
    lines.append(
        f"{len(summary.rows)} finished job(s) in {len(by_config)} configuration(s); mean ± std over seeds "
        "(n = number of seeds)."
    )
    common = summary.jobs[0].common if summary.jobs else ()
    if common:
        lines.append("")
        lines.append("Overrides shared by every job: " + " ".join(f"`{o}`" for o in common) + ".")
    lines.append("")
    head = ["configuration", "n", "accuracy"] + [f"fc1 inv. r={r}" for r in rs]
    head += ["conv2 aligned_rel even", "conv2 nearest aligned odd", "consistency", "consistency (2 shifts)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for config, rows in by_config.items():
        cells = [f"`{config}`", str(len(rows)), fmt_mean_std([r["accuracy"] for r in rows], 4)]
        cells += [fmt_mean_std([r.get(f"fc1_invariance_r{k}") for r in rows]) for k in rs]
        cells += [
            fmt_mean_std([r["conv2_aligned_even"] for r in rows]),
            fmt_mean_std([r["conv2_nearest_aligned_odd"] for r in rows]),
            fmt_mean_std([r["consistency"] for r in rows]),
            fmt_mean_std([r["consistency_two_shifts"] for r in rows]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "fc1 inv. r=k: fc1 invariance score (1 = invariant, 0 = as different as unrelated images) over the "
        "shifts with max(|dy|, |dx|) = k. conv2 aligned_rel even: exact-equivariance error at even shifts "
        "(< 1e-5 = exact); odd: the best integer alignment's error at odd shifts (stride 2 cannot follow them).",
    ]
    if summary.broken:
        lines += ["", "## Jobs without usable results", ""]
        lines += [f"- `{job.path}` ({job.config}, seed {job.seed}): {job.problem}" for job in summary.broken]
    return "\n".join(lines) + "\n"


def write_csv(summary: Summary, path: Path) -> None:
    keys: list[str] = []
    for row in summary.rows:
        keys += [k for k in row if k not in keys]
    keys.append("problem")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in summary.rows:
            writer.writerow(row)
        for job in summary.broken:
            writer.writerow({"config": job.config, "seed": job.seed, "path": str(job.path), "problem": job.problem})


def plot_comparison(summary: Summary, path: Path):
    """Score vs radius per layer (one panel each), one line per configuration (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(LAYERS), 3.8), layout="constrained")
    axes = fig.subplots(1, len(LAYERS))
    for ax, layer in zip(axes, LAYERS, strict=True):
        metric = SCORE_BY_LAYER[layer]
        for config, jobs in summary.configs.items():
            per_radius: dict[int, list[float]] = {}
            for job in jobs:
                for ring in job.results.get("radial", []):
                    value = _get(ring, layer, metric)
                    if value is not None:
                        per_radius.setdefault(int(ring["radius"]), []).append(float(value))
            if not per_radius:
                continue
            xs = sorted(per_radius)
            stats = [mean_std(per_radius[x]) for x in xs]
            means = [s[0] for s in stats]
            stds = [s[1] for s in stats]
            (line,) = ax.plot(xs, means, marker="o", label=config)
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(f"{layer}: {metric.replace('_', ' ')}")
        ax.set_xlabel("shift radius max(|dy|, |dx|) [px]")
        ax.set_ylim(top=1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (1 = unchanged, 0 = control)")
    axes[-1].legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    return fig


def summarize_sweep(sweep_dir, out_dir=None) -> Summary:
    """Write ``summary.csv``, ``summary.md`` and ``summary_radial.png`` into ``out_dir`` (default: the sweep)."""
    summary = summarize(sweep_dir)
    out = Path(out_dir) if out_dir else Path(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(summary, out / "summary.csv")
    (out / "summary.md").write_text(summary_markdown(summary))
    if summary.rows:
        plot_comparison(summary, out / "summary_radial.png")
    return summary
