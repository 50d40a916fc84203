"""Every figure, drawn from a results dict alone (the network is never run), as a plain
:class:`matplotlib.figure.Figure` on an Agg canvas (never ``pyplot``); given ``path``, saved atomically."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from shiftprobe.atomic import save_figure
from shiftprobe.probe.migrate import migrate
from shiftprobe.probe.stats import Z95
from shiftprobe.reporting import verdicts as v
from shiftprobe.reporting.format import finite, fmt, get, halfwidth, interval, param_label, run_ci, title_of

DPI = 120
#: values of exactly 0 are drawn at this floor on log axes
LOG_FLOOR = 1e-10
#: annotate heatmap cells with their value when a panel is at most this many cells wide
ANNOTATE_MAX_SIDE = 9
SCORE_CMAP = "viridis"
#: the exact-test heatmap: dark = exact, bright = far from any alignment
EXACT_CMAP = "magma"
#: shading of a 95 % interval band around a profile
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
#: metrics whose natural range is [.., 1] (1 = unchanged): the colour scale tops out at 1
BOUNDED_METRICS = {"invariance_score", "equivariance_score", "equivariance_score_certified", "consistency",
                   "consistency_correct", "shifted_acc", "cos"}
#: the rows of a family's curves: (metric(s), y label, log axis)
CURVE_ROWS = (
    (("invariance_score",), "invariance score", False),
    (("equivariance_score",), "sorted equivariance score", False),
    (("aligned_rel",), "aligned_rel (log)", True),
    (("consistency", "shifted_acc"), "share of images", False),
)
X_LABELS = {"k": "rotation (k x 90°)", "angle_deg": "rotation angle (degrees)",
            "offset_px": "offset (pixels)", "flip": "flip"}
#: one bar's width in the Lie derivative's bar chart, as a share of a slot (two networks side by side)
BAR = 0.38


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None, dpi: int = DPI) -> Figure:
    """Write ``fig`` to ``path`` atomically (its folder made if needed); nothing for None."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path, dpi=dpi)
    return fig


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _nan(block: Mapping | None, layer: str, metric: str) -> float:
    """The metric as a float, NaN where missing or null."""
    value = get(block, layer, metric)
    return math.nan if value is None else value


def _cmap_with_blank(name: str):
    return matplotlib.colormaps[name].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def _axes_text(ax, text: str, extent=None, **kw) -> None:
    """``text`` in the middle of ``ax``; with ``extent``, the empty panel keeps that image extent."""
    if extent is not None:
        ax.set_xlim(*extent[:2])
        ax.set_ylim(*extent[2:])
        ax.set_aspect("equal")
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", **kw)


def _unit_lines(ax) -> None:
    ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")


def _style(network: str) -> dict:
    return TRAINED_STYLE if network == "trained" else UNTRAINED_STYLE


def _setup(t: Mapping) -> str:
    return f"{v.config(t, 'mode')} shifts, {v.config(t, 'pattern')}"


def _widest(widths) -> float | None:
    widths = [w for w in widths if w is not None]
    return max(widths) if widths else None


# -- translation: heatmaps ------------------------------------------------------------------------
def _shift_axes(t: Mapping) -> tuple[list[int], list[int]]:
    """The dy and dx values of the heatmap grid (one dy row for the axis pattern)."""
    shifts = [v.shift_of(b) for _, net in v.networks(t) for b in v.blocks(net)]
    m = v.config(t, "max_shift")
    if m is None:
        m = max((max(abs(dy), abs(dx)) for dy, dx in shifts), default=0)
    full = list(range(-int(m), int(m) + 1))
    if v.config(t, "pattern") == "axis" or (shifts and all(dy == 0 for dy, _ in shifts)):
        return [0], full
    return full, full


def _param_grid(net: Mapping, layer: str, metric: str, ys, xs, where) -> np.ndarray:
    """``len(ys) x len(xs)`` array of a metric over a 2-D parameter (``where(block)``: its ``(y, x)``);
    NaN where not measured."""
    grid = np.full((len(ys), len(xs)), np.nan)
    row, col = {y: i for i, y in enumerate(ys)}, {x: j for j, x in enumerate(xs)}
    for b in v.blocks(net):
        y, x = where(b)
        if y in row and x in col:
            grid[row[y], col[x]] = _nan(b, layer, metric)
    return grid


def sensitivity_grid(net: Mapping, layer: str, metric: str, dys: Sequence[int], dxs: Sequence[int]):
    """A metric of one network's translation section over the (dy, dx) shift grid; NaN where not measured."""
    return _param_grid(net, layer, metric, dys, dxs, v.shift_of)


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
    return Normalize(lo, hi if hi != lo else lo + 1.0)


