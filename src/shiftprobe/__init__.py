"""shiftprobe: how invariant and how equivariant is each layer of a network to shifts of its input?

The public API (no Lightning or Hydra needed)::

    import shiftprobe
    res = shiftprobe.measure(model, images, labels, layers=[...], transform=shiftprobe.Translation(max_shift=4))
    res.summary["fc1"]["invariance_score"]; res.to_dataframe(); res.save("results.json"); res.markdown()
    shiftprobe.load_results("results.json")
    net = shiftprobe.load_network("lab_net.pt")      # a train.py .ckpt or a state_dict (trusted=True: a whole module)
    shiftprobe.export_pairs(net, images, labels, ["conv2", "fc1"], n=100, seed=0, path="pairs")  # pairs.pt/.npz
    res = shiftprobe.measure(model, images, transform=[shiftprobe.Translation(), shiftprobe.Rotation90(),
                             shiftprobe.SubpixelTranslation(method="fourier")])   # res.families["rot90"], ...

See docs/api.md. The training / measurement app is ``python train.py`` (Hydra), built on the same engine.
"""

from shiftprobe._lazy import lazy_exports
from shiftprobe.probe import _EXPORTS as PROBE_EXPORTS

#: the public API: name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import shiftprobe.app.config_checks`` (train.py's check of the settings) does not pull in the
#: engine, torchmetrics and Lightning before it can report a bad value.
_EXPORTS = {
    **PROBE_EXPORTS,
    "load_network": "shiftprobe.checkpoints",
    "AllConvCNN": "shiftprobe.models",
    "FlipPooledCNN": "shiftprobe.models",
    "GapCNN": "shiftprobe.models",
    "LabCNN": "shiftprobe.models",
    "RotPooledCNN": "shiftprobe.models",
    "SmallResNet": "shiftprobe.models",
    "apply_variants": "shiftprobe.models",
    "timm_model": "shiftprobe.models",
    "torchvision_model": "shiftprobe.models",
    "testing": "shiftprobe.testing",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__version__ = "0.3.0"

__all__ = [
    "AllConvCNN",
    "Flip",
    "FlipPooledCNN",
    "GapCNN",
    "LabCNN",
    "Results",
    "RotPooledCNN",
    "Rotation",
    "Rotation90",
    "SmallResNet",
    "SubpixelTranslation",
    "Transform",
    "Translation",
    "__version__",
    "apply_variants",
    "export_pairs",
    "family_from_name",
    "lie_derivative",
    "load_network",
    "load_results",
    "measure",
    "measure_family",
    "testing",
    "timm_model",
    "torchvision_model",
]
