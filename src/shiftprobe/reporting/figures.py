"""Figures of a results dict: translation-sensitivity heatmaps, radial profiles, example pairs.

Figures are built as plain :class:`matplotlib.figure.Figure` objects on an Agg canvas, never through
``pyplot``: nothing is displayed, no global figure registry fills up, and the figures are safe to
build in a training process or a worker. Every function returns its Figure and, given ``path``,
saves a PNG. ``SummaryWriter.add_figure(tag, fig)`` accepts these figures directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from shiftprobe.atomic import save_figure
from shiftprobe.reporting.markdown import (
    classifier,
    exact_tol,
    fmt,
    halfwidth,
    is_conv,
    key_metric,
)

DPI = 120
#: aligned_rel values of exactly 0 are drawn at this floor on log axes
LOG_FLOOR = 1e-10
#: annotate heatmap cells with their value when a panel is at most this many cells wide
ANNOTATE_MAX_SIDE = 9
SCORE_CMAP = "viridis"
#: the exact-test heatmap: dark = exact, bright = far from any alignment
EXACT_CMAP = "magma"
#: shading of a 95 % interval band around a radial profile
BAND_ALPHA = 0.2
MAP_CMAP = "RdBu_r"
TRAINED_STYLE = {"linestyle": "-", "marker": "o"}
UNTRAINED_STYLE = {"linestyle": "--", "marker": "s", "alpha": 0.8}

METRIC_LABELS = {
    "invariance_score": "invariance score",
    "equivariance_score": "sorting hint (sorted equivariance)",
    "equivariance_score_certified": "sorting hint, certified region",
    "aligned_rel": "aligned_rel (exact test)",
    "nearest_aligned_rel": "best alignment (nearest_aligned_rel)",
    "consistency_correct": "consistency (correctly classified)",
    "consistency": "consistency",
    "shifted_acc": "accuracy on shifted",
    "cos": "cosine similarity",
    "rel": "relative change",
    "dist": "distance",
    "sorted_rel": "sorted rel",
}
#: shorter legend entries of the radial panels, where several metrics share a panel
SHORT_LABELS = {
    "aligned_rel": "exact test",
    "nearest_aligned_rel": "best alignment",
    "equivariance_score": "whole map",
    "equivariance_score_certified": "certified region",
    "consistency_correct": "consistency (correct)",
    "shifted_acc": "shifted acc",
}
#: metrics whose natural range is [.., 1] (1 = unchanged): colour scale tops out at 1
BOUNDED_METRICS = {
    "invariance_score",
    "equivariance_score",
    "equivariance_score_certified",
    "consistency",
    "consistency_correct",
    "shifted_acc",
    "cos",
}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None, dpi: int = DPI) -> None:
    """Write ``fig`` to ``path`` atomically (``shiftprobe.atomic.save_figure``); nothing for None."""
    if path is not None:
        save_figure(fig, path, dpi=dpi)


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _value(block: Mapping | None, layer: str, metric: str) -> float:
    """The metric as a float, NaN where missing or null."""
    v = ((block or {}).get(layer) or {}).get(metric)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _networks(results: Mapping) -> list[tuple[str, Mapping]]:
    nets = [("trained", results)]
    if results.get("untrained"):
        nets.append(("untrained", results["untrained"]))
    return nets


def _metric_for(results: Mapping, layer: str, metric_by_layer) -> str:
    if isinstance(metric_by_layer, str):
        return metric_by_layer
    if metric_by_layer and layer in metric_by_layer:
        return metric_by_layer[layer]
    return key_metric(results, layer)


# -- heatmaps -------------------------------------------------------------------------------------
def _shift_axes(results: Mapping) -> tuple[list[int], list[int]]:
    """The dy and dx values of the heatmap grid (one dy row for the axis pattern)."""
    shifts = [(int(s["dy"]), int(s["dx"])) for _, res in _networks(results) for s in res.get("shifts", [])]
    m = results.get("max_shift")
    if m is None:
        m = max((max(abs(dy), abs(dx)) for dy, dx in shifts), default=0)
    full = list(range(-int(m), int(m) + 1))
    if results.get("shift_pattern") == "axis" or (shifts and all(dy == 0 for dy, _ in shifts)):
        return [0], full
    return full, full


def sensitivity_grid(
    res: Mapping, layer: str, metric: str, dys: Sequence[int], dxs: Sequence[int]
) -> np.ndarray:
    """``len(dys) x len(dxs)`` array of a metric over the shift grid; NaN where not measured."""
    grid = np.full((len(dys), len(dxs)), np.nan)
    row = {dy: i for i, dy in enumerate(dys)}
    col = {dx: j for j, dx in enumerate(dxs)}
    for s in res.get("shifts", []):
        dy, dx = int(s["dy"]), int(s["dx"])
        if dy in row and dx in col:
            grid[row[dy], col[dx]] = _value(s, layer, metric)
    return grid


def _norm_for(metric: str, arrays: Sequence[np.ndarray]):
    """Colour scale of one layer column: [min(0, lo), 1] for scores, log for aligned_rel / wide rel."""
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays]) if arrays else np.array([])
    if vals.size == 0:
        return None
    lo, hi = float(vals.min()), float(vals.max())
    if metric in BOUNDED_METRICS:
        return Normalize(min(0.0, lo), max(1.0, hi))
    positive = vals[vals > 0]
    if metric == "aligned_rel" and positive.size:
        # fixed decades around the exactness threshold: exact cells dark, inexact ones bright
        return LogNorm(min(1e-8, float(positive.min())), max(1.0, float(positive.max())))
    if metric.endswith("rel") and positive.size and positive.max() / positive.min() > 100:
        return LogNorm(max(float(positive.min()), LOG_FLOOR), float(positive.max()))
    if hi == lo:
        hi = lo + 1.0
    return Normalize(lo, hi)


def exact_test_grid(
    res: Mapping, layer: str, dys: Sequence[int], dxs: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The exact test over the shift grid: ``aligned_rel`` where the stride divides the shift, the best
    integer alignment (``nearest_aligned_rel``) elsewhere. Returns ``(values, nearest)``, ``nearest``
    True where the value is a best alignment rather than the exact test; NaN where neither exists."""
    exact = sensitivity_grid(res, layer, "aligned_rel", dys, dxs)
    nearest = sensitivity_grid(res, layer, "nearest_aligned_rel", dys, dxs)
    use_nearest = ~np.isfinite(exact) & np.isfinite(nearest)
    return np.where(use_nearest, nearest, exact), use_nearest


