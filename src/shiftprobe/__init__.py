"""shiftprobe: how invariant and how equivariant is each layer of a network to shifts of its input?

``res = shiftprobe.measure(model, images, labels, layers=[...], transform=shiftprobe.Translation())`` gives
``Results`` (``res.summary["fc1"]["invariance_score"]``, ``res.families``, ``res.to_dataframe()``,
``res.save(path)``); also ``load_results``, ``load_network``, ``export_pairs``, ``lie_derivative``, the
other families (docs/api.md). The training / measurement app is ``python train.py`` (Hydra), same engine.
"""

from shiftprobe._lazy import lazy_exports
from shiftprobe.probe import _MODULES as PROBE_MODULES

#: the public API: name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import shiftprobe.app.config_checks`` (train.py's check of the settings) does not pull in the
#: engine, torchmetrics and Lightning before it can report a bad value.
_EXPORTS = lazy_exports(globals(), {
    **PROBE_MODULES,
    "shiftprobe.checkpoints": ("load_network",),
    "shiftprobe.models": (
        "AllConvCNN", "FlipPooledCNN", "GapCNN", "LabCNN", "RotPooledCNN", "SmallResNet", "apply_variants",
        "timm_model", "torchvision_model",
    ),
    "shiftprobe.testing": ("testing",),
})

__version__ = "0.3.0"

__all__ = sorted([*_EXPORTS, "__version__"])
