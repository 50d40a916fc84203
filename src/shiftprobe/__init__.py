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