def exact_test_grid(net: Mapping, layer: str, dys: Sequence[int], dxs: Sequence[int]):
    """The exact test over the shift grid: ``aligned_rel`` where the stride divides the shift, the best
    integer alignment (``nearest_aligned_rel``) elsewhere. Returns ``(values, nearest)``, ``nearest``
    True where the value is a best alignment rather than the exact test; NaN where neither exists."""
    exact = sensitivity_grid(net, layer, "aligned_rel", dys, dxs)
    nearest = sensitivity_grid(net, layer, "nearest_aligned_rel", dys, dxs)
    use_nearest = ~np.isfinite(exact) & np.isfinite(nearest)
    return np.where(use_nearest, nearest, exact), use_nearest


def _exact_norm(grids: Sequence[np.ndarray], tol: float) -> LogNorm:
    """Log scale from well below the exactness threshold to at least 1: exact cells sit at the bottom."""
    positive = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in grids] + [np.array([tol / 100])])
    return LogNorm(max(float(positive.min()), LOG_FLOOR), max(1.0, float(positive.max())))


def _grid_axes(ax, dxs, dys) -> None:
    step = 1 if len(dxs) <= 9 else 2
    ax.set_xticks(dxs[::step])
    ax.set_yticks(dys[::step])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("dx (right)", fontsize=8)
    ax.set_ylabel("dy (down)", fontsize=8)


def _extent(dys, dxs) -> tuple[float, float, float, float]:
    return dxs[0] - 0.5, dxs[-1] + 0.5, dys[-1] + 0.5, dys[0] - 0.5


def _heatmap(ax, grid, cmap, norm, dys, dxs, annotate: bool, approx=None):
    """``grid`` over (dy, dx), values below a log scale's floor drawn at the floor; written in the cells
    with ``annotate`` (``≈`` where ``approx``)."""
    shown = np.where(grid <= norm.vmin, norm.vmin, grid) if isinstance(norm, LogNorm) else grid
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, extent=_extent(dys, dxs),
                      interpolation="nearest")
    if annotate:
        _annotate(ax, grid, dys, dxs, norm, cmap, approx)
    return image


def _annotate(ax, grid, dys, dxs, norm, cmap, approx=None) -> None:
    fontsize = 6 if len(dxs) > 5 else 7
    for i, dy in enumerate(dys):
        for j, dx in enumerate(dxs):
            value = grid[i, j]
            if not np.isfinite(value):
                continue
            r, g, b, _ = cmap(norm(max(value, norm.vmin) if isinstance(norm, LogNorm) else value))
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            text = "0" if value == 0 else (f"{value:.2f}" if abs(value) >= 1e-2 else fmt(value, 1))
            if approx is not None and approx[i, j]:
                text = "≈" + text
            ax.text(dx, dy, text, ha="center", va="center", fontsize=fontsize, color=colour)


def _colour_bar(fig, image, axes, one_row: bool):
    where = {"location": "bottom", "shrink": 0.8, "aspect": 30} if one_row else {"shrink": 0.9, "aspect": 25}
    bar = fig.colorbar(image, ax=axes, **where)
    bar.ax.tick_params(labelsize=7)
    return bar


def _draw_exact_rows(fig, exact_axes, t, nets, conv_cols, dys, dxs, one_row, annotate) -> None:
    """The exact-test rows (one per network): a log heatmap per spatial layer; other panels hidden."""
    tol = v.exact_tol(t)
    for ax in exact_axes.ravel():
        ax.set_visible(False)
    for col, layer in conv_cols:
        grids = [exact_test_grid(net, layer, dys, dxs) for _, net in nets]
        norm = _exact_norm([g for g, _ in grids], tol)
        cmap = _cmap_with_blank(EXACT_CMAP)
        image = None
        for (name, _), (grid, nearest), ax in zip(nets, grids, exact_axes[:, col], strict=True):
            ax.set_visible(True)
            _grid_axes(ax, dxs, dys)
            ax.set_title(f"{layer} · {name}\nexact test, log (≈: best alignment)", fontsize=9)
            image = _heatmap(ax, grid, cmap, norm, dys, dxs, annotate, approx=nearest)
            if not annotate and nearest.any():
                yy, xx = np.nonzero(nearest)
                ax.scatter(np.asarray(dxs)[xx], np.asarray(dys)[yy], s=4, c="white", marker=".", linewidths=0)
        if image is not None:
            bar = _colour_bar(fig, image, list(exact_axes[:, col]), one_row)
            (bar.ax.axvline if one_row else bar.ax.axhline)(tol, color="cyan", linewidth=1.2)
            bar.set_label(f"aligned_rel (cyan: exact below {fmt(tol)})", fontsize=7)


def _exact_note(ax, tol: float) -> None:
    ax.set_visible(True)
    ax.axis("off")
    ax.text(
        0.0, 0.95,
        "Exact test (spatial layers), top rows:\naligned_rel = |f(Tx) - f(x) moved by s/stride|\non the "
        f"certified region, relative.\nDark (< {fmt(tol)}): exact. Where the stride\ndoes not divide the "
        "shift no exact alignment\nexists: the best integer alignment is shown\n(≈). A stride-2 layer is "
        "exact only at even\nshifts: a checkerboard.\n\nBottom rows: the key score per layer\n(for conv "
        "layers the lab's sorting hint,\nlowered by the frame's border in crop mode).",
        transform=ax.transAxes, va="top", ha="left", fontsize=8,
    )