def _exact_norm(grids: Sequence[np.ndarray], tol: float) -> LogNorm:
    """Log scale from well below the exactness threshold to at least 1: exact cells sit at the bottom."""
    vals = np.concatenate([g[np.isfinite(g)].ravel() for g in grids]) if grids else np.array([])
    positive = vals[vals > 0]
    lo = min(tol / 100, float(positive.min())) if positive.size else tol / 100
    hi = max(1.0, float(positive.max())) if positive.size else 1.0
    return LogNorm(max(lo, LOG_FLOOR), hi)


def _widest_on_grid(res: Mapping, layer: str, metric: str) -> float | None:
    """The widest 95 % half-width of a metric over the shifts of one network (None without intervals)."""
    widths = [halfwidth(s, layer, metric) for s in res.get("shifts", []) if (s["dy"], s["dx"]) != (0, 0)]
    widths = [w for w in widths if w is not None]
    return max(widths) if widths else None


def _grid_axes(ax, dxs, dys, one_row: bool) -> None:
    step = 1 if len(dxs) <= 9 else 2
    ax.set_xticks(dxs[::step])
    ax.set_yticks(dys[::step] if not one_row else dys)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("dx (right)", fontsize=8)
    ax.set_ylabel("dy (down)", fontsize=8)


def _draw_exact_rows(fig, exact_axes, results, nets, conv_cols, dys, dxs, one_row, annotate) -> None:
    """The exact-test rows (one per network): a log heatmap per spatial layer; other panels hidden."""
    tol = exact_tol(results)
    for ax in exact_axes.ravel():
        ax.set_visible(False)
    for col, layer in conv_cols:
        grids = [exact_test_grid(res, layer, dys, dxs) for _, res in nets]
        norm = _exact_norm([g for g, _ in grids], tol)
        cmap = _cmap_with_blank(EXACT_CMAP)
        image = None
        for (name, _), (grid, nearest), ax in zip(nets, grids, exact_axes[:, col], strict=True):
            ax.set_visible(True)
            _grid_axes(ax, dxs, dys, one_row)
            ax.set_title(f"{layer} · {name}\nexact test, log (≈: best alignment)", fontsize=9)
            extent = (dxs[0] - 0.5, dxs[-1] + 0.5, dys[-1] + 0.5, dys[0] - 0.5)
            shown = np.where(np.isfinite(grid), np.maximum(grid, norm.vmin), np.nan)
            image = ax.imshow(
                np.ma.masked_invalid(shown), cmap=cmap, norm=norm, extent=extent, interpolation="nearest"
            )
            if annotate:
                _annotate(ax, grid, dys, dxs, norm, cmap, fontsize=6 if len(dxs) > 5 else 7, approx=nearest)
            elif nearest.any():
                yy, xx = np.nonzero(nearest)
                ax.scatter(np.asarray(dxs)[xx], np.asarray(dys)[yy], s=4, c="white", marker=".", linewidths=0)
        if image is not None:
            axes_col = list(exact_axes[:, col])
            if one_row:
                cbar = fig.colorbar(image, ax=axes_col, location="bottom", shrink=0.8, aspect=30)
                cbar.ax.axvline(tol, color="cyan", linewidth=1.2)
            else:
                cbar = fig.colorbar(image, ax=axes_col, shrink=0.9, aspect=25)
                cbar.ax.axhline(tol, color="cyan", linewidth=1.2)
            cbar.ax.tick_params(labelsize=7)
            cbar.set_label(f"aligned_rel (cyan: exact below {fmt(tol)})", fontsize=7)


