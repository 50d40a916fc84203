"""Figures of the transformation families of a results dict (``results["families"]``): ``<family>.png``.

Drawn only from what results.json holds (the network is never run). A 1-D family gets curves against
its parameter (angle, quarter turns, flip, sub-pixel offset): one line per layer, the trained network
solid and the untrained one dashed, the 95 % interval of each score as a band. Rows: the invariance
score; the sorting test's equivariance score and ``aligned_rel`` (log axis) for spatial layers where
the section has them; the classifier's consistency and accuracy on transformed images. Sub-pixel
shifts along x and y get a column each (a curve per axis and layer). A 2-D family (sub-pixel shifts
on an ``(oy, ox)`` grid) gets a heatmap per layer instead: the invariance score, trained and untrained,
and ``aligned_rel`` where measured.

Like :mod:`shiftprobe.reporting.figures`, figures are plain Agg-backed ``Figure`` objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from shiftprobe.reporting.family_report import interval, other_families, param_label, title_of, tol_of, value
from shiftprobe.reporting.figures import (
    BAND_ALPHA,
    DPI,
    EXACT_CMAP,
    LOG_FLOOR,
    SCORE_CMAP,
    TRAINED_STYLE,
    UNTRAINED_STYLE,
    _networks,
    _new_figure,
    _save,
)
from shiftprobe.reporting.markdown import fmt

#: the rows of a curve figure: (metric(s), y label, log axis)
CURVE_ROWS = (
    (("invariance_score",), "invariance score", False),
    (("equivariance_score",), "sorted equivariance score", False),
    (("aligned_rel",), "aligned_rel (log)", True),
    (("consistency", "shifted_acc"), "share of images", False),
)
#: annotate heatmap cells when the grid is at most this many cells wide
ANNOTATE_MAX_SIDE = 9


def _layer_colours(layers) -> dict[str, str]:
    return {layer: f"C{i % 10}" for i, layer in enumerate(layers)}


# -- 1-D families: curves ---------------------------------------------------------------------------
def curve_series(section: Mapping) -> list[tuple[str, list[tuple[float, str, int]]]]:
    """The x positions of a 1-D section's entries by curve: ``[(curve name, [(x, tick label, entry
    index), ...]), ...]``; one curve per axis for sub-pixel shifts along axes, else one (named "")."""
    kind = section.get("parameter")
    entries = section.get("entries", [])
    curves: dict[str, list[tuple[float, str, int]]] = {}
    numeric = all(_number(e.get("param")) is not None for e in entries)
    for i, e in enumerate(entries):
        p = e.get("param")
        if isinstance(p, Mapping):
            t = float(p.get("offset"))
            curves.setdefault(f"along {p.get('axis')}", []).append((t, f"{t:g}", i))
        elif kind == "k" and numeric:
            curves.setdefault("", []).append((90.0 * float(p), f"{90 * int(p)}°", i))
        elif numeric:
            curves.setdefault("", []).append((float(p), param_label(section, p), i))
        else:  # categorical (flips)
            curves.setdefault("", []).append((float(i), param_label(section, p), i))
    return [(name, sorted(points)) for name, points in curves.items()]


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _x_label(section: Mapping) -> str:
    return {
        "k": "rotation (k x 90°)",
        "angle_deg": "rotation angle (degrees)",
        "offset_px": "offset (pixels)",
        "flip": "flip",
    }.get(section.get("parameter"), str(section.get("parameter") or "parameter"))


def _shown_rows(section: Mapping) -> list[tuple[tuple[str, ...], str, bool]]:
    rows = []
    for metrics, label, log in CURVE_ROWS:
        if any(value(e, layer, m) is not None for _, res in _networks(section) for e in res.get("entries", [])
               for layer in res.get("layers", []) for m in metrics):
            rows.append((metrics, label, log))
    return rows


def _categorical(section: Mapping) -> bool:
    """Whether the parameter has no order (flips): points with error bars, no lines between them."""
    return any(_number(e.get("param")) is None and not isinstance(e.get("param"), Mapping)
               for e in section.get("entries", []))


def _draw_curves(ax, section, points, metrics, log, colours) -> float | None:
    """Lines of every layer (and metric) on ``ax``; returns the widest interval half-width drawn.
    Unordered parameters (flips) get points with error bars, side by side per layer."""
    widest = None
    markers = ("o", "^")
    categorical = _categorical(section)
    n_layers = max(1, len(section.get("layers", [])))
    for name, res in _networks(section):
        style = TRAINED_STYLE if name == "trained" else UNTRAINED_STYLE
        entries = res.get("entries", [])
        if not entries:
            continue
        by_param = {repr(e.get("param")): e for e in entries}
        rows = [by_param.get(repr(section["entries"][i].get("param"))) for _, _, i in points]
        xs = np.array([x for x, _, _ in points], dtype=float)
        for n_layer, layer in enumerate(res.get("layers", [])):
            for k, metric in enumerate(metrics):
                ys = np.array([value(r, layer, metric) if r else None for r in rows], dtype=float)
                if not np.isfinite(ys).any():
                    continue
                if log:
                    ys = np.maximum(ys, LOG_FLOOR)
                label = layer if name == "trained" else None
                if len(metrics) > 1:
                    label = f"{metric.replace('_', ' ')}" if name == "trained" else None
                kw = {**style, "marker": markers[k % 2] if len(metrics) > 1 else style["marker"]}
                x = xs
                if categorical:  # side by side: layers, then trained / untrained
                    slot = 2 * n_layer + (name != "trained")
                    x = xs + 0.6 * ((slot + 0.5) / (2 * n_layers) - 0.5)
                    kw["linestyle"] = "none"
                ax.plot(x, ys, color=colours[layer], label=label, **kw, markersize=3.5, linewidth=1.2)
                cis = [interval(r, layer, metric) if r else None for r in rows]
                if not log and any(ci is not None for ci in cis):
                    lo = np.array([ci[0] if ci else np.nan for ci in cis], dtype=float)
                    hi = np.array([ci[1] if ci else np.nan for ci in cis], dtype=float)
                    if categorical:
                        ax.vlines(x, lo, hi, color=colours[layer], linewidth=1.0, alpha=0.8)
                    else:
                        ax.fill_between(xs, lo, hi, color=colours[layer], alpha=BAND_ALPHA, linewidth=0)
                    half = np.nanmax((hi - lo) / 2) if np.isfinite(hi - lo).any() else None
                    if half is not None:
                        widest = float(half) if widest is None else max(widest, float(half))
    return widest


def plot_family_curves(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """Curves of a 1-D family: rows = metrics, columns = curves (x and y for sub-pixel shifts)."""
    series = curve_series(section)
    rows = _shown_rows(section)
    layers = list(section.get("layers", []))
    colours = _layer_colours(layers)
    fig = _new_figure(max(6.5, 4.6 * len(series) + 0.6), 2.6 * max(1, len(rows)) + 0.8)
    axes = fig.subplots(max(1, len(rows)), max(1, len(series)), squeeze=False)
    clf = section.get("classifier")
    tol = tol_of(section)
    widest_all = None
    for j, (curve, points) in enumerate(series):
        for i, (metrics, label, log) in enumerate(rows):
            ax = axes[i, j]
            if metrics[0] == "consistency":
                drawn = {clf: colours.get(clf, "C0")}
                sub = {**section, "layers": [clf]}
                if section.get("untrained"):
                    sub["untrained"] = {**section["untrained"], "layers": [clf]}
                w = _draw_curves(ax, sub, points, metrics, log, drawn)
                ax.set_title(f"{clf}: consistency (o) and accuracy on transformed (^)", fontsize=8)
            else:
                w = _draw_curves(ax, section, points, metrics, log, colours)
                ax.set_title(f"{label}" + (f" · {curve}" if curve else ""), fontsize=9)
            if w is not None:
                widest_all = w if widest_all is None else max(widest_all, w)
            if log:
                ax.set_yscale("log")
                if section.get("exact"):
                    ax.axhline(tol, color="black", linewidth=0.8, linestyle=":", label=f"exact below {fmt(tol)}")
            else:
                ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
                ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
            ax.set_xticks([x for x, _, _ in points])
            if _categorical(section):
                ax.set_xlim(-0.5, len(points) - 0.5)
            ax.set_xticklabels([t for _, t, _ in points], fontsize=6, rotation=45 if len(points) > 8 else 0)
            ax.set_xlabel(_x_label(section), fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="best", framealpha=0.7)
    sure = (
        "no intervals in these results"
        if widest_all is None
        else f"{'bars' if _categorical(section) else 'bands'}: 95 % intervals over test images "
        f"(widest ±{fmt(widest_all, 2)})"
    )
    styles = "trained solid, untrained dashed" if section.get("untrained") else "trained network"
    fig.suptitle(f"{title_of(name, section).replace('`', '')}\n{styles}; {sure}", fontsize=10)
    _save(fig, path, dpi)
    return fig


# -- 2-D families: heatmaps -------------------------------------------------------------------------
def grid_axes(section: Mapping) -> tuple[list[float], list[float]]:
    """The oy (rows) and ox (columns) values of a 2-D section's grid, the identity (0, 0) included."""
    oys, oxs = {0.0}, {0.0}
    for e in section.get("entries", []):
        oy, ox = e.get("param")
        oys.add(float(oy))
        oxs.add(float(ox))
    return sorted(oys), sorted(oxs)


