"""The Lightning-free measurement engine: transforms, plan, geometry, metrics, accumulator, results.

Import the public API from ``shiftprobe`` itself (``shiftprobe.measure``, ``shiftprobe.Translation``,
``shiftprobe.load_results``); the modules here are its parts.
"""

from shiftprobe.probe.engine import measure, measure_network
from shiftprobe.probe.families import Flip, Rotation, Rotation90, SubpixelTranslation, family_from_name
from shiftprobe.probe.family_engine import measure_family
from shiftprobe.probe.results import Results, load_results
from shiftprobe.probe.transforms import Translation

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
