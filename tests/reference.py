"""Brute-force float64 reference of the shift measurement, written from its definitions alone.

Imports nothing from ``shiftprobe``: tests compare the real engine with it figure by figure.
Everything runs in float64 on a deep copy of the model, one image per forward, one pair at a time.

* ``shift(x, dy, dx, mode)``: out[..., i+dy, j+dx] = in[..., i, j]; ``crop`` fills 0, ``roll`` wraps.
* ``receptive_field(model, layer, in_shape, canvas_pad=32)``: stride ``r`` and the interval
  ``[r*q + a, r*q + b]`` of input pixels that map position ``q`` reads on an unbounded input, per axis,
  found by perturbing single pixels of random canvases (no autograd).
* ``reference_measure(...)``: per-shift, pooled (summary) and control metrics; see its docstring.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch

CANVAS_SEEDS = (1234, 5678, 91011)  # base canvases; their changed positions are united
PERTURBATION = 4.0  # added to every channel of one pixel (sign alternates between canvases)
CHUNK = 64  # perturbed canvases per forward


class _Stop(Exception):
    """Raised from a hook once every wanted layer is captured (the rest may reject a canvas)."""


def shift(x: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    if mode == "roll":
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if mode != "crop":
        raise ValueError(f"unknown shift mode {mode!r}")
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys = [i for i in range(h) if 0 <= i + dy < h]  # source rows that stay in the frame
    xs = [j for j in range(w) if 0 <= j + dx < w]
    if ys and xs:
        out[..., ys[0] + dy : ys[-1] + dy + 1, xs[0] + dx : xs[-1] + dx + 1] = x[
            ..., ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1
        ]
    return out


@contextlib.contextmanager
def one_thread():
    """Tiny forwards: one thread is far faster than several contending ones on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to("cpu", torch.float64).eval()


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def capture(model: torch.nn.Module, x: torch.Tensor, names) -> dict:
    """Outputs of the named modules (first call of each) and of ``"output"`` for input ``x``.
    Stops the forward once all are captured; a failure after some were captured keeps those."""
    modules, got = dict(model.named_modules()), {}
    wanted = [n for n in names if n != "output"]

    def make_hook(name):
        def hook(module, inputs, out):
            if name not in got:
                got[name] = _first(out).detach().clone()  # clone: later in-place ops must not touch it
            if "output" not in names and all(n in got for n in wanted):
                raise _Stop

        return hook

    aliases = getattr(model, "layer_aliases", {})  # display name -> module name (e.g. logits -> fc2)
    for n in wanted:
        if aliases.get(n, n) not in modules:
            raise KeyError(f"model has no module named {n!r}")
    handles = [modules[aliases.get(n, n)].register_forward_hook(make_hook(n)) for n in wanted]
    try:
        with torch.no_grad():
            out = model(x)
        if "output" in names:
            got["output"] = _first(out).detach().clone()
    except _Stop:
        pass
    except Exception:
        if not got:
            raise
    finally:
        for h in handles:
            h.remove()
    return got


# -- receptive fields by perturbation ------------------------------------------------------------
def _changed_positions(model, names, canvases, pixels):
    """{name: bool (len(pixels), hc, wc)}: map positions that change when one pixel (all channels)
    is perturbed, united over the base canvases."""
    changed = {}
    for k, base in enumerate(canvases):
        delta = PERTURBATION if k % 2 == 0 else -PERTURBATION
        hits = {}
        for start in range(0, len(pixels), CHUNK):
            chunk = pixels[start : start + CHUNK]
            batch = base.repeat(len(chunk) + 1, 1, 1, 1)  # element 0 stays unperturbed
            for i, (y, x) in enumerate(chunk):
                batch[i + 1, :, y, x] += delta
            for n, o in capture(model, batch, names).items():
                tol = 1e-10 * (1.0 + float(o[0].abs().max()))  # guards against batch-dependent rounding
                hits.setdefault(n, []).append(((o[1:] - o[:1]).abs() > tol).any(dim=1))  # any channel
        for n, h in hits.items():
            h = torch.cat(h)
            changed[n] = changed[n] | h if n in changed else h
    return changed


