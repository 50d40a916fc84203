"""The Lightning-free measurement engine: transforms, plan, geometry, metrics, accumulator, results.

Import the public API from ``shiftprobe`` itself (``shiftprobe.measure``, ``shiftprobe.Translation``,
``shiftprobe.load_results``); the modules here are its parts.
"""

from shiftprobe._lazy import lazy_exports

#: name -> module, imported on first use (PEP 562): importing one part (e.g. ``transforms``) does not
#: import the engine and torchmetrics
_EXPORTS = {
    "measure": "shiftprobe.probe.engine",
    "measure_network": "shiftprobe.probe.engine",
    "Flip": "shiftprobe.probe.families",
    "Rotation": "shiftprobe.probe.families",
    "Rotation90": "shiftprobe.probe.families",
    "SubpixelTranslation": "shiftprobe.probe.families",
    "family_from_name": "shiftprobe.probe.families",
    "measure_family": "shiftprobe.probe.family_engine",
    "Results": "shiftprobe.probe.results",
    "load_results": "shiftprobe.probe.results",
    "Translation": "shiftprobe.probe.transforms",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "Flip",
    "Results",
    "Rotation",
    "Rotation90",
    "SubpixelTranslation",
    "Translation",
    "family_from_name",
    "load_results",
    "measure",
    "measure_family",
    "measure_network",
]
