"""The Lightning-free measurement engine: transforms, plans, the pair sources, one loop, sections, ``measure``.

Import the public API from ``shiftprobe`` itself (``shiftprobe.measure``, ``shiftprobe.Translation``,
``shiftprobe.load_results``); the modules here are its parts.
"""

from shiftprobe._lazy import lazy_exports

#: name -> module, imported on first use (PEP 562): importing one part (e.g. ``translation``) does not
#: import the engine and torchmetrics
_EXPORTS = {
    "measure": "shiftprobe.probe.measure",
    "measure_family": "shiftprobe.probe.measure",
    "Flip": "shiftprobe.probe.families",
    "Rotation": "shiftprobe.probe.families",
    "Rotation90": "shiftprobe.probe.families",
    "SubpixelTranslation": "shiftprobe.probe.families",
    "family_from_name": "shiftprobe.probe.families",
    "Results": "shiftprobe.probe.results",
    "load_results": "shiftprobe.probe.results",
    "Translation": "shiftprobe.probe.translation",
    "Transform": "shiftprobe.probe.transform",
    "lie_derivative": "shiftprobe.probe.lie",
    "export_pairs": "shiftprobe.probe.export",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = sorted(_EXPORTS)