def _axis_field(dep, size_c, real_map, pad, window):
    """From dep[pixel, map index] along one axis (pixels probed: the inclusive ``window``): (r, a, b)
    from the fields of the two centre map positions q, q + 1; None while the window may cut them."""
    if dep.shape[1] < 2:
        raise ValueError("canvas map has fewer than 2 positions")
    q = dep.shape[1] // 2
    (p1,), (p2,) = dep[:, q].nonzero(as_tuple=True), dep[:, q + 1].nonzero(as_tuple=True)
    if len(p1) == 0 or len(p2) == 0:
        return None
    lo1, hi1, lo2, hi2 = int(p1.min()), int(p1.max()), int(p2.min()), int(p2.max())
    if lo1 <= 0 or hi2 >= size_c - 1:
        raise ValueError("receptive field reaches the canvas edge: increase canvas_pad")
    if lo1 <= window[0] or hi2 >= window[1]:
        return None  # may continue beyond the probed pixels: widen the window
    if len(p1) != hi1 - lo1 + 1 or len(p2) != hi2 - lo2 + 1:
        raise ValueError(f"the pixels that change a map position are not an interval: {p1.tolist()}")
    r = lo2 - lo1
    if r < 1 or hi2 - hi1 != r:
        raise ValueError(f"receptive fields of neighbours are not translates ({lo1, hi1} vs {lo2, hi2})")
    if pad % r:
        raise ValueError(f"canvas_pad {pad} is not a multiple of the stride {r}")
    if dep.shape[1] != real_map + 2 * pad // r:
        raise ValueError(f"canvas map size {dep.shape[1]} != {real_map} + 2*{pad}/{r}: no uniform stride")
    # canvas position q <-> real position q - pad/r; canvas pixel c <-> real pixel c - pad
    return r, lo1 - r * q, hi1 - r * q


@one_thread()
def receptive_fields(model, names, in_shape, canvas_pad=32, max_lines=4) -> dict:
    """{name: dict(stride=(ry, rx), a=(ay, ax), b=(by, bx))} or {name: why not (str)}.
    ``model`` must already be a float64 eval copy. The y axis is probed by single pixels down one
    canvas column, the x axis along one row, in a window around the centre that doubles until it
    holds the fields of the centre map positions (the next column/row if this one touches none)."""
    c, h, w = in_shape[-3:]
    real = capture(model, torch.zeros(1, c, h, w, dtype=torch.float64), names)
    hc_, wc_ = h + 2 * canvas_pad, w + 2 * canvas_pad
    canvases = []
    for s in CANVAS_SEEDS:
        g = torch.Generator().manual_seed(s)
        canvases.append(torch.randn(1, c, hc_, wc_, generator=g, dtype=torch.float64))
    result = {n: "not a 4-D output" for n in names if n not in real or real[n].dim() != 4}
    todo = [n for n in names if n not in result]
    cy, cx = hc_ // 2, wc_ // 2
    for j in range(max_lines):
        dep, done_y, done_x, half = {}, set(), set(), 4
        while todo:
            half *= 2
            win_y = (max(cy - half, 0), min(cy + half, hc_ - 1))
            win_x = (max(cx - half, 0), min(cx + half, wc_ - 1))
            ys = [y for y in range(win_y[0], win_y[1] + 1) if y not in done_y]
            xs = [x for x in range(win_x[0], win_x[1] + 1) if x not in done_x]
            pixels = [(y, cx + j) for y in ys] + [(cy + j, x) for x in xs]
            changed = _changed_positions(model, todo, canvases, pixels)
            done_y.update(ys)
            done_x.update(xs)
            for n in list(todo):
                if n not in changed:
                    result[n] = "the canvas forward did not reach this layer"
                    todo.remove(n)
                    continue
                ch = changed[n]
                dep_y, dep_x = dep.setdefault(
                    n,
                    (
                        torch.zeros(hc_, ch.shape[1], dtype=torch.bool),
                        torch.zeros(wc_, ch.shape[2], dtype=torch.bool),
                    ),
                )
                dep_y[ys] |= ch[: len(ys)].any(dim=2)  # (pixel y, map row): some position in the row changed
                dep_x[xs] |= ch[len(ys) :].any(dim=1)
                try:
                    fy = _axis_field(dep_y, hc_, real[n].shape[2], canvas_pad, win_y)
                    fx = _axis_field(dep_x, wc_, real[n].shape[3], canvas_pad, win_x)
                except ValueError as e:
                    result[n] = str(e)
                    todo.remove(n)
                    continue
                if fy is not None and fx is not None:
                    result[n] = {"stride": (fy[0], fx[0]), "a": (fy[1], fx[1]), "b": (fy[2], fx[2])}
                    todo.remove(n)
            if win_y == (0, hc_ - 1) and win_x == (0, wc_ - 1):
                break  # whole lines probed: what is left touched nothing on them; try the next ones
    for n in todo:
        result[n] = "no pixel on the probed lines changed the centre positions"
    return result


