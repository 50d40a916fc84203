"""``lie_layerwise.png``: the layer-wise decomposition of the output's Lie derivative as bar charts.

One panel per generator; in each, one bar per module (and per gap between modules with anything in
it), in the order they run: its contribution's rel with the 95 % interval, trained solid and untrained
hatched beside it; a horizontal line marks the end-to-end value. Log axis (a contribution of exactly 0
has no bar). Drawn only from what results.json holds. Like :mod:`shiftprobe.reporting.figures`, a plain
Agg-backed ``Figure``; the PNG is written to a temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from shiftprobe.reporting.figures import DPI, _new_figure
from shiftprobe.reporting.lie_table import _networks, _nonzero
from shiftprobe.reporting.markdown import Z95, _finite

NAME = "lie_layerwise"
#: one bar's width, as a share of a slot (two networks side by side)
BAR = 0.38


def _bars(results: Mapping) -> list[str]:
    """The modules, then the gaps with anything in them (the table's rows)."""
    block = results["lie_derivative"]
    generators = list(block.get("generators") or [])
    gaps = [
        label
        for label, entry in (block.get("layerwise_between") or {}).items()
        if _nonzero(entry, generators)
    ]
    return list(block.get("layerwise") or {}) + gaps


def _contribution(net: Mapping, name: str, generator: str) -> tuple[float, float]:
    """rel and its 95 % half-width (NaN where missing or 0: no bar on a log axis)."""
    entry = (net.get("layerwise") or {}).get(name) or (net.get("layerwise_between") or {}).get(name) or {}
    stats = (entry.get(generator) or {}).get("contribution") or {}
    rel, se = _finite(stats.get("rel")), _finite(stats.get("rel_se"))
    if rel is None or rel <= 0:
        return math.nan, 0.0
    return rel, (Z95 * se if se is not None else 0.0)


def plot_lie_layerwise(results: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """The figure (see the module docstring); saved to ``path`` when given."""
    block = results["lie_derivative"]
    generators = list(block.get("generators") or [])
    names = _bars(results)
    nets = _networks(results)
    fig = _new_figure(max(6.0, 0.55 * len(names) + 2.0), 2.6 * len(generators) + 0.6)
    axes = fig.subplots(len(generators), 1, squeeze=False)[:, 0]
    slots = np.arange(len(names))
    for ax, g in zip(axes, generators, strict=True):
        for k, (label, net) in enumerate(nets):
            values = [_contribution(net, name, g) for name in names]
            rel = np.array([v[0] for v in values])
            hw = np.array([v[1] for v in values])
            low = np.minimum(hw, rel * (1 - 1e-3))  # a log axis cannot draw an interval below 0
            ax.bar(
                slots + (k - (len(nets) - 1) / 2) * BAR,
                rel,
                BAR,
                yerr=[low, hw],
                capsize=2,
                color=f"C{k}",
                hatch="//" if label == "untrained" else None,
                alpha=0.9,
                label=label,
            )
            total = _finite(
                ((net.get("layerwise_total") or {}).get(g) or {}).get("end_to_end", {}).get("rel")
            )
            if total and total > 0:
                ax.axhline(total, color=f"C{k}", linestyle="--", linewidth=1, label=f"end-to-end ({label})")
        if np.isfinite([_contribution(n, name, g)[0] for _, n in nets for name in names]).any():
            ax.set_yscale("log")
        unit = (block.get("units") or {}).get(g, "")
        ax.set_title(f"{g}: contribution to the output's Lie derivative (rel, {unit})", fontsize=9)
        ax.set_xticks(slots, names, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    if path is not None:
        save_atomically(fig, path, dpi)
    return fig


def save_atomically(fig: Figure, path: str | Path, dpi: int = DPI) -> None:
    """``fig`` as a PNG at ``path``: written to a temporary name in the same folder, renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_lie_figures(results: Mapping, out_dir: str | Path, dpi: int = DPI) -> dict[str, Figure]:
    """``{"lie_layerwise": Figure}`` (saved as ``lie_layerwise.png`` in ``out_dir``) when results hold the
    layer-wise decomposition, else ``{}``."""
    block = results.get("lie_derivative") or {}
    if not block.get("layerwise") or not block.get("generators"):
        return {}
    return {NAME: plot_lie_layerwise(results, Path(out_dir) / f"{NAME}.png", dpi)}