def _draw_score_column(fig, column, nets, layer, metric, dys, dxs, one_row, annotate) -> bool:
    """One layer's score heatmaps (one per network); returns whether any panel states an interval."""
    grids = [sensitivity_grid(net, layer, metric, dys, dxs) for _, net in nets]
    norm = _norm_for(metric, grids)
    cmap = _cmap_with_blank(SCORE_CMAP)
    image, any_interval = None, False
    for ax, (name, net), grid in zip(column, nets, grids, strict=True):
        _grid_axes(ax, dxs, dys)
        title = f"{layer} · {name}\n{_label(metric)}"
        widest = _widest(halfwidth(b, layer, metric) for b in v.nonzero_shifts(net))
        if widest is not None:
            any_interval = True
            title += f"\n95 % interval: ± ≤ {fmt(widest, 2)}"
        ax.set_title(title, fontsize=9)
        if norm is None:  # not measured for this layer (aligned_rel of a vector layer), or n/a at every shift
            what = "n/a" if any(metric in (b.get(layer) or {}) for b in v.nonzero_shifts(net)) else "not measured"
            _axes_text(ax, f"{metric}\n{what}\nfor {layer}", _extent(dys, dxs), fontsize=8, color="dimgray")
        else:
            image = _heatmap(ax, grid, cmap, norm, dys, dxs, annotate)
    if image is not None:
        _colour_bar(fig, image, list(column), one_row)
    return any_interval


def plot_sensitivity_heatmaps(results: Mapping, metric_by_layer: Mapping[str, str] | str | None = None,
                              path: str | Path | None = None, dpi: int = DPI,
                              exact_test: bool | None = None) -> Figure:
    """``heatmaps.png``: a heatmap per layer (columns) and network (rows) over (dy, dx) of
    ``metric_by_layer[layer]`` (a dict, or one metric name for all; default: each layer's key score).
    ``exact_test`` (default: when no ``metric_by_layer`` is given) puts the conv layers' exact test in
    rows above (docs/measurement.md, Figures)."""
    t = v.translation(migrate(results))
    layers, nets, (dys, dxs) = list(t.get("layers", [])), v.networks(t), _shift_axes(t)
    one_row = len(dys) == 1
    exact_test = metric_by_layer is None if exact_test is None else exact_test
    conv_cols = [(j, layer) for j, layer in enumerate(layers) if v.is_conv(t, layer)] if exact_test else []
    row_blocks = 2 if conv_cols else 1
    height = (1.3 * len(nets) + 1.3) * row_blocks if one_row else 3.6 * len(nets) * row_blocks + 0.6
    fig = _new_figure(3.7 * len(layers) + 0.4, height)  # fixed panel size: cells shrink as the grid grows
    axes = fig.subplots(len(nets) * row_blocks, len(layers), squeeze=False)
    annotate = len(dxs) <= ANNOTATE_MAX_SIDE
    if conv_cols:
        _draw_exact_rows(fig, axes[: len(nets)], t, nets, conv_cols, dys, dxs, one_row, annotate)
        free = [j for j in range(len(layers)) if j not in dict(conv_cols)]
        if free:
            _exact_note(axes[0, free[0]], v.exact_tol(t))
    score_axes = axes[len(nets):] if conv_cols else axes
    chosen = metric_by_layer or {}
    chosen = dict.fromkeys(layers, chosen) if isinstance(chosen, str) else chosen
    any_interval = False
    for j, layer in enumerate(layers):
        metric = chosen.get(layer) or v.key_metric(t, layer)
        any_interval |= _draw_score_column(fig, score_axes[:, j], nets, layer, metric, dys, dxs, one_row,
                                           annotate)
    sure = ("each score panel states its widest 95 % interval over test images" if any_interval
            else "no score here has an interval" if v.has_intervals(t) else "no intervals in these results (older results.json)")
    fig.suptitle(f"Translation-sensitivity maps ({_setup(t)} pattern; blank = not measured / n/a); {sure}",
                 fontsize=10)
    return _save(fig, path, dpi)