def family_grid(res: Mapping, layer: str, metric: str, oys, oxs) -> np.ndarray:
    """``metric`` on the (oy, ox) grid; NaN where not measured (the identity)."""
    grid = np.full((len(oys), len(oxs)), np.nan)
    row, col = {v: i for i, v in enumerate(oys)}, {v: j for j, v in enumerate(oxs)}
    for e in res.get("entries", []):
        oy, ox = (float(v) for v in e.get("param"))
        v = value(e, layer, metric)
        if v is not None:
            grid[row[oy], col[ox]] = v
    return grid


def plot_family_heatmaps(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """A heatmap per layer of a 2-D family: invariance score (trained, untrained), then aligned_rel."""
    layers = list(section.get("layers", []))
    oys, oxs = grid_axes(section)
    rows: list[tuple[str, Mapping, str]] = [(net, res, "invariance_score") for net, res in _networks(section)]
    if any(np.isfinite(family_grid(section, layer, "aligned_rel", oys, oxs)).any() for layer in layers):
        rows.append(("trained", section, "aligned_rel"))
    fig = _new_figure(2.7 * len(layers) + 1.2, 2.5 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), len(layers), squeeze=False)
    annotate = max(len(oys), len(oxs)) <= ANNOTATE_MAX_SIDE
    tol = tol_of(section)
    for i, (net, res, metric) in enumerate(rows):
        grids = [family_grid(res, layer, metric, oys, oxs) for layer in layers]
        if metric == "aligned_rel":
            finite = np.concatenate([g[np.isfinite(g)] for g in grids] + [np.array([tol])])
            norm = LogNorm(vmin=max(LOG_FLOOR, float(finite.min())), vmax=max(float(finite.max()), tol * 10))
            cmap = EXACT_CMAP
        else:
            finite = np.concatenate([g[np.isfinite(g)] for g in grids] + [np.array([0.0, 1.0])])
            norm = Normalize(vmin=float(finite.min()), vmax=max(1.0, float(finite.max())))
            cmap = SCORE_CMAP
        image = None
        for j, (layer, grid) in enumerate(zip(layers, grids, strict=True)):
            ax = axes[i, j]
            shown = np.maximum(grid, LOG_FLOOR) if metric == "aligned_rel" else grid
            if not np.isfinite(grid).any():
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", fontsize=8)
            else:
                image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, origin="upper")
                if annotate:
                    for (r, c), v in np.ndenumerate(grid):
                        if np.isfinite(v):
                            ax.text(c, r, fmt(v, 2), ha="center", va="center", fontsize=5, color="white")
            ax.set_xticks(range(len(oxs)))
            ax.set_xticklabels([f"{v:g}" for v in oxs], fontsize=6, rotation=90)
            ax.set_yticks(range(len(oys)))
            ax.set_yticklabels([f"{v:g}" for v in oys], fontsize=6)
            ax.set_title(f"{layer} · {net}" + (": aligned_rel" if metric == "aligned_rel" else ""), fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("ox (px)", fontsize=7)
            if j == 0:
                ax.set_ylabel("oy (px)", fontsize=7)
        if image is not None:
            label = "aligned_rel (log)" if metric == "aligned_rel" else "invariance score"
            fig.colorbar(image, ax=list(axes[i, :]), shrink=0.8).set_label(label, fontsize=7)
    fig.suptitle(f"{title_of(name, section).replace('`', '')}: per layer over the (oy, ox) grid; "
                 "blank = the identity", fontsize=10)
    _save(fig, path, dpi)
    return fig


# -- every family -----------------------------------------------------------------------------------
def plot_family(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """The figure of one family section: heatmaps for a 2-D family, curves otherwise."""
    if section.get("dims") == 2:
        return plot_family_heatmaps(name, section, path, dpi)
    return plot_family_curves(name, section, path, dpi)


def save_family_figures(results: Mapping, out_dir: str | Path, dpi: int = DPI) -> dict[str, Figure]:
    """``<family>.png`` for every family of ``results["families"]`` but translation (whose figures are
    heatmaps.png and radial.png); returns ``{family: Figure}``, not closed."""
    out_dir = Path(out_dir)
    figures = {}
    for name, section in other_families(results).items():
        if not section["entries"]:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        figures[name] = plot_family(name, section, path=out_dir / f"{name}.png", dpi=dpi)
    return figures