def receptive_field(model, layer, in_shape, canvas_pad=32) -> dict:
    rf = receptive_fields(float64_copy(model), [layer], in_shape, canvas_pad)[layer]
    if isinstance(rf, str):
        raise ValueError(f"{layer}: {rf}")
    return rf


# -- per-pair metrics ------------------------------------------------------------------------------
def vector_metrics(fx, ft) -> dict:
    u, v = fx.flatten(), ft.flatten()
    nu, nv, d = u.norm(), v.norm(), (v - u).norm()
    cos = 1.0 if torch.equal(u, v) else float((u @ v) / (nu * nv))
    return {"cos": cos, "dist": float(d), "rel": float(d / nu)}


def sorted_rel(fx, ft) -> float:
    sx, st = fx[0].flatten(1).sort(dim=1).values, ft[0].flatten(1).sort(dim=1).values  # per channel
    return float((st - sx).norm() / sx.norm())


def certified(h, r, a, b, size, m) -> list:
    """Map positions q with q and q - m both inside the map and both 'interior' (receptive field
    [r*q + a, r*q + b] inside [0, size - 1])."""

    def interior(q):
        return 0 <= q < h and r * q + a >= 0 and r * q + b <= size - 1

    return [q for q in range(h) if interior(q) and interior(q - m)]


def aligned_at(fx, ft, rf, my, mx, H, W, circular) -> float:
    """|f(Tx)[:, Q] - f(x)[:, Q - m]| / |f(x)[:, Q - m]|; NaN when Q is empty. ``circular``: the
    whole map against roll(f(x), m)."""
    if circular:
        ref = torch.roll(fx, shifts=(my, mx), dims=(-2, -1))
        return float((ft - ref).norm() / ref.norm())
    (ry, rx), (ay, ax), (by, bx) = rf["stride"], rf["a"], rf["b"]
    qy = certified(fx.shape[2], ry, ay, by, H, my)
    qx = certified(fx.shape[3], rx, ax, bx, W, mx)
    if not qy or not qx:
        return math.nan
    tgt = ft[:, :, qy][:, :, :, qx]
    ref = fx[:, :, [q - my for q in qy]][:, :, :, [q - mx for q in qx]]
    return float((tgt - ref).norm() / ref.norm())