def plot_sensitivity_heatmaps(
    results: Mapping,
    metric_by_layer: Mapping[str, str] | str | None = None,
    path: str | Path | None = None,
    dpi: int = DPI,
    exact_test: bool | None = None,
) -> Figure:
    """Translation-sensitivity maps (Kauderer-Abrams 2017): one heatmap per layer over (dy, dx).

    Columns are layers, rows trained / untrained. Each layer shows ``metric_by_layer[layer]`` (a dict,
    or one metric name for all), defaulting to the lab's sorting hint for conv layers and the
    invariance score otherwise. dx grows to the right, dy downwards (the shift convention); cells not
    measured (random pattern) or undefined (aligned_rel where the stride does not divide) are blank.

    With ``exact_test`` (default: when no ``metric_by_layer`` is given, i.e. the default figure) two more
    rows come first for the spatial layers: the exact test, ``aligned_rel`` where the stride divides the
    shift and the best integer alignment (marked ``≈``) elsewhere, on a log scale. An exact cell is dark,
    so a stride-2 layer shows the even/odd checkerboard. Each score panel states its widest 95 %
    interval where the results carry intervals.
    """
    layers = list(results.get("layers", []))
    nets = _networks(results)
    dys, dxs = _shift_axes(results)
    one_row = len(dys) == 1
    if exact_test is None:
        exact_test = metric_by_layer is None
    conv_cols = [(j, layer) for j, layer in enumerate(layers) if is_conv(results, layer)] if exact_test else []
    row_blocks = 2 if conv_cols else 1
    n_rows = len(nets) * row_blocks
    width = 3.7 * len(layers) + 0.4  # fixed panel size: cells shrink as the grid grows
    if one_row:
        height = (1.3 * len(nets) + 1.3) * row_blocks  # room for the colour bar below
    else:
        height = (3.6 * len(nets)) * row_blocks + 0.6
    fig = _new_figure(width, height)
    axes = fig.subplots(n_rows, len(layers), squeeze=False)
    score_axes = axes[len(nets):] if conv_cols else axes
    annotate = len(dxs) <= ANNOTATE_MAX_SIDE
    if conv_cols:
        exact_axes = axes[: len(nets)]
        _draw_exact_rows(fig, exact_axes, results, nets, conv_cols, dys, dxs, one_row, annotate)
        free = [j for j in range(len(layers)) if j not in dict(conv_cols)]
        if free:
            note_ax = exact_axes[0, free[0]]
            note_ax.set_visible(True)
            note_ax.axis("off")
            tol = exact_tol(results)
            note_ax.text(
                0.0,
                0.95,
                "Exact test (spatial layers), top rows:\n"
                "aligned_rel = |f(Tx) - f(x) moved by s/stride|\n"
                "on the certified region, relative.\n"
                f"Dark (< {fmt(tol)}): exact. Where the stride\n"
                "does not divide the shift no exact alignment\n"
                "exists: the best integer alignment is shown\n"
                "(≈). A stride-2 layer is exact only at even\n"
                "shifts: a checkerboard.\n\n"
                "Bottom rows: the key score per layer\n"
                "(for conv layers the lab's sorting hint,\n"
                "lowered by the frame's border in crop mode).",
                transform=note_ax.transAxes,
                va="top",
                ha="left",
                fontsize=8,
            )
    no_intervals = True
    for j, layer in enumerate(layers):
        metric = _metric_for(results, layer, metric_by_layer)
        grids = [sensitivity_grid(res, layer, metric, dys, dxs) for _, res in nets]
        norm = _norm_for(metric, grids)
        cmap = _cmap_with_blank(SCORE_CMAP)
        image = None
        for i, ((name, res), grid) in enumerate(zip(nets, grids, strict=True)):
            ax = score_axes[i, j]
            _grid_axes(ax, dxs, dys, one_row)
            title = f"{layer} · {name}\n{_label(metric)}"
            widest = _widest_on_grid(res, layer, metric)
            if widest is not None:
                no_intervals = False
                title += f"\n95 % interval: ± ≤ {fmt(widest, 2)}"
            ax.set_title(title, fontsize=9)
            extent = (dxs[0] - 0.5, dxs[-1] + 0.5, dys[-1] + 0.5, dys[0] - 0.5)
            if norm is None:  # the metric does not exist for this layer (e.g. aligned_rel of fc1)
                ax.set_xlim(extent[0], extent[1])
                ax.set_ylim(extent[2], extent[3])
                ax.set_aspect("equal")
                ax.text(
                    0.5,
                    0.5,
                    f"{metric}\nnot measured\nfor {layer}",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="dimgray",
                )
                continue
            shown = grid
            if isinstance(norm, LogNorm):  # zeros (the identity shift) sit at the bottom of a log scale
                shown = np.where(grid <= norm.vmin, norm.vmin, grid)
            image = ax.imshow(
                np.ma.masked_invalid(shown), cmap=cmap, norm=norm, extent=extent, interpolation="nearest"
            )
            if annotate:
                _annotate(ax, grid, dys, dxs, norm, cmap, fontsize=6 if len(dxs) > 5 else 7)
        if image is not None:
            column = list(score_axes[:, j])
            if one_row:
                cbar = fig.colorbar(image, ax=column, location="bottom", shrink=0.8, aspect=30)
            else:
                cbar = fig.colorbar(image, ax=column, shrink=0.9, aspect=25)
            cbar.ax.tick_params(labelsize=7)
    mode, pattern = results.get("shift_mode"), results.get("shift_pattern")
    sure = (
        "no intervals in these results (older results.json)"
        if no_intervals
        else "each score panel states its widest 95 % interval over test images"
    )
    fig.suptitle(
        f"Translation-sensitivity maps ({mode} shifts, {pattern} pattern; blank = not measured / n/a); {sure}",
        fontsize=10,
    )
    _save(fig, path, dpi)
    return fig