# -- translation: radial profiles -----------------------------------------------------------------
def _radial_series(net: Mapping, layer: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = v.blocks(net, "radius")
    return (np.array([int(b["param"]) for b in rows], dtype=float),
            np.array([_nan(b, layer, metric) for b in rows], dtype=float))


def radial_band(net: Mapping, layer: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(radii, lo, hi)`` of a measured metric's 95 % interval (``run_ci``) per radius block of one
    network's translation section; None without intervals."""
    rows = [(int(b["param"]), *ci) for b in v.blocks(net, "radius")
            if get(b, layer, metric) is not None and (ci := run_ci(b.get(layer), metric)) is not None]
    if not rows:
        return None
    radii, lo, hi = zip(*rows, strict=True)
    return np.array(radii, dtype=float), np.array(lo), np.array(hi)


def _has_series(nets, layer: str, metric: str) -> bool:
    return any(np.isfinite(_radial_series(net, layer, metric)[1]).any() for _, net in nets)


def _draw_profiles(ax, nets, layer, metrics, colours, log_axis: bool) -> tuple[bool, bool, float | None]:
    """Lines (trained solid, untrained dashed) with their interval bands; returns (any point, a zero was
    clipped to the log floor, the widest half-width drawn)."""
    any_point = clipped = False
    widths = []
    shown = [m for m in metrics if _has_series(nets, layer, m)]
    for k, metric in enumerate(shown):
        colour = colours[k % len(colours)]
        for name, net in nets:
            r, values = _radial_series(net, layer, metric)
            if log_axis:
                keep = np.isfinite(values) & (r > 0)  # radius 0 is the identity: the error is 0 there
                r, values = r[keep], values[keep]
                clipped = clipped or bool((values < LOG_FLOOR).any())
                values = np.maximum(values, LOG_FLOOR)
            any_point = any_point or bool(np.isfinite(values).any())
            label = f"{SHORT_LABELS.get(metric, _label(metric))} · {name}" if len(shown) > 1 else name
            ax.plot(r, values, color=colour, label=label, **_style(name))
            band = None if log_axis else radial_band(net, layer, metric)
            if band is not None:
                ax.fill_between(*band, color=colour, alpha=BAND_ALPHA, linewidth=0)
                widths.append(float(np.max((band[2] - band[1]) / 2)))
    return any_point, clipped, _widest(widths)


def _conv_panels(top, bottom, nets, layer: str, tol: float) -> list[float | None]:
    """A conv layer: the exact test on top (log axis), the sorting hint below."""
    any_point, clipped, _ = _draw_profiles(top, nets, layer, ["aligned_rel", "nearest_aligned_rel"],
                                           ("tab:red", "tab:purple"), True)
    top.set_yscale("log")
    top.axhline(tol, color="black", linewidth=0.8, linestyle=":", label=f"exact below {fmt(tol)}")
    top.axhspan(LOG_FLOOR / 3, tol, color="tab:green", alpha=0.07, linewidth=0)
    top.set_title(f"{layer}: exact test (log)", fontsize=9)
    top.set_ylabel(f"aligned_rel{f' (0 drawn at {fmt(LOG_FLOOR)})' if clipped else ''}", fontsize=8)
    if not any_point:
        top.text(0.5, 0.5, "no alignable shift", transform=top.transAxes, ha="center", fontsize=8)
    _, _, w = _draw_profiles(bottom, nets, layer, ["equivariance_score", "equivariance_score_certified"],
                             ("tab:blue", "tab:green"), False)
    bottom.set_title(f"{layer}: the lab's sorting hint", fontsize=9)
    bottom.set_ylabel("sorted equivariance score", fontsize=8)
    _unit_lines(bottom)
    return [w]


def _vector_panels(top, bottom, nets, layer: str, is_classifier: bool) -> list[float | None]:
    """Any other layer: the invariance score on top; rel (the classifier: consistency, accuracy) below."""
    any_point, _, w_top = _draw_profiles(top, nets, layer, ["invariance_score"], ("tab:blue",), False)
    if not any_point:  # e.g. a constant network: unrelated images do not differ, the score is undefined
        top.text(0.5, 0.5, "n/a at every radius", transform=top.transAxes, ha="center", fontsize=8)
    top.set_title(f"{layer}: {_label('invariance_score')}", fontsize=9)
    top.set_ylabel(_label("invariance_score"), fontsize=8)
    _unit_lines(top)
    below = ["consistency", "consistency_correct", "shifted_acc"] if is_classifier else ["rel"]
    shown = [m for m in below if _has_series(nets, layer, m)]
    colours = ("tab:orange", "tab:brown", "tab:green")
    _, _, w_bottom = _draw_profiles(bottom, nets, layer, shown, colours, False)
    title = " / ".join(_label(m) if len(shown) < 3 else SHORT_LABELS.get(m, _label(m)) for m in shown)
    bottom.set_title(f"{layer}: {title or 'n/a'}", fontsize=9 if len(shown) < 3 else 8)
    bottom.set_ylabel(title if len(shown) == 1 else "share of images", fontsize=8)
    return [w_top, w_bottom]


def plot_radial_profiles(results: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """``radial.png``: per layer, two panels over the radius max(|dy|, |dx|), the conv layers' exact test
    and sorting hint or the other layers' invariance score and rel (the classifier: consistency and
    accuracy), trained solid, untrained dashed, 95 % intervals as bands."""
    t = v.translation(migrate(results))
    layers, nets = list(t.get("layers", [])), v.networks(t)
    fig = _new_figure(3.3 * len(layers) + 0.4, 6.3)
    axes = fig.subplots(2, len(layers), squeeze=False)
    all_radii = v.radii(*[net for _, net in nets])
    widths = []
    for j, layer in enumerate(layers):
        top, bottom = axes[0, j], axes[1, j]
        if v.is_conv(t, layer):
            widths += _conv_panels(top, bottom, nets, layer, v.exact_tol(t))
        else:
            widths += _vector_panels(top, bottom, nets, layer, layer == v.classifier(t))
        for ax in (top, bottom):
            ax.set_xlabel("radius max(|dy|, |dx|)", fontsize=8)
            if all_radii:
                ax.set_xticks(all_radii)
                ax.set_xlim(all_radii[0] - 0.3, all_radii[-1] + 0.3)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="best", framealpha=0.7)
    widest = _widest(widths)
    sure = (
        "no intervals in these results (older results.json)" if widest is None
        else f"shaded: 95 % intervals over test images (widest ±{fmt(widest, 2)}"
        + ("; narrower than the lines where no shading shows)" if widest < 0.01 else ")")
    )
    fig.suptitle(f"Radial profiles ({_setup(t)} pattern): trained solid, untrained dashed; {sure}",
                 fontsize=10)
    return _save(fig, path, dpi)


# -- translation: example pairs -------------------------------------------------------------------
def _no_alignment(ax, shape, stride, stride_txt: str) -> None:
    reason = f"(stride {stride_txt} does not divide)" if stride is not None else "(no stride)"
    _axes_text(ax, f"no exact\nalignment\n{reason}", _extent(range(shape[0]), range(shape[1])), fontsize=6.5,
               color="dimgray")
    ax.set_facecolor("#f2f2f2")


def _aligned_panel(ax, diff: np.ndarray, lim: float) -> None:
    """The aligned difference (NaN, grey: positions outside the certified region); says so where it is 0."""
    ax.imshow(np.ma.masked_invalid(diff), cmap=_cmap_with_blank(MAP_CMAP), vmin=-lim, vmax=lim,
              interpolation="nearest")
    ax.set_facecolor("#e0e0e0")
    max_abs = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else math.nan
    ax.set_xlabel(f"max|Δ| {fmt(max_abs, 2)}", fontsize=6.5, labelpad=1)
    if max_abs == 0:  # an exact match draws a blank panel: say it
        _axes_text(ax, "0 everywhere", fontsize=6.5, color="black")


def _example_row(fig, ax_row, pair: Mapping, channels, stride, stride_txt: str) -> list[str]:
    """One (image, shift) pair: x, T(s) x, then f(x), f(Tx) and their aligned difference per channel."""
    dy, dx = pair["shift"]
    for ax, pixels in ((ax_row[0], pair["x"]), (ax_row[1], pair["tx"])):  # grey H x W, or colour H x W x C
        ax.imshow(np.asarray(pixels, dtype=float).clip(0, 1), cmap="gray", vmin=0, vmax=1)
    ax_row[0].set_ylabel(f"image {pair['image']}\nshift ({dy}, {dx})", fontsize=8)
    headers, image = ["x", "T(s) x"], None
    f_x, f_t = np.asarray(pair["f_x"], dtype=float), np.asarray(pair["f_t"], dtype=float)
    diff = None if pair.get("aligned_diff") is None else np.asarray(pair["aligned_diff"], dtype=float)
    for k, c in enumerate(channels):
        a, b = f_x[k], f_t[k]
        lim = float(max(np.abs(a).max(), np.abs(b).max(), 1e-12))
        base = 2 + 3 * k
        image = ax_row[base].imshow(a, cmap=MAP_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax_row[base + 1].imshow(b, cmap=MAP_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        if diff is None:
            _no_alignment(ax_row[base + 2], a.shape, stride, stride_txt)
        else:
            _aligned_panel(ax_row[base + 2], diff[k], lim)
        headers += [f"f(x) ch{c}", f"f(Tx) ch{c}", f"aligned Δ ch{c}"]
    if image is not None:
        bar = fig.colorbar(image, ax=list(ax_row[2:]), fraction=0.02, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("activation (last channel's scale)", fontsize=6)
    return headers


def plot_example_pairs(examples: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """``examples.png``: a row per (image, shift) pair of ``examples`` (the translation section's
    ``examples``; arrays as nested lists or tensors): x, T(s)x, then per channel f(x), f(Tx) and their
    aligned difference on one symmetric colour scale, so a match shows as white."""
    pairs, channels = examples["pairs"], examples["channels"]
    layer, mode, stride = examples["layer"], examples["mode"], examples["stride"]
    n_cols = 2 + 3 * len(channels)
    fig = _new_figure(1.3 * n_cols + 0.9, 1.45 * len(pairs) + 1.1)
    axes = fig.subplots(len(pairs), n_cols, squeeze=False)
    stride_txt = "?" if stride is None else "x".join(map(str, dict.fromkeys(stride)))
    for row, pair in enumerate(pairs):
        headers = _example_row(fig, axes[row], pair, channels, stride, stride_txt)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(headers[col], fontsize=7.5)
    where = (
        "on the whole map (circular)" if mode == "roll" and examples.get("circular")
        else "on the certified region (grey = positions whose receptive field leaves the image)"
    )
    fig.suptitle(
        f"{layer} feature maps of x and T(s)x ({mode} shifts); aligned Δ = f(Tx) − f(x) moved by "
        f"s/{stride_txt} {where}\nchannels shown: {', '.join(map(str, channels))}, the {len(channels)} most "
        "active (largest mean |f(x)|) over these images; each channel's three panels share one symmetric "
        "colour scale",
        fontsize=8.5,
    )
    return _save(fig, path, dpi)


# -- other families -------------------------------------------------------------------------------
def _number(value) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else finite(value)


def curve_series(section: Mapping) -> list[tuple[str, list[tuple[float, str, int]]]]:
    """The x positions of a 1-D section's parameter blocks by curve: ``[(curve name, [(x, tick label,
    block index), ...]), ...]``; one curve per axis for sub-pixel shifts along axes, else one (named "")."""
    params = [b.get("param") for b in v.blocks(section)]
    numeric = all(_number(p) is not None for p in params)
    curves: dict[str, list[tuple[float, str, int]]] = {}
    for i, p in enumerate(params):
        if isinstance(p, Mapping):
            x = float(p.get("offset"))
            curves.setdefault(f"along {p.get('axis')}", []).append((x, f"{x:g}", i))
        elif section.get("parameter") == "k" and numeric:
            curves.setdefault("", []).append((90.0 * float(p), f"{90 * int(p)}°", i))
        elif numeric:
            curves.setdefault("", []).append((float(p), param_label(section, p), i))
        else:  # categorical (flips)
            curves.setdefault("", []).append((float(i), param_label(section, p), i))
    return [(name, sorted(points)) for name, points in curves.items()]


def _categorical(section: Mapping) -> bool:
    """Whether the parameter has no order (flips): points with error bars, no lines between them."""
    params = [b.get("param") for b in v.blocks(section)]
    return any(_number(p) is None and not isinstance(p, Mapping) for p in params)


def _draw_curve(ax, xs, rows, layer, metric, log, colour, style, categorical) -> float | None:
    """One layer's metric against the parameter, with its interval band (bars where unordered)."""
    ys = np.array([get(r, layer, metric) if r else None for r in rows], dtype=float)
    if log:
        ys = np.maximum(ys, LOG_FLOOR)
    ax.plot(xs, ys, color=colour, **style, markersize=3.5, linewidth=1.2)
    cis = [interval(r, layer, metric) if r else None for r in rows]
    if log or all(ci is None for ci in cis):
        return None
    lo = np.array([ci[0] if ci else np.nan for ci in cis], dtype=float)
    hi = np.array([ci[1] if ci else np.nan for ci in cis], dtype=float)
    if categorical:
        ax.vlines(xs, lo, hi, color=colour, linewidth=1.0, alpha=0.8)
    else:
        ax.fill_between(xs, lo, hi, color=colour, alpha=BAND_ALPHA, linewidth=0)
    return float(np.nanmax((hi - lo) / 2)) if np.isfinite(hi - lo).any() else None


def _draw_curves(ax, section, points, metrics, log, colours, layers) -> float | None:
    """Lines of ``layers`` (and metrics) on ``ax``; returns the widest interval half-width drawn.
    Unordered parameters (flips) get points with error bars, side by side per layer."""
    widths, categorical = [], _categorical(section)
    params = [repr(b.get("param")) for b in v.blocks(section)]
    for name, net in v.networks(section):
        by_param = {repr(b.get("param")): b for b in v.blocks(net)}
        if not by_param:
            continue
        rows = [by_param.get(params[i]) for _, _, i in points]
        xs = np.array([x for x, _, _ in points], dtype=float)
        for n_layer, layer in enumerate(layers):
            for k, metric in enumerate(metrics):
                if not any(get(r, layer, metric) is not None for r in rows if r):
                    continue
                label = layer if len(metrics) == 1 else metric.replace("_", " ")
                style = {**_style(name), "label": label if name == "trained" else None}
                if len(metrics) > 1:
                    style["marker"] = ("o", "^")[k % 2]
                x = xs
                if categorical:  # side by side: layers, then trained / untrained
                    slot = 2 * n_layer + (name != "trained")
                    x = xs + 0.6 * ((slot + 0.5) / (2 * max(1, len(layers))) - 0.5)
                    style["linestyle"] = "none"
                widths.append(_draw_curve(ax, x, rows, layer, metric, log, colours[layer], style,
                                          categorical))
    return _widest(widths)


def _curve_axes(ax, section, points, label: str, log: bool, tol: float) -> None:
    if log:
        ax.set_yscale("log")
        if section.get("exact"):
            ax.axhline(tol, color="black", linewidth=0.8, linestyle=":", label=f"exact below {fmt(tol)}")
    else:
        _unit_lines(ax)
    ax.set_xticks([x for x, _, _ in points])
    if _categorical(section):
        ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_xticklabels([t for _, t, _ in points], fontsize=6, rotation=45 if len(points) > 8 else 0)
    parameter = section.get("parameter")
    ax.set_xlabel(X_LABELS.get(parameter, str(parameter or "parameter")), fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="best", framealpha=0.7)


def plot_family_curves(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """A 1-D family: a row per metric of ``CURVE_ROWS`` measured, a column per curve (x and y for sub-pixel
    shifts); a line per layer, trained solid and untrained dashed, the 95 % intervals as bands."""
    series = curve_series(section)
    layers = section.get("layers", [])
    rows = [row for row in CURVE_ROWS
            if any(v.has_value(section, layer, m) for layer in layers for m in row[0])]
    colours = {layer: f"C{i % 10}" for i, layer in enumerate(layers)}
    fig = _new_figure(max(6.5, 4.6 * len(series) + 0.6), 2.6 * max(1, len(rows)) + 0.8)
    axes = fig.subplots(max(1, len(rows)), max(1, len(series)), squeeze=False)
    clf, widths = section.get("classifier"), []
    for j, (curve, points) in enumerate(series):
        for i, (metrics, label, log) in enumerate(rows):
            ax = axes[i, j]
            if metrics[0] == "consistency":
                drawn = {clf: colours.get(clf, "C0")}
                widths.append(_draw_curves(ax, section, points, metrics, log, drawn, [clf]))
                ax.set_title(f"{clf}: consistency (o) and accuracy on transformed (^)", fontsize=8)
            else:
                widths.append(_draw_curves(ax, section, points, metrics, log, colours, layers))
                ax.set_title(f"{label}" + (f" · {curve}" if curve else ""), fontsize=9)
            _curve_axes(ax, section, points, label, log, v.exact_tol(section))
    widest = _widest(widths)
    shown = "bars" if _categorical(section) else "bands"
    sure = ("no intervals in these results" if widest is None
            else f"{shown}: 95 % intervals over test images (widest ±{fmt(widest, 2)})")
    styles = "trained solid, untrained dashed" if section.get("untrained") else "trained network"
    fig.suptitle(f"{title_of(name, section).replace('`', '')}\n{styles}; {sure}", fontsize=10)
    return _save(fig, path, dpi)


def grid_axes(section: Mapping) -> tuple[list[float], list[float]]:
    """The oy (rows) and ox (columns) values of a 2-D section's grid, the identity (0, 0) included."""
    params = [b.get("param") for b in v.blocks(section)]
    return sorted({0.0} | {float(p[0]) for p in params}), sorted({0.0} | {float(p[1]) for p in params})


def family_grid(net: Mapping, layer: str, metric: str, oys, oxs) -> np.ndarray:
    """``metric`` on the (oy, ox) grid; NaN where not measured (the identity)."""
    return _param_grid(net, layer, metric, oys, oxs, lambda b: tuple(float(x) for x in b.get("param")))


def _grid_norm(grids, metric: str, tol: float):
    if metric == "aligned_rel":
        finite_values = np.concatenate([g[np.isfinite(g)] for g in grids] + [np.array([tol])])
        return LogNorm(vmin=max(LOG_FLOOR, float(finite_values.min())),
                       vmax=max(float(finite_values.max()), tol * 10))
    finite_values = np.concatenate([g[np.isfinite(g)] for g in grids] + [np.array([0.0, 1.0])])
    return Normalize(vmin=float(finite_values.min()), vmax=max(1.0, float(finite_values.max())))


def plot_family_heatmaps(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI):
    """A 2-D family: a heatmap per layer over (oy, ox) of the invariance score (trained, untrained),
    then of aligned_rel where measured."""
    layers = list(section.get("layers", []))
    oys, oxs = grid_axes(section)
    rows = [(net, res, "invariance_score") for net, res in v.networks(section)]
    if any(np.isfinite(family_grid(section, layer, "aligned_rel", oys, oxs)).any() for layer in layers):
        rows.append(("trained", section, "aligned_rel"))
    fig = _new_figure(2.7 * len(layers) + 1.2, 2.5 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), len(layers), squeeze=False)
    annotate = max(len(oys), len(oxs)) <= ANNOTATE_MAX_SIDE
    for i, (net, res, metric) in enumerate(rows):
        grids = [family_grid(res, layer, metric, oys, oxs) for layer in layers]
        norm = _grid_norm(grids, metric, v.exact_tol(section))
        image = None
        for j, (layer, grid) in enumerate(zip(layers, grids, strict=True)):
            ax = axes[i, j]
            if not np.isfinite(grid).any():
                _axes_text(ax, "not measured", fontsize=8)
            else:
                shown = np.maximum(grid, LOG_FLOOR) if metric == "aligned_rel" else grid
                cmap = EXACT_CMAP if metric == "aligned_rel" else SCORE_CMAP
                image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, origin="upper")
                for (r, c), value in np.ndenumerate(grid) if annotate else ():
                    if np.isfinite(value):
                        ax.text(c, r, fmt(value, 2), ha="center", va="center", fontsize=5, color="white")
            ax.set_xticks(range(len(oxs)), [f"{x:g}" for x in oxs], fontsize=6, rotation=90)
            ax.set_yticks(range(len(oys)), [f"{y:g}" for y in oys], fontsize=6)
            ax.set_title(f"{layer} · {net}{': aligned_rel' if metric == 'aligned_rel' else ''}", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("ox (px)", fontsize=7)
            if j == 0:
                ax.set_ylabel("oy (px)", fontsize=7)
        if image is not None:
            label = "aligned_rel (log)" if metric == "aligned_rel" else "invariance score"
            fig.colorbar(image, ax=list(axes[i, :]), shrink=0.8).set_label(label, fontsize=7)
    fig.suptitle(f"{title_of(name, section).replace('`', '')}: per layer over the (oy, ox) grid; "
                 "blank = the identity", fontsize=10)
    return _save(fig, path, dpi)


def plot_family(name: str, section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """The figure of one family section: heatmaps for a 2-D family, curves otherwise."""
    draw = plot_family_heatmaps if section.get("dims") == 2 else plot_family_curves
    return draw(name, section, path, dpi)


# -- the Lie derivative's decomposition -----------------------------------------------------------
def _contribution(net: Mapping, name: str, generator: str) -> tuple[float, float]:
    """rel and its 95 % half-width (NaN where missing or 0: no bar on a log axis)."""
    entry = v.layerwise(net, "layerwise", name) or v.layerwise(net, "layerwise_between", name)
    stats = (entry.get(generator) or {}).get("contribution") or {}
    rel, se = finite(stats.get("rel")), finite(stats.get("rel_se"))
    if rel is None or rel <= 0:
        return math.nan, 0.0
    return rel, (Z95 * se if se is not None else 0.0)


def plot_lie_layerwise(section: Mapping, path: str | Path | None = None, dpi: int = DPI) -> Figure:
    """``lie_layerwise.png``: a panel per generator of a Lie derivative section, a bar per module (and per
    non-empty gap between modules) in running order: its contribution's rel with the 95 % interval,
    trained solid, untrained hatched, the end-to-end value as a line (log axis: 0 has no bar)."""
    generators = list(v.config(section, "generators") or [])
    gaps = [label for label, entry in v.layerwise(section, "layerwise_between").items()
            if v.has_contribution(entry, generators)]
    names, nets = list(v.layerwise(section, "layerwise")) + gaps, v.networks(section)
    fig = _new_figure(max(6.0, 0.55 * len(names) + 2.0), 2.6 * len(generators) + 0.6)
    axes = fig.subplots(len(generators), 1, squeeze=False)[:, 0]
    slots = np.arange(len(names))
    for ax, g in zip(axes, generators, strict=True):
        for k, (label, net) in enumerate(nets):
            values = [_contribution(net, name, g) for name in names]
            rel, hw = np.array([x[0] for x in values]), np.array([x[1] for x in values])
            low = np.minimum(hw, rel * (1 - 1e-3))  # a log axis cannot draw an interval below 0
            ax.bar(slots + (k - (len(nets) - 1) / 2) * BAR, rel, BAR, yerr=[low, hw], capsize=2,
                   color=f"C{k}", hatch="//" if label == "untrained" else None, alpha=0.9, label=label)
            total = finite((v.layerwise(net, "layerwise_total", g).get("end_to_end") or {}).get("rel"))
            if total and total > 0:
                ax.axhline(total, color=f"C{k}", linestyle="--", linewidth=1, label=f"end-to-end ({label})")
        if np.isfinite([_contribution(n, name, g)[0] for _, n in nets for name in names]).any():
            ax.set_yscale("log")
        unit = (v.config(section, "units") or {}).get(g, "")
        ax.set_title(f"{g}: contribution to the output's Lie derivative (rel, {unit})", fontsize=9)
        ax.set_xticks(slots, names, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path, dpi)


# -- everything at once ---------------------------------------------------------------------------
def save_all_figures(results: Mapping, out_dir: str | Path, examples: Mapping | None = None,
                     dpi: int = DPI) -> dict[str, Figure]:
    """Write every figure of ``results`` (any schema) into ``out_dir``: those of translation (``examples``
    default: the translation section's), ``<family>.png`` per other family, ``lie_layerwise.png``.
    Returns ``{name: Figure}``, not closed, so a caller can log them (``writer.add_figure(name, fig)``)."""
    results, out_dir, figures = migrate(results), Path(out_dir), {}
    t = v.translation(results)
    if t is not None:
        figures["heatmaps"] = plot_sensitivity_heatmaps(results, path=out_dir / "heatmaps.png", dpi=dpi)
        figures["radial"] = plot_radial_profiles(results, path=out_dir / "radial.png", dpi=dpi)
        examples = t.get("examples") if examples is None else examples
        if examples:
            figures["examples"] = plot_example_pairs(examples, path=out_dir / "examples.png", dpi=dpi)
    for name, section in v.transform_families(results).items():
        if v.blocks(section):
            figures[name] = plot_family(name, section, path=out_dir / f"{name}.png", dpi=dpi)
    lie = v.lie_section(results)
    if v.layerwise(lie, "layerwise") and v.config(lie, "generators"):
        figures["lie_layerwise"] = plot_lie_layerwise(lie, path=out_dir / "lie_layerwise.png", dpi=dpi)
    return figures