def aligned_metrics(fx, ft, rf, dy, dx, H, W, circular) -> dict:
    (ry, rx) = rf["stride"]
    aligned = None
    if dy % ry == 0 and dx % rx == 0:
        aligned = aligned_at(fx, ft, rf, dy // ry, dx // rx, H, W, circular)
    values = []
    for my in sorted({dy // ry, -(-dy // ry)}):  # floor, ceil
        for mx in sorted({dx // rx, -(-dx // rx)}):
            v = aligned_at(fx, ft, rf, my, mx, H, W, circular)
            if not math.isnan(v):
                values.append(v)
    return {"aligned_rel": aligned, "nearest_aligned_rel": min(values) if values else math.nan}


# -- aggregation -----------------------------------------------------------------------------------
def _mean(values):
    return sum(values) / len(values) if values else None


def aggregate(records: list, control: dict | None) -> dict:
    """Means of per-pair records (list of metric dicts) plus counts and scores against ``control``."""
    out = {}
    for m in ("cos", "dist", "rel", "sorted_rel", "consistency", "shifted_acc"):
        if records and m in records[0]:
            out[m] = _mean([r[m] for r in records])
    for m, count, empty in (
        ("aligned_rel", "aligned_count", "no_overlap"),
        ("nearest_aligned_rel", "nearest_count", "nearest_no_overlap"),
    ):
        if records and m in records[0]:
            vals = [r[m] for r in records if r[m] is not None and not math.isnan(r[m])]
            out[m], out[count] = _mean(vals), len(vals)
            out[empty] = sum(1 for r in records if r[m] is not None and math.isnan(r[m]))
    if control is not None:
        for score, m in (("invariance_score", "dist"), ("equivariance_score", "sorted_rel")):
            if out.get(m) is not None and m in control:
                out[score] = 1.0 - out[m] / control[m] if control[m] else math.nan
    return out


@one_thread()
def reference_measure(
    model, images, labels, layers, shifts, mode, control_offset,
    spatial=None, circular=(), canvas_pad=32, output_layer="output",
) -> dict:  # fmt: skip
    """Returns {"per_shift": {(dy, dx): {layer: {metric: value}}}, "summary": {layer: {...}} (pooled over
    pairs with a non-zero shift), "control": {layer: {...}}, "accuracy": float or None,
    "strides": {layer: r} (int, or (ry, rx) when they differ), "receptive_fields": {layer: rf},
    "pairs": {(dy, dx): {layer: [per-image metric dict]}}}. ``output_layer`` is where
    consistency / shifted_acc (and accuracy) come from when ``labels`` is given."""
    if mode not in ("crop", "roll"):
        raise ValueError(f"unknown shift mode {mode!r}")
    dmodel = float64_copy(model)
    x = images.detach().to("cpu", torch.float64)
    n_img, (H, W) = x.shape[0], x.shape[-2:]
    labels = None if labels is None else [int(v) for v in labels]
    names = list(layers) + ([output_layer] if labels is not None and output_layer not in layers else [])
    base = [capture(dmodel, x[i : i + 1], names) for i in range(n_img)]

    if spatial is None:
        cands = [n for n in layers if base[0][n].dim() == 4 and base[0][n].shape[2] * base[0][n].shape[3] > 1]
        rfs = {
            n: rf
            for n, rf in receptive_fields(dmodel, cands, x.shape, canvas_pad).items()
            if not isinstance(rf, str)
        }
    else:
        if any(n not in layers for n in spatial):
            raise ValueError(f"spatial layers {list(spatial)} must be among the layers {list(layers)}")
        rfs = receptive_fields(dmodel, list(spatial), x.shape, canvas_pad) if spatial else {}
        for n, rf in rfs.items():
            if isinstance(rf, str):
                raise ValueError(f"spatial layer {n}: {rf}")
    circ = {n for n in circular if n in rfs} if mode == "roll" else set()
    for n in circ:
        ry, rx = rfs[n]["stride"]
        if base[0][n].shape[2] * ry != H or base[0][n].shape[3] * rx != W:
            raise ValueError(f"circular layer {n}: map size times stride is not the image size")

    def pair(fa, fb, dy_dx=None) -> dict:
        rec = {}
        for n in names:
            r = vector_metrics(fa[n], fb[n]) if n in layers else {}
            if n in rfs:
                r["sorted_rel"] = sorted_rel(fa[n], fb[n])
                if dy_dx is not None:
                    r.update(aligned_metrics(fa[n], fb[n], rfs[n], *dy_dx, H, W, n in circ))
            if labels is not None and n == output_layer:
                r["consistency"] = float(fa[n].flatten().argmax() == fb[n].flatten().argmax())
            rec[n] = r
        return rec

    k = int(control_offset)
    ctrl_recs = [pair(base[i], base[(i + k) % n_img]) for i in range(n_img)]
    control = {n: aggregate([r[n] for r in ctrl_recs], None) for n in names}

    per_shift, pairs, pooled = {}, {}, {n: [] for n in names}
    for dy, dx in shifts:
        dy, dx = int(dy), int(dx)
        tx = shift(x, dy, dx, mode)
        recs = []
        for i in range(n_img):
            ft = capture(dmodel, tx[i : i + 1], names)
            r = pair(base[i], ft, (dy, dx))
            if labels is not None:
                r[output_layer]["shifted_acc"] = float(int(ft[output_layer].flatten().argmax()) == labels[i])
            recs.append(r)
        pairs[dy, dx] = {n: [r[n] for r in recs] for n in names}
        per_shift[dy, dx] = {n: aggregate(pairs[dy, dx][n], control[n]) for n in names}
        if (dy, dx) != (0, 0):
            for n in names:
                pooled[n] += pairs[dy, dx][n]
    summary = {n: aggregate(pooled[n], control[n]) for n in names}
    accuracy = None
    if labels is not None:
        accuracy = _mean(
            [float(int(b[output_layer].flatten().argmax()) == labels[i]) for i, b in enumerate(base)]
        )
    strides = {
        n: rf["stride"][0] if rf["stride"][0] == rf["stride"][1] else rf["stride"] for n, rf in rfs.items()
    }
    return {
        "per_shift": per_shift, "summary": summary, "control": control, "accuracy": accuracy,
        "strides": strides, "receptive_fields": rfs, "pairs": pairs,
    }  # fmt: skip


def merge_sums(parts: list[dict]) -> dict:
    """Combine the ``compute()`` dicts of processes that measured disjoint images, as DDP's reduction
    does: maxima (``<metric>_max``) by maximum, everything else by sum."""
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        is_max = isinstance(key, tuple) and key[0] == "pair" and key[2].endswith("_max")
        total = values[0].clone()
        for v in values[1:]:
            total = torch.maximum(total, v) if is_max else total + v
        out[key] = total
    return out
