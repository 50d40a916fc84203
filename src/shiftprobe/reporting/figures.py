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

from shiftprobe.reporting.markdown import EXACT_TOL, fmt, is_conv, key_metric

DPI = 120
#: aligned_rel values of exactly 0 are drawn at this floor on log axes
LOG_FLOOR = 1e-10
#: annotate heatmap cells with their value when a panel is at most this many cells wide
ANNOTATE_MAX_SIDE = 9
SCORE_CMAP = "viridis"
MAP_CMAP = "RdBu_r"
TRAINED_STYLE = {"linestyle": "-", "marker": "o"}
UNTRAINED_STYLE = {"linestyle": "--", "marker": "s", "alpha": 0.8}

METRIC_LABELS = {
    "invariance_score": "invariance score",
    "equivariance_score": "equivariance score (sorted)",
    "aligned_rel": "aligned_rel (exact test)",
    "consistency": "consistency",
    "shifted_acc": "accuracy on shifted",
    "cos": "cosine similarity",
    "rel": "relative change",
    "dist": "distance",
    "sorted_rel": "sorted rel",
}
#: metrics whose natural range is [.., 1] (1 = unchanged): colour scale tops out at 1
BOUNDED_METRICS = {"invariance_score", "equivariance_score", "consistency", "shifted_acc", "cos"}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None, dpi: int = DPI) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)


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


def plot_sensitivity_heatmaps(
    results: Mapping,
    metric_by_layer: Mapping[str, str] | str | None = None,
    path: str | Path | None = None,
    dpi: int = DPI,
) -> Figure:
    """Translation-sensitivity maps (Kauderer-Abrams 2017): one heatmap per layer over (dy, dx).

    Columns are layers, rows trained / untrained. Each layer shows ``metric_by_layer[layer]`` (a dict,
    or one metric name for all), defaulting to the equivariance score for conv layers and the
    invariance score otherwise. dx grows to the right, dy downwards (the shift convention); cells not
    measured (random pattern) or undefined (aligned_rel where the stride does not divide) are blank.
    """
    layers = list(results.get("layers", []))
    nets = _networks(results)
    dys, dxs = _shift_axes(results)
    one_row = len(dys) == 1
    width = 3.7 * len(layers) + 0.4  # fixed panel size: cells shrink as the grid grows
    if one_row:
        height = 1.3 * len(nets) + 1.3  # room for the colour bar below
    else:
        height = 3.6 * len(nets) + 0.6
    fig = _new_figure(width, height)
    axes = fig.subplots(len(nets), len(layers), squeeze=False)
    annotate = len(dxs) <= ANNOTATE_MAX_SIDE
    for j, layer in enumerate(layers):
        metric = _metric_for(results, layer, metric_by_layer)
        grids = [sensitivity_grid(res, layer, metric, dys, dxs) for _, res in nets]
        norm = _norm_for(metric, grids)
        cmap = _cmap_with_blank(SCORE_CMAP)
        image = None
        for i, ((name, _), grid) in enumerate(zip(nets, grids, strict=True)):
            ax = axes[i, j]
            step = 1 if len(dxs) <= 9 else 2
            ax.set_xticks(dxs[::step])
            ax.set_yticks(dys[::step] if not one_row else dys)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("dx (right)", fontsize=8)
            ax.set_ylabel("dy (down)", fontsize=8)
            ax.set_title(f"{layer} · {name}\n{_label(metric)}", fontsize=9)
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
            if one_row:
                cbar = fig.colorbar(image, ax=list(axes[:, j]), location="bottom", shrink=0.8, aspect=30)
            else:
                cbar = fig.colorbar(image, ax=list(axes[:, j]), shrink=0.9, aspect=25)
            cbar.ax.tick_params(labelsize=7)
    mode, pattern = results.get("shift_mode"), results.get("shift_pattern")
    fig.suptitle(
        f"Translation-sensitivity maps ({mode} shifts, {pattern} pattern; blank = not measured / n/a)",
        fontsize=10,
    )
    _save(fig, path, dpi)
    return fig


