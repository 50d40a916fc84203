"""The ``lie_derivative`` block of ``results.json`` as markdown: the table of layers x generators (rel ± h)
and, when measured, the layer-wise decomposition of the output's Lie derivative.

``h`` is the half-width of the 95 % interval over the images (``1.96 * rel_se``), as everywhere in
``results.md``. The block is what :func:`shiftprobe.lie_derivative` returns (the callback stores it under
``lie_derivative`` and ``untrained.lie_derivative``).
"""

from __future__ import annotations

from collections.abc import Mapping

from shiftprobe.probe.generators import GENERATORS
from shiftprobe.reporting.markdown import Z95, _finite, _table, fmt, fmt_pm

#: the short unit of each generator's long unit (the table's header)
UNIT_SHORT = {g.unit: g.unit_short for g in GENERATORS.values()}
#: the rows of the totals of the decomposition: (key, label)
TOTAL_ROWS = (
    ("modules", "sum of the modules"),
    ("between", "sum between modules"),
    ("end_to_end", "end-to-end (the output's)"),
    ("unexplained", "end-to-end − both sums"),
)
#: how many of the largest contributions the summary line names per generator
TOP = 3


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


def _header(first: list[str], block: Mapping) -> list[str]:
    units = block.get("units") or {}
    return first + [
        f"{g} ({UNIT_SHORT.get(units.get(g), units.get(g) or '?')})" for g in block.get("generators") or []
    ]


def _networks(results: Mapping) -> list[tuple[str, Mapping]]:
    block = results.get("lie_derivative") or {}
    untrained = (results.get("untrained") or {}).get("lie_derivative") or None
    return [(name, net) for name, net in (("trained", block), ("untrained", untrained)) if net]


def lie_derivative_lines(results: Mapping) -> list[str]:
    """A ``## Lie derivative`` section (one sentence and the table, then the layer-wise decomposition
    when measured), or ``[]`` when ``results`` has no ``lie_derivative`` block. The untrained network,
    when measured, gets its own rows."""
    block = results.get("lie_derivative")
    if not block:
        return []
    generators = list(block.get("generators") or [])
    lines = ["", "## Lie derivative (infinitesimal transformations)", ""]
    lines.append(
        "Each cell is rel: how fast the layer's representation changes under an infinitesimal "
        "transformation (per unit of its parameter, in the header: per input pixel for a translation, per "
        "radian for a rotation), the root mean square of its derivative over that of the activation (maps "
        "are moved back first, so a map scores its equivariance and a vector its invariance), 0 meaning "
        f"exact to first order, ± the 95 % half-width over {fmt(block.get('n_images'))} images "
        f"({block.get('method', 'bilinear')} interpolation)."
    )
    lines.append("")
    rows = []
    notes = []
    for layer in block.get("layers") or []:
        for name, net in _networks(results):
            if layer in net:
                rows.append(
                    [layer, name, _measures(net, layer), *[_cell(net[layer].get(g)) for g in generators]]
                )
        note = ((block.get("geometry") or {}).get(layer) or {}).get("note")
        if note:
            notes.append(f"- {layer}: {note}")
    lines += _table(_header(["layer", "network", "measures"], block), rows)
    if notes:
        lines += ["", *notes]
    return lines + lie_layerwise_lines(results)


def _nonzero(entries: Mapping, generators: list[str]) -> bool:
    return any(
        (_finite(((entries.get(g) or {}).get("contribution") or {}).get("rel")) or 0) > 0 for g in generators
    )


def _layerwise_rows(results: Mapping, generators: list[str]) -> list[list[str]]:
    block = results["lie_derivative"]
    rows = []
    for module in block.get("layerwise") or {}:
        for name, net in _networks(results):
            entry = (net.get("layerwise") or {}).get(module) or {}
            rows.append(
                [module, name, *[_cell((entry.get(g) or {}).get("contribution")) for g in generators]]
            )
    for label in block.get("layerwise_between") or {}:
        nets = [
            (name, (net.get("layerwise_between") or {}).get(label) or {}) for name, net in _networks(results)
        ]
        if any(_nonzero(entry, generators) for _, entry in nets):  # a gap with nothing in it is exactly 0
            rows += [
                [label, name, *[_cell((entry.get(g) or {}).get("contribution")) for g in generators]]
                for name, entry in nets
            ]
    for key, label in TOTAL_ROWS:
        for name, net in _networks(results):
            total = net.get("layerwise_total") or {}
            rows.append([f"*{label}*", name, *[_cell((total.get(g) or {}).get(key)) for g in generators]])
    return rows


def lie_layerwise_lines(results: Mapping) -> list[str]:
    """The ``### Layer-wise decomposition`` subsection: per module (and per gap between modules with
    anything in it) its contribution to the output's Lie derivative, the sums against the end-to-end
    value, and the largest contributions per generator; ``[]`` when it was not measured."""
    block = results.get("lie_derivative") or {}
    if not block.get("layerwise"):
        return []
    generators = list(block.get("generators") or [])
    lines = ["", "### Layer-wise decomposition (lie_layerwise.png)", ""]
    lines.append(
        "Each cell is a module's contribution to the output's Lie derivative: its own Lie derivative (its "
        "input transformed, its output transformed back) carried to the output through the rest of the "
        "network, rel to the root mean square of the output, ± the 95 % half-width over the images. "
        "Rows `a → b`: the operations between two modules (functional calls such as a ReLU or a flatten; "
        "shown where not exactly 0). The contributions add up, as vectors, to the end-to-end value "
        "(the last row is the round-off); their rel values do not add."
    )
    lines.append("")
    lines += _table(_header(["module", "network"], block), _layerwise_rows(results, generators))
    ranking = block.get("layerwise_ranking") or {}
    lines.append("")
    for g in generators:
        top = [name for name in ranking.get(g, [])][:TOP]
        lines.append(f"- largest for {g} (trained): {', '.join(top) or 'n/a'}")
    lines += [f"- {note}" for note in block.get("layerwise_notes") or []]
    return lines
