"""Summarise a multirun sweep (``summarize_sweep``): jobs grouped by configuration (their overrides without
``seed`` and those every job shares), seeds the unit of replication, figures named by the layers the
results declare (the head's input, the classifier, the deepest stride-2 map), never by a fixed list."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shiftprobe.atomic import atomic_write, save_figure, write_text
from shiftprobe.probe.migrate import migrate
from shiftprobe.probe.thresholds import EXACT_TOL
from shiftprobe.reporting import verdicts as v
from shiftprobe.reporting.format import fmt, run_ci, table

SEED_KEYS = ("seed",)
LEVEL = 0.95
NEEDS_SEEDS = "n/a (needs 2+ shared seeds)"
ONE_SEED = "1 seed: no interval over seeds; run seed=0,1,2"
#: pseudo-layer names resolved per job: the representation entering the head, and the classifier
HEAD_INPUT, CLASSIFIER = "head input", "classifier"


# -- Student-t interval ----------------------------------------------------------------------------
def _t_central_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` degrees of freedom, exactly (a finite series).

    With θ = atan(t / √df) and c = cos²θ (Abramowitz & Stegun 26.7.3):
    odd df: (2/π)(θ + sinθ cosθ (1 + (2/3)c + (2·4)/(3·5)c² + ... up to c^((df-3)/2)));
    even df: sinθ (1 + (1/2)c + (1·3)/(2·4)c² + ... up to c^((df-2)/2)).
    """
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    odd = df % 2
    series, term = (1.0 if df >= 2 else 0.0), 1.0
    for k in range(1, (df - 2 - odd) // 2 + 1):  # the factors above: (2k)/(2k+1) odd, (2k-1)/(2k) even
        term *= (2 * k - 1 + odd) / (2 * k + odd) * (cos * cos)
        series += term
    return min(1.0, 2.0 / math.pi * (theta + sin * cos * series) if odd else sin * series)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with integer ``df`` >= 1, to about 1e-12: the exact
    distribution function inverted by bisection (no scipy needed)."""
    if not 0.5 < q < 1:
        raise ValueError(f"q must be in (0.5, 1), got {q}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    target = 2 * q - 1
    lo, hi = 0.0, 2.0
    while _t_central_mass(hi, df) < target:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_central_mass(mid, df) < target else (lo, mid)
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided t-interval (``low``/``high`` are None when n < 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    @property
    def half(self) -> float | None:
        return None if self.low is None else 0.5 * (self.high - self.low)


def _finite(values) -> list[float]:
    """The finite values of ``values`` as floats (None and NaN dropped)."""
    return [float(x) for x in values if x is not None and math.isfinite(float(x))]


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and its ``level`` Student-t interval: mean ± t_{(1+level)/2, n-1} · s / √n (s: sample std,
    ddof=1). Missing and non-finite values are dropped."""
    vals = _finite(values)
    n = len(vals)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = math.fsum(vals) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Paired:
    """A configuration minus the baseline, seed by seed over ``seeds`` (those both have a value for)."""

    diff: Interval
    seeds: tuple[str, ...]

    @property
    def verdict(self) -> str:
        return verdict(self.diff)


def verdict(diff: Interval) -> str:
    """``higher`` / ``lower`` when the difference's interval excludes 0, else ``no detectable difference``."""
    if diff.n < 2 or diff.low is None:
        return NEEDS_SEEDS
    if diff.low > 0:
        return "higher"
    if diff.high < 0:
        return "lower"
    return "no detectable difference"


def paired_difference(baseline: dict, other: dict, level: float = LEVEL) -> Paired:
    """``other - baseline`` over the seeds present (with a finite value) in both ``{seed: value}`` maps;
    a seed only one of them ran is not used."""
    base = {s: v for s, v in baseline.items() if _finite([v])}
    oth = {s: v for s, v in other.items() if _finite([v])}
    seeds = tuple(sorted(set(base) & set(oth), key=_seed_sort_key))
    diffs = [float(oth[s]) - float(base[s]) for s in seeds]
    return Paired(t_interval(diffs, level), seeds)


def _seed_sort_key(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


# -- jobs ------------------------------------------------------------------------------------------
@dataclass
class Job:
    path: Path
    overrides: list[str]
    results: dict | None = None  # schema 3 (``shiftprobe.probe.migrate``)
    problem: str | None = None
    common: tuple[str, ...] = ()

    @property
    def seed(self) -> str:
        return next((o.partition("=")[2] for o in self.overrides if _is_seed(o)), "default")

    @property
    def config(self) -> str:
        """The job's configuration: its overrides without the seed and without those every job of the
        sweep shares (``default`` when nothing is left)."""
        rest = [o for o in self.overrides if not _is_seed(o) and o not in self.common]
        return " ".join(sorted(rest)) or "default"


def _is_seed(override: str) -> bool:
    return override.partition("=")[0].lstrip("+~") in SEED_KEYS


@dataclass
class Summary:
    jobs: list[Job]
    rows: list[dict] = field(default_factory=list)
    configs: dict[str, list[Job]] = field(default_factory=dict)
    baseline: str | None = None
    within: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # job path -> intervals

    @property
    def broken(self) -> list[Job]:
        return [j for j in self.jobs if j.results is None]

    def values(self, config: str, key: str) -> dict[str, float]:
        """``{seed: value}`` of one figure for one configuration (a seed run twice: their mean)."""
        per_seed: dict[str, list[float]] = {}
        for row in self.rows:
            if row["config"] == config:
                per_seed.setdefault(row["seed"], []).extend(_finite([row.get(key)]))
        return {s: math.fsum(x) / len(x) for s, x in per_seed.items() if x}

    def seeds(self, config: str) -> list[str]:
        return sorted({row["seed"] for row in self.rows if row["config"] == config}, key=_seed_sort_key)

    def stats(self, config: str, key: str) -> Interval:
        return t_interval(self.values(config, key).values())

    def paired(self, config: str, key: str) -> Paired:
        return paired_difference(self.values(self.baseline, key), self.values(config, key))

    @property
    def finished(self) -> list[Job]:
        return [job for jobs in self.configs.values() for job in jobs]

    def common_name(self, resolve) -> str | None:
        """``resolve(results)`` if every finished job gives the same name, else None."""
        names = {resolve(job.results) for job in self.finished}
        return names.pop() if len(names) == 1 else None


class UnknownBaseline(ValueError):
    """``--baseline`` names no configuration of the sweep."""


def _read_job(path: Path) -> Job:
    overrides_file, results_file = path / ".hydra" / "overrides.yaml", path / "results.json"
    overrides = []
    if overrides_file.is_file():
        try:
            overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
        except yaml.YAMLError as err:
            return Job(path, [], problem=f"unreadable .hydra/overrides.yaml ({err.__class__.__name__})")
    if not results_file.is_file():
        return Job(path, overrides, problem="no results.json (job failed or still running)")
    job = Job(path, overrides)
    try:
        data = json.loads(results_file.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        job.results = migrate(data)
        if not v.families(job.results):
            raise ValueError("no measured family")
    except (json.JSONDecodeError, ValueError) as err:
        job.results, job.problem = None, f"broken results.json ({err})"
    return job


def _job_sort_key(path: Path):
    return [int(part) if part.isdigit() else part for part in path.parts]


# -- a job's figures -------------------------------------------------------------------------------
def head_input_layer(section: dict | None) -> str | None:
    """The first vector probe point that is not the classifier (a dense layer, or the pooled features
    after global pooling): the representation the head classifies."""
    section = section or {}
    return next((layer for layer in v.vector_layers(section) if layer != v.classifier(section)), None)


def stride2_layer(section: dict | None) -> str | None:
    """The deepest conv layer of stride 2, whose exact test holds at even shifts only."""
    convs = [layer for layer in v.conv_layers(section or {}) if v.stride_of(section, layer) in (2, (2, 2))]
    return convs[-1] if convs else None


def _primary(results: dict) -> dict:
    return v.families(results).get(results.get("primary")) or next(iter(v.families(results).values()), {})


def _resolve(results: dict, layer: str) -> str | None:
    section = v.translation(results) or _primary(results)
    if layer == HEAD_INPUT:
        return head_input_layer(section)
    return section.get("classifier") if layer == CLASSIFIER else layer


def _sources(r: dict):
    """(column, the results.json block holding it, its key there) for every figure of a job."""
    t = v.translation(r) or {}
    yield "accuracy", _primary(r), "accuracy"
    if (conv := stride2_layer(t)) is not None:
        even, odd = v.block(t, "parity", "even") or {}, v.block(t, "parity", "odd") or {}
        yield f"{conv}_aligned_even", even.get(conv), "aligned_rel"
        yield f"{conv}_nearest_aligned_odd", odd.get(conv), "nearest_aligned_rel"
    clf = (t.get("summary") or {}).get(t.get("classifier"))
    yield "consistency", clf, "consistency"
    yield "consistency_two_shifts", clf, "consistency_two_shifts"
    if isinstance(clf, dict) and "consistency_correct" in clf:
        yield "consistency_correct", clf, "consistency_correct"
    for layer in t.get("layers", []):
        yield f"{layer}_{v.key_metric(t, layer)}", (t.get("summary") or {}).get(layer), v.key_metric(t, layer)
    head = head_input_layer(t)
    for prefix in ([head, "head_input"] if head else []):
        for ring in v.blocks(t, "radius"):
            yield f"{prefix}_invariance_r{ring['param']}", ring.get(head), "invariance_score"
    yield "classifier_invariance", (t.get("summary") or {}).get(t.get("classifier")), "invariance_score"
    for name, section in v.transform_families(r).items():  # transform=[...]: each other family's summary
        summary, head = section.get("summary") or {}, head_input_layer(section)
        for label, layer in ("head_input", head), ("classifier", section.get("classifier")):
            yield f"family_{name}_{label}_invariance", summary.get(layer), "invariance_score"


def labelled_jobs(sweep_dir) -> tuple[list[Job], set[str]]:
    """The sweep's jobs, each knowing the overrides every job shares (so ``job.config`` is its
    configuration's label), and those shared overrides."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist; pass "
                                "outputs/multirun/<date>/<time>")
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob("results.json")}
    jobs = [_read_job(path) for path in sorted(dirs, key=_job_sort_key)]
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    for job in jobs:
        job.common = tuple(sorted(common))
    return jobs, common


def summarize(sweep_dir, baseline: str | None = None) -> Summary:
    """Read the sweep; ``baseline`` (a configuration label, default the first configuration) is what the
    paired differences are taken against. Raises ``UnknownBaseline`` naming the labels there are."""
    jobs, common = labelled_jobs(sweep_dir)
    summary = Summary(jobs)
    for job in (j for j in jobs if j.results is not None):  # a csv row and its within-run intervals
        row = {"config": job.config, "seed": job.seed, "path": str(job.path)}
        within = summary.within[row["path"]] = {}
        for column, block, key in _sources(job.results):
            row[column] = block.get(key) if isinstance(block, dict) else None
            if (ci := run_ci(block, key)) is not None:
                within[column] = ci
        summary.rows.append(row)
        summary.configs.setdefault(job.config, []).append(job)
    summary.baseline = _pick_baseline(summary, baseline, common)
    return summary


def _pick_baseline(summary: Summary, baseline: str | None, common: set[str]) -> str | None:
    if baseline is None:
        return next(iter(summary.configs), None)
    # the order of the overrides and those every job shares do not matter: `seed` never does
    wanted = " ".join(sorted(o for o in baseline.strip().strip("`").split() if o not in common)) or "default"
    if wanted in summary.configs:
        return wanted
    known = ", ".join(f'"{c}"' for c in summary.configs) or "none (no finished job)"
    raise UnknownBaseline(f'--baseline "{baseline}" is no configuration of this sweep; the configurations '
                          f"are: {known}")


def radii(summary: Summary, prefix: str = "head_input") -> list[int]:
    """The non-zero radii of the ``<prefix>_invariance_r<k>`` columns."""
    start = f"{prefix}_invariance_r"
    found = {int(k.rsplit("_r", 1)[1]) for row in summary.rows for k in row if k.startswith(start)}
    return sorted(r for r in found if r > 0)


# -- markdown --------------------------------------------------------------------------------------
def _num(x: float, digits: int, sign: bool = False) -> str:
    spec = ".1e" if x != 0 and abs(x) < 10 ** -digits else f".{digits}f"
    return format(x, ("+" if sign else "") + spec)


def fmt_interval(iv: Interval, digits: int = 3, sign: bool = False) -> str:
    """``0.762 ± 0.008 (95 % CI [0.754, 0.770], n=3)``; one value: ``0.700 (n=1)``."""
    if iv.mean is None:
        return "n/a"
    if iv.low is None:
        return f"{_num(iv.mean, digits, sign)} (n=1)"
    return (
        f"{_num(iv.mean, digits, sign)} ± {_num(iv.half, digits)} "
        f"({LEVEL * 100:.0f} % CI [{_num(iv.low, digits, sign)}, {_num(iv.high, digits, sign)}], n={iv.n})"
    )


def _metrics(summary: Summary) -> list[tuple[str, str, int]]:
    """(csv column, table heading, digits) of the figures summary.md reports."""
    out = [("accuracy", "accuracy", 4)]
    head = summary.common_name(lambda r: _resolve(r, HEAD_INPUT))
    clf = summary.common_name(lambda r: _resolve(r, CLASSIFIER)) or CLASSIFIER
    if head is not None:
        out += [(f"{head}_invariance_r{k}", f"{head} inv. r={k}", 3) for k in radii(summary, head)]
    else:  # architectures differ: compare what enters each head, and the classifiers
        out += [(f"head_input_invariance_r{k}", f"head input inv. r={k}", 3) for k in radii(summary)]
        out.append(("classifier_invariance", f"{clf} inv.", 3))
    for conv in dict.fromkeys(stride2_layer(v.translation(j.results)) for j in summary.finished):
        if conv is not None:
            out += [(f"{conv}_aligned_even", f"{conv} aligned_rel even", 3),
                    (f"{conv}_nearest_aligned_odd", f"{conv} nearest aligned odd", 3)]
    out += [("consistency", "consistency", 3), ("consistency_two_shifts", "consistency (2 shifts)", 3)]
    if any(row.get("consistency_correct") is not None for row in summary.rows):
        out.append(("consistency_correct", "consistency (correct only)", 3))
    families = dict.fromkeys(k for row in summary.rows for k in row if k.startswith("family_"))
    return out + [(k, _family_label(k, clf), 3) for k in families]


def _family_label(key: str, clf: str) -> str:
    """``family_rot90_head_input_invariance`` -> ``rot90: head input inv.`` (the classifier's: ``clf``)."""
    body = key[len("family_"):-len("_invariance")]
    if body.endswith("_head_input"):
        return f"{body[:-len('_head_input')]}: head input inv."
    return f"{body[:-len('_classifier')]}: {clf} inv."


def _single_seed_cell(summary: Summary, config: str, key: str, digits: int) -> str:
    row = next(r for r in summary.rows if r["config"] == config)
    value = _finite([row.get(key)])
    if not value:
        return "n/a"
    ci = summary.within[row["path"]].get(key)
    if ci is None:
        return _num(value[0], digits)
    return f"{_num(value[0], digits)} (within-run 95 % CI [{_num(ci[0], digits)}, {_num(ci[1], digits)}])"


def _legend(summary: Summary, metrics) -> str:
    """What the table's columns are, named by the layers of this sweep's results."""
    keys = [k for k, _, _ in metrics]
    clf = summary.common_name(lambda r: _resolve(r, CLASSIFIER)) or CLASSIFIER
    heads = sorted({h for j in summary.finished if (h := _resolve(j.results, HEAD_INPUT))})
    if any(k.startswith("head_input_") for k in keys):
        text = ("head input inv. r=k: the invariance score of the first vector probe point, what the head "
                f"classifies ({', '.join(heads)} here); {clf} inv.: the classifier's, over all non-zero "
                "shifts;")
    else:
        text = f"{heads[0] if heads else 'head input'} inv. r=k: {heads[0] if heads else 'the head input'}"
    text += (" invariance score (1 = invariant, 0 = as different as unrelated images) over the shifts with "
             "max(|dy|, |dx|) = k.")
    for conv in (k[: -len("_aligned_even")] for k in keys if k.endswith("_aligned_even")):
        text += (f" {conv} aligned_rel even: exact-equivariance error at even shifts (< {fmt(EXACT_TOL)} = "
                 "exact); odd: the best integer alignment's error at odd shifts (stride 2 cannot follow "
                 "them).")
    if any(k.startswith("family_") for k in keys):
        text += (f" <family>: head input / {clf} inv.: that family's invariance score over all its "
                 "parameters (transform=[...]).")
    return text


def summary_markdown(summary: Summary) -> str:
    metrics = _metrics(summary)
    lines = ["# Sweep summary", "",
             f"{len(summary.rows)} finished job(s) in {len(summary.configs)} configuration(s). Each figure: "
             "the mean over seeds ± the half-width of its 95 % Student-t interval (t quantile with n - 1 "
             "degrees of freedom × std / √n), then the interval itself and n, the number of seeds with that "
             "figure."]
    common = summary.jobs[0].common if summary.jobs else ()
    if common:
        lines += ["", "Overrides shared by every job: " + " ".join(f"`{o}`" for o in common) + "."]
    head = ["configuration", "n", "seeds"] + [label for _, label, _ in metrics]
    single, rows = [], []
    for config in summary.configs:
        seeds = summary.seeds(config)
        seed_cell = ", ".join(seeds)
        if len(seeds) == 1:
            single.append(config)
            seed_cell += f" ({ONE_SEED})"
        cells = [f"`{config}`", str(len(seeds)), seed_cell]
        cells += [_single_seed_cell(summary, config, key, digits) if len(seeds) == 1
                  else fmt_interval(summary.stats(config, key), digits) for key, _, digits in metrics]
        rows.append(cells)
    lines += ["", *table(head, rows), "", _legend(summary, metrics)]
    if single:
        lines += [
            "",
            "Configurations with one seed (" + ", ".join(f"`{c}`" for c in single) + f"): {ONE_SEED}. Their "
            "figures are that run's; the interval beside a figure, where results.json has one, is within "
            "the run (over its test images) and does not include the variation between trainings.",
        ]
    lines += _paired_markdown(summary, metrics)
    if summary.broken:
        lines += ["", "## Jobs without usable results", ""]
        lines += [f"- `{job.path}` ({job.config}, seed {job.seed}): {job.problem}" for job in summary.broken]
    return "\n".join(lines) + "\n"


def _paired_markdown(summary: Summary, metrics) -> list[str]:
    base = summary.baseline
    others = [c for c in summary.configs if c != base]
    if base is None or not others:
        return []
    lines = [
        "",
        f"## Paired differences to the baseline `{base}`",
        "",
        f"Each configuration minus `{base}`, seed by seed over the seeds both ran (a seed only one of them "
        "ran is not used): the mean difference ± the half-width of its 95 % t-interval. Verdict: `higher` "
        "or `lower` (the figure's value, whether that is better depends on the figure) when the interval "
        "excludes 0, else `no detectable difference` (not a proof of equality: with few seeds only large "
        "differences are detectable). Other baseline: "
        '`python scripts/summarize.py <sweep> --baseline "<configuration>"`.',
        "",
    ]
    rows = []
    for config in others:
        pairs = [(label, digits, summary.paired(config, key)) for key, label, digits in metrics]
        if all(p.diff.n < 2 for _, _, p in pairs):  # nothing to compare: one line, not one per figure
            shared = sorted(set(summary.seeds(config)) & set(summary.seeds(base)), key=_seed_sort_key)
            rows.append([f"`{config}`", "all", ", ".join(shared) or "none", "n/a", NEEDS_SEEDS])
            continue
        rows += [[f"`{config}`", label, ", ".join(p.seeds) or "none",
                  fmt_interval(p.diff, digits, sign=True) if p.diff.n >= 2 else "n/a", p.verdict]
                 for label, digits, p in pairs]
    head = ["configuration", "figure", "shared seeds", f"difference to `{base}` (95 % CI)",
            f"verdict vs `{base}`"]
    return lines + table(head, rows)


# -- csv and plot ----------------------------------------------------------------------------------
def write_csv(summary: Summary, path: Path) -> None:
    """summary.csv: a row per job, its figures and its configuration's interval and paired difference,
    then a row per job without usable results."""
    metric_keys = [k for k in _ordered_keys(summary.rows) if k not in ("config", "seed", "path")]
    per_config: dict[str, dict] = {}
    for config in summary.configs:
        agg = {"n_seeds": len(summary.seeds(config)), "baseline": summary.baseline}
        for key in metric_keys:
            agg |= _interval_columns(key, summary.stats(config, key))
        for key in metric_keys if config != summary.baseline else ():
            p = summary.paired(config, key)
            agg |= _interval_columns(f"{key}_diff", p.diff) | {f"{key}_verdict": p.verdict}
        per_config[config] = agg
    rows = []
    for row in summary.rows:
        full = dict(row)
        for key, (lo, hi) in summary.within[row["path"]].items():
            full[f"{key}_within_ci_low"], full[f"{key}_within_ci_high"] = lo, hi
        rows.append(full | per_config[row["config"]])
    keys = (_ordered_keys(rows) or ["config", "seed", "path"]) + ["problem"]
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        for job in summary.broken:
            writer.writerow({"config": job.config, "seed": job.seed, "path": str(job.path),
                             "problem": job.problem})


def _interval_columns(prefix: str, iv: Interval) -> dict:
    return {f"{prefix}_mean": iv.mean, f"{prefix}_ci_low": iv.low, f"{prefix}_ci_high": iv.high,
            f"{prefix}_n": iv.n}


def _ordered_keys(rows: list[dict]) -> list[str]:
    """Every key of ``rows``, in the order they first appear."""
    return list(dict.fromkeys(k for row in rows for k in row))


def radial_band(summary: Summary, config: str, layer: str, metric: str):
    """(radii, means, lows, highs) of one configuration's score vs radius: over seeds, the mean and its
    95 % t-interval; with one seed, the run's value and its within-run interval (None where it has none)."""
    per_radius: dict[int, dict[str, list[float]]] = {}
    within: dict[int, tuple[float, float] | None] = {}
    for job in summary.configs[config]:
        name = _resolve(job.results, layer)
        for ring in v.blocks(v.translation(job.results), "radius"):
            value = _finite([(ring.get(name) or {}).get(metric)]) if name else []
            if value:
                radius = int(ring["param"])
                per_radius.setdefault(radius, {}).setdefault(job.seed, []).extend(value)
                within[radius] = run_ci(ring.get(name), metric)
    out = ([], [], [], [])
    for x in sorted(per_radius):
        iv = t_interval([math.fsum(s) / len(s) for s in per_radius[x].values()])
        low, high = within[x] if iv.n == 1 and within.get(x) is not None else (iv.low, iv.high)
        for column, value in zip(out, (x, iv.mean, low, high), strict=True):
            column.append(value)
    return out


def _panels(summary: Summary) -> list[tuple[str, str]]:
    """(layer, score) per panel: every layer where all jobs measured the same ones, else the head's input
    and the classifier."""
    layers = summary.common_name(lambda r: tuple((v.translation(r) or {}).get("layers", [])))
    if layers:
        t = v.translation(next(iter(summary.configs.values()))[0].results)
        return [(layer, v.key_metric(t, layer)) for layer in layers]
    return [(HEAD_INPUT, "invariance_score"), (CLASSIFIER, "invariance_score")]


def plot_comparison(summary: Summary, path: Path):
    """Score vs radius per layer (one panel each), one line per configuration: the mean over seeds with its
    95 % t-interval as a band (one seed: the within-run interval where results.json has one)."""
    from matplotlib.figure import Figure

    panels = _panels(summary)
    fig = Figure(figsize=(4.2 * len(panels), 4.1), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (layer, metric) in zip(axes, panels, strict=True):
        for config in summary.configs:
            xs, means, lows, highs = radial_band(summary, config, layer, metric)
            if not xs:
                continue
            n = len(summary.seeds(config))
            (line,) = ax.plot(xs, means, marker="o", label=config + (f" (n={n})" if n > 1 else " (1 seed)"))
            banded = [i for i, lo in enumerate(lows) if lo is not None]
            if banded:
                ax.fill_between([xs[i] for i in banded], [lows[i] for i in banded],
                                [highs[i] for i in banded], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"{layer}: {metric.replace('_', ' ')}")
        ax.set_xlabel("shift radius max(|dy|, |dx|) [px]")
        ax.set_ylim(top=1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (1 = unchanged, 0 = control)")
    axes[-1].legend(fontsize=8, loc="best")
    fig.suptitle("mean over seeds; band: 95 % Student-t interval over seeds (1 seed: within-run interval "
                 "where recorded)", fontsize=9)
    save_figure(fig, path, dpi=120)
    return fig


def summarize_sweep(sweep_dir, out_dir=None, baseline: str | None = None) -> Summary:
    """Write ``summary.csv``, ``summary.md`` and ``summary_radial.png`` into ``out_dir`` (default: the sweep);
    ``baseline``: the configuration the others are compared with (default: the first one)."""
    summary = summarize(sweep_dir, baseline)
    out = Path(out_dir) if out_dir else Path(sweep_dir)
    write_csv(summary, out / "summary.csv")
    write_text(out / "summary.md", summary_markdown(summary))
    if summary.rows:
        plot_comparison(summary, out / "summary_radial.png")
    return summary
