"""The ``lie_derivative`` block of ``results.json`` as a markdown table (layer x generator, rel ± h).

``h`` is the half-width of the 95 % interval over the images (``1.96 * rel_se``), as everywhere in
``results.md``. The block is what :func:`shiftprobe.lie_derivative` returns (the callback stores it under
``lie_derivative`` and ``untrained.lie_derivative``).
"""

from __future__ import annotations

from collections.abc import Mapping

from shiftprobe.reporting.markdown import Z95, _finite, _table, fmt, fmt_pm

UNIT_SHORT = {"per input pixel": "per px", "per radian": "per rad"}


def _cell(entry: Mapping | None) -> str:
    if not entry:
        return "n/a"
    se = _finite(entry.get("rel_se"))
    return fmt_pm(entry.get("rel"), None if se is None else Z95 * se)


def _measures(block: Mapping, layer: str) -> str:
    geo = (block.get("geometry") or {}).get(layer) or {}
    what = geo.get("measures") or "?"
    stride = geo.get("stride")
    if what == "equivariance" and stride:
        what += f" (stride {'x'.join(map(str, stride))})"
    return what


def lie_derivative_lines(results: Mapping) -> list[str]:
    """A ``## Lie derivative`` section (one sentence and the table), or ``[]`` when ``results`` has no
    ``lie_derivative`` block. The untrained network, when measured, gets its own rows."""
    block = results.get("lie_derivative")
    if not block:
        return []
    untrained = (results.get("untrained") or {}).get("lie_derivative") or None
    generators = list(block.get("generators") or [])
    units = block.get("units") or {}
    layers = list(block.get("layers") or [])
    lines = ["", "## Lie derivative (infinitesimal transformations)", ""]
    lines.append(
        "Each cell is rel: how fast the layer's representation changes under an infinitesimal "
        "translation (per input pixel) or rotation (per radian), the root mean square of its derivative "
        "over that of the activation (maps are moved back first, so a map scores its equivariance and "
        "a vector its invariance), 0 meaning exact to first order, ± the 95 % half-width over "
        f"{fmt(block.get('n_images'))} images ({block.get('method', 'bilinear')} interpolation)."
    )
    lines.append("")
    header = ["layer", "network", "measures"]
    header += [f"{g} ({UNIT_SHORT.get(units.get(g), units.get(g) or '?')})" for g in generators]
    rows = []
    notes = []
    for layer in layers:
        for name, net in (("trained", block), ("untrained", untrained)):
            if not net or layer not in net:
                continue
            rows.append([layer, name, _measures(net, layer), *[_cell(net[layer].get(g)) for g in generators]])
        note = ((block.get("geometry") or {}).get(layer) or {}).get("note")
        if note:
            notes.append(f"- {layer}: {note}")
    lines += _table(header, rows)
    if notes:
        lines += ["", *notes]
    return lines