def _cmap_with_blank(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def _annotate(ax, grid, dys, dxs, norm, cmap, fontsize, approx=None) -> None:
    for i, dy in enumerate(dys):
        for j, dx in enumerate(dxs):
            v = grid[i, j]
            if not np.isfinite(v):
                continue
            r, g, b, _ = cmap(norm(max(v, norm.vmin) if isinstance(norm, LogNorm) else v))
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            text = "0" if v == 0 else (f"{v:.2f}" if abs(v) >= 1e-2 else fmt(v, 1))
            if approx is not None and approx[i, j]:
                text = "≈" + text
            ax.text(dx, dy, text, ha="center", va="center", fontsize=fontsize, color=colour)


# -- radial profiles ------------------------------------------------------------------------------
def _radial_series(res: Mapping, layer: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    radii = np.array([int(row["radius"]) for row in res.get("radial", [])], dtype=float)
    values = np.array([_value(row, layer, metric) for row in res.get("radial", [])], dtype=float)
    return radii, values


def radial_band(res: Mapping, layer: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(radii, lo, hi)`` of the 95 % interval of a metric per radial row: ``<metric>_ci`` where given,
    else ``value ± 1.96 * <metric>_se``; None where the results carry no interval for it."""
    radii, lo, hi = [], [], []
    for row in res.get("radial", []):
        v = _value(row, layer, metric)
        hw = halfwidth(row, layer, metric)
        if not math.isfinite(v) or hw is None:
            continue
        ci = ((row.get(layer) or {}).get(f"{metric}_ci")) or None
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
            a, b = float(ci[0]), float(ci[1])
        else:
            a, b = v - hw, v + hw
        radii.append(int(row["radius"]))
        lo.append(a)
        hi.append(b)
    if not radii:
        return None
    return np.array(radii, dtype=float), np.array(lo), np.array(hi)


def _panel_metrics(results: Mapping, layer: str) -> tuple[list[str], list[str]]:
    """(top, bottom) metrics of a layer's two radial panels; the exact test leads for conv layers."""
    if is_conv(results, layer):
        return ["aligned_rel", "nearest_aligned_rel"], ["equivariance_score", "equivariance_score_certified"]
    if layer == classifier(results):
        return ["invariance_score"], ["consistency", "consistency_correct", "shifted_acc"]
    return ["invariance_score"], ["rel"]


def _has_series(nets, layer: str, metric: str) -> bool:
    return any(np.isfinite(_radial_series(res, layer, metric)[1]).any() for _, res in nets)


def _draw_profiles(ax, nets, layer, metrics, colours, log_axis: bool) -> tuple[bool, bool, float | None]:
    """Lines (trained solid, untrained dashed) with their interval bands; returns (any point, a zero was
    clipped to the log floor, the widest half-width drawn)."""
    any_point = clipped = False
    widest = None
    shown = [m for m in metrics if _has_series(nets, layer, m)]
    for k, metric in enumerate(shown):
        colour = colours[k % len(colours)]
        for name, res in nets:
            style = TRAINED_STYLE if name == "trained" else UNTRAINED_STYLE
            r, v = _radial_series(res, layer, metric)
            if log_axis:
                keep = np.isfinite(v) & (r > 0)  # radius 0 is the identity: the error is 0 there
                r, v = r[keep], v[keep]
                clipped = clipped or bool((v < LOG_FLOOR).any())
                v = np.maximum(v, LOG_FLOOR)
            any_point = any_point or bool(np.isfinite(v).any())
            label = f"{SHORT_LABELS.get(metric, _label(metric))} · {name}" if len(shown) > 1 else name
            ax.plot(r, v, color=colour, label=label, **style)
            band = None if log_axis else radial_band(res, layer, metric)
            if band is not None:
                br, lo, hi = band
                ax.fill_between(br, lo, hi, color=colour, alpha=BAND_ALPHA, linewidth=0)
                half = float(np.max((hi - lo) / 2)) if br.size else 0.0
                widest = half if widest is None else max(widest, half)
    return any_point, clipped, widest


def plot_radial_profiles(results: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """Per layer, two panels over the radius max(|dy|, |dx|); trained solid, untrained dashed.

    conv layers: the exact test on top (aligned_rel and the best integer alignment, log axis, with the
    exactness threshold; zeros drawn at ``LOG_FLOOR``), the lab's sorting hint below (on the whole map
    and, where recorded, on the certified region). Other layers: the invariance score on top; below,
    the relative change (rel) or, for the classifier, consistency and accuracy on shifted images.
    Shaded bands are the 95 % intervals of the radial rows (``_ci`` / ``_se``); the title states the
    widest, or that the results carry none.
    """
    layers = list(results.get("layers", []))
    nets = _networks(results)
    fig = _new_figure(3.3 * len(layers) + 0.4, 6.3)
    axes = fig.subplots(2, len(layers), squeeze=False)
    all_radii = sorted({int(row["radius"]) for _, res in nets for row in res.get("radial", [])})
    tol = exact_tol(results)
    widest_all = None
    for j, layer in enumerate(layers):
        top_metrics, bottom_metrics = _panel_metrics(results, layer)
        top, bottom = axes[0, j], axes[1, j]
        conv = is_conv(results, layer)
        if conv:
            any_point, clipped, _ = _draw_profiles(top, nets, layer, top_metrics, ("tab:red", "tab:purple"), True)
            top.set_yscale("log")
            top.axhline(tol, color="black", linewidth=0.8, linestyle=":", label=f"exact below {fmt(tol)}")
            top.axhspan(LOG_FLOOR / 3, tol, color="tab:green", alpha=0.07, linewidth=0)
            top.set_title(f"{layer}: exact test (log)", fontsize=9)
            floor_note = f" (0 drawn at {fmt(LOG_FLOOR)})" if clipped else ""
            top.set_ylabel(f"aligned_rel{floor_note}", fontsize=8)
            if not any_point:
                top.text(0.5, 0.5, "no alignable shift", transform=top.transAxes, ha="center", fontsize=8)
            _, _, w = _draw_profiles(bottom, nets, layer, bottom_metrics, ("tab:blue", "tab:green"), False)
            bottom.set_title(f"{layer}: the lab's sorting hint", fontsize=9)
            bottom.set_ylabel("sorted equivariance score", fontsize=8)
            for ax in (bottom,):
                ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
                ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
            widths = [w]
        else:
            _, _, w_top = _draw_profiles(top, nets, layer, top_metrics, ("tab:blue",), False)
            metric = top_metrics[0]
            top.set_title(f"{layer}: {_label(metric)}", fontsize=9)
            top.set_ylabel(_label(metric), fontsize=8)
            top.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
            top.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
            shown = [m for m in bottom_metrics if _has_series(nets, layer, m)]
            _, _, w_bottom = _draw_profiles(
                bottom, nets, layer, shown, ("tab:orange", "tab:brown", "tab:green"), False
            )
            title = " / ".join(_label(m) if len(shown) < 3 else SHORT_LABELS.get(m, _label(m)) for m in shown)
            bottom.set_title(f"{layer}: {title or 'n/a'}", fontsize=9 if len(shown) < 3 else 8)
            bottom.set_ylabel(title if len(shown) == 1 else "share of images", fontsize=8)
            widths = [w_top, w_bottom]
        for w in widths:
            if w is not None:
                widest_all = w if widest_all is None else max(widest_all, w)
        for ax in (top, bottom):
            ax.set_xlabel("radius max(|dy|, |dx|)", fontsize=8)
            if all_radii:
                ax.set_xticks(all_radii)
                ax.set_xlim(all_radii[0] - 0.3, all_radii[-1] + 0.3)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6, loc="best", framealpha=0.7)
    mode, pattern = results.get("shift_mode"), results.get("shift_pattern")
    sure = (
        "no intervals in these results (older results.json)"
        if widest_all is None
        else f"shaded: 95 % intervals over test images (widest ±{fmt(widest_all, 2)}"
        + ("; narrower than the lines where no shading shows)" if widest_all < 0.01 else ")")
    )
    fig.suptitle(
        f"Radial profiles ({mode} shifts, {pattern} pattern): trained solid, untrained dashed; {sure}",
        fontsize=10,
    )
    _save(fig, path, dpi)
    return fig


# -- example pairs --------------------------------------------------------------------------------
def plot_example_pairs(examples: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """Rows: every (image, shift) pair. Columns: x, T(s)x, then for a few channels of the layer f(x),
    f(Tx) and their difference after aligning by shift/stride (blank panel "no exact alignment" when
    the stride does not divide the shift). ``examples`` is what ``shiftprobe.probe.examples.example_pairs``
    computed; nothing is recomputed here.

    Channels are the most active ones (mean |f(x)| over the images); each channel's f(x), f(Tx) and
    difference share one symmetric colour scale (colour bar at the row's end), so an exact match shows
    as white.
    """
    pairs, channels = examples["pairs"], examples["channels"]
    layer, mode, stride = examples["layer"], examples["mode"], examples["stride"]
    k = len(channels)
    n_cols = 2 + 3 * k
    fig = _new_figure(1.3 * n_cols + 0.9, 1.45 * len(pairs) + 1.1)
    axes = fig.subplots(len(pairs), n_cols, squeeze=False)
    stride_txt = "?" if stride is None else (str(stride[0]) if stride[0] == stride[1] else f"{stride[0]}x{stride[1]}")
    for row, pair in enumerate(pairs):
        dy, dx = pair["shift"]
        ax_row = axes[row]
        for ax, pixels in ((ax_row[0], pair["x"]), (ax_row[1], pair["tx"])):  # grey H x W, or colour H x W x C
            ax.imshow(pixels.numpy().clip(0, 1), cmap="gray", vmin=0, vmax=1)
        ax_row[0].set_ylabel(f"image {pair['image']}\nshift ({dy}, {dx})", fontsize=8)
        headers = ["x", "T(s) x"]
        image = None
        for c_idx, c in enumerate(channels):
            a = pair["f_x"][c_idx].numpy()
            b = pair["f_t"][c_idx].numpy()
            d = pair["aligned_diff"]
            lim = float(max(np.abs(a).max(), np.abs(b).max(), 1e-12))
            base = 2 + 3 * c_idx
            image = ax_row[base].imshow(a, cmap=MAP_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
            ax_row[base + 1].imshow(b, cmap=MAP_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
            ax_d = ax_row[base + 2]
            if d is None:
                reason = f"(stride {stride_txt} does not divide)" if stride is not None else "(no stride)"
                ax_d.text(0.5, 0.5, f"no exact\nalignment\n{reason}", ha="center", va="center", fontsize=6.5,
                          transform=ax_d.transAxes, color="dimgray")
                ax_d.set_facecolor("#f2f2f2")
                h, w = a.shape
                ax_d.set_xlim(-0.5, w - 0.5)
                ax_d.set_ylim(h - 0.5, -0.5)
                ax_d.set_aspect("equal")
            else:
                dc = d[c_idx].numpy()
                cmap = _cmap_with_blank(MAP_CMAP)
                ax_d.imshow(np.ma.masked_invalid(dc), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
                ax_d.set_facecolor("#e0e0e0")
                max_abs = float(np.nanmax(np.abs(dc))) if np.isfinite(dc).any() else math.nan
                ax_d.set_xlabel(f"max|Δ| {fmt(max_abs, 2)}", fontsize=6.5, labelpad=1)
            headers += [f"f(x) ch{c}", f"f(Tx) ch{c}", f"aligned Δ ch{c}"]
        if image is not None:
            bar = fig.colorbar(image, ax=list(ax_row[2:]), fraction=0.02, pad=0.01)
            bar.ax.tick_params(labelsize=6)
            bar.set_label("activation (last channel's scale)", fontsize=6)
        for col, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(headers[col], fontsize=7.5)
    where = (
        "on the whole map (circular)"
        if mode == "roll" and examples.get("circular")
        else "on the certified region (grey = positions whose receptive field leaves the image)"
    )
    fig.suptitle(
        f"{layer} feature maps of x and T(s)x ({mode} shifts); aligned Δ = f(Tx) − f(x) moved by s/{stride_txt} {where}\n"
        f"channels shown: {', '.join(map(str, channels))}, the {k} most active (largest mean |f(x)|) over these images; "
        f"each channel's three panels share one symmetric colour scale",
        fontsize=8.5,
    )
    _save(fig, path, dpi)
    return fig


# -- everything at once ---------------------------------------------------------------------------
def save_all_figures(
    results: Mapping,
    out_dir: str | Path,
    examples: Mapping | None = None,
    dpi: int = DPI,
) -> dict[str, Figure]:
    """Write ``heatmaps.png``, ``radial.png`` and (given the ``examples`` data of
    ``shiftprobe.probe.examples.example_pairs``) ``examples.png``.

    Returns ``{"heatmaps": fig, "radial": fig[, "examples": fig]}``, not closed, so a caller can log
    them with ``writer.add_figure(name, fig)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "heatmaps": plot_sensitivity_heatmaps(results, path=out_dir / "heatmaps.png", dpi=dpi),
        "radial": plot_radial_profiles(results, path=out_dir / "radial.png", dpi=dpi),
    }
    if examples is not None:
        figures["examples"] = plot_example_pairs(examples, path=out_dir / "examples.png", dpi=dpi)
    return figures