def _cmap_with_blank(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def _annotate(ax, grid, dys, dxs, norm, cmap, fontsize) -> None:
    for i, dy in enumerate(dys):
        for j, dx in enumerate(dxs):
            v = grid[i, j]
            if not np.isfinite(v):
                continue
            r, g, b, _ = cmap(norm(max(v, norm.vmin) if isinstance(norm, LogNorm) else v))
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            text = "0" if v == 0 else (f"{v:.2f}" if abs(v) >= 1e-2 else fmt(v, 1))
            ax.text(dx, dy, text, ha="center", va="center", fontsize=fontsize, color=colour)


# -- radial profiles ------------------------------------------------------------------------------
def _radial_series(res: Mapping, layer: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    radii = np.array([int(row["radius"]) for row in res.get("radial", [])], dtype=float)
    values = np.array([_value(row, layer, metric) for row in res.get("radial", [])], dtype=float)
    return radii, values


def _lower_panel_metrics(results: Mapping, layer: str) -> list[str]:
    if is_conv(results, layer):
        return ["aligned_rel"]
    if layer == "logits":
        return ["consistency", "shifted_acc"]
    return ["rel"]


def plot_radial_profiles(results: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """Per layer: the key score vs radius (top) and a second view (bottom).

    Trained is solid, untrained dashed. The bottom panel is aligned_rel on a log axis for conv layers
    (with the exactness threshold; zeros drawn at ``LOG_FLOOR``), consistency and accuracy on shifted
    images for the logits, and the relative change for other layers. Radius = max(|dy|, |dx|).
    """
    layers = list(results.get("layers", []))
    nets = _networks(results)
    fig = _new_figure(3.3 * len(layers) + 0.4, 6.0)
    axes = fig.subplots(2, len(layers), squeeze=False)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    all_radii = sorted({int(row["radius"]) for _, res in nets for row in res.get("radial", [])})
    for j, layer in enumerate(layers):
        metric = key_metric(results, layer)
        top, bottom = axes[0, j], axes[1, j]
        for name, res in nets:
            style = TRAINED_STYLE if name == "trained" else UNTRAINED_STYLE
            r, v = _radial_series(res, layer, metric)
            top.plot(r, v, color=colours[0], label=name, **style)
        top.set_title(f"{layer}: {_label(metric)}", fontsize=9)
        top.set_ylabel(_label(metric), fontsize=8)
        top.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        top.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")

        lower = _lower_panel_metrics(results, layer)
        log_axis = lower == ["aligned_rel"]
        any_point = clipped = False
        for k, lm in enumerate(lower):
            for name, res in nets:
                style = TRAINED_STYLE if name == "trained" else UNTRAINED_STYLE
                r, v = _radial_series(res, layer, lm)
                if log_axis:
                    keep = np.isfinite(v) & (r > 0)  # radius 0 is the identity: aligned_rel is 0 there
                    r, v = r[keep], v[keep]
                    clipped = clipped or bool((v < LOG_FLOOR).any())
                    v = np.maximum(v, LOG_FLOOR)
                any_point = any_point or bool(np.isfinite(v).any())
                label = f"{_label(lm)} · {name}" if len(lower) > 1 else name
                bottom.plot(r, v, color=colours[k + 1], label=label, **style)
        if log_axis:
            bottom.set_yscale("log")
            bottom.axhline(
                EXACT_TOL, color="black", linewidth=0.8, linestyle=":", label=f"exact below {fmt(EXACT_TOL)}"
            )
            bottom.set_title(f"{layer}: aligned_rel (exact test, log)", fontsize=9)
            bottom.axhspan(LOG_FLOOR / 3, EXACT_TOL, color="tab:green", alpha=0.07, linewidth=0)
            floor_note = f" (0 drawn at {fmt(LOG_FLOOR)})" if clipped else ""
            bottom.set_ylabel(f"aligned_rel{floor_note}", fontsize=8)
            if not any_point:
                bottom.text(
                    0.5, 0.5, "no alignable shift", transform=bottom.transAxes, ha="center", fontsize=8
                )
        else:
            title = " / ".join(_label(m) for m in lower)
            bottom.set_title(f"{layer}: {title}", fontsize=9)
            bottom.set_ylabel(title if len(lower) == 1 else "share of images", fontsize=8)
        for ax in (top, bottom):
            ax.set_xlabel("radius max(|dy|, |dx|)", fontsize=8)
            if all_radii:
                ax.set_xticks(all_radii)
                ax.set_xlim(all_radii[0] - 0.3, all_radii[-1] + 0.3)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
        top.legend(fontsize=6.5, loc="best", framealpha=0.7)
        bottom.legend(fontsize=6.5, loc="lower left" if len(lower) > 1 else "best", framealpha=0.7)
    mode, pattern = results.get("shift_mode"), results.get("shift_pattern")
    fig.suptitle(
        f"Radial profiles ({mode} shifts, {pattern} pattern): trained solid, untrained dashed", fontsize=10
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
        ax_row[0].imshow(pair["x"].numpy(), cmap="gray", vmin=0, vmax=1)
        ax_row[1].imshow(pair["tx"].numpy(), cmap="gray", vmin=0, vmax=1)
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
def default_example_shifts(max_shift: int) -> list[tuple[int, int]]:
    """One odd and one even diagonal shift within ``max_shift`` (e.g. (1, 1) and (2, 2))."""
    out = []
    if max_shift >= 1:
        out.append((1, 1))
    if max_shift >= 2:
        out.append((2, 2))
    return out or [(0, 0)]


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
