"""The Lightning-free measurement engine: transforms, plans, the pair sources, one loop, sections, ``measure``;
its public API is imported from ``shiftprobe`` itself (``shiftprobe.measure``, ``shiftprobe.Translation``)."""

from shiftprobe._lazy import lazy_exports

#: each module with the names it gives the package, imported on first use (PEP 562): importing one part
#: (e.g. ``translation``) does not import the engine and torchmetrics. ``shiftprobe`` exports them too.
_MODULES = {
    "shiftprobe.probe.measure": ("measure", "measure_family"),
    "shiftprobe.probe.families": ("Flip", "Rotation", "Rotation90", "SubpixelTranslation", "family_from_name"),
    "shiftprobe.probe.results": ("Results", "load_results"),
    "shiftprobe.probe.translation": ("Translation",),
    "shiftprobe.probe.transform": ("Transform",),
    "shiftprobe.probe.lie": ("lie_derivative",),
    "shiftprobe.probe.export": ("export_pairs",),
}
_EXPORTS = lazy_exports(globals(), _MODULES)

__all__ = sorted(_EXPORTS)
