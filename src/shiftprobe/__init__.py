"""shiftprobe: how invariant and how equivariant is each layer of a network to shifts of its input?

The public API (no Lightning or Hydra needed)::

    import shiftprobe
    res = shiftprobe.measure(model, images, labels, layers=[...], transform=shiftprobe.Translation(max_shift=4))
    res.summary["fc1"]["invariance_score"]; res.to_dataframe(); res.save("results.json"); res.markdown()
    shiftprobe.load_results("results.json")
    net = shiftprobe.load_network("lab_net.pt")      # a train.py .ckpt, a state_dict or a whole saved module
    shiftprobe.export_pairs(net, images, labels, ["conv2", "fc1"], n=100, seed=0, path="pairs")  # pairs.pt/.npz
    res = shiftprobe.measure(model, images, transform=[shiftprobe.Translation(), shiftprobe.Rotation90(),
                             shiftprobe.SubpixelTranslation(method="fourier")])   # res.families["rot90"], ...

See docs/api.md. The training / measurement app is ``python train.py`` (Hydra), built on the same engine.
"""

from shiftprobe.checkpoints import load_network
from shiftprobe.models import AllConvCNN, FlipPooledCNN, GapCNN, LabCNN, RotPooledCNN, SmallResNet
from shiftprobe.probe.engine import measure
from shiftprobe.probe.export import export_pairs
from shiftprobe.probe.families import Flip, Rotation, Rotation90, SubpixelTranslation, family_from_name
from shiftprobe.probe.family_engine import measure_family
from shiftprobe.probe.lie_derivative import lie_derivative
from shiftprobe.probe.results import Results, load_results
from shiftprobe.probe.transforms import Translation

__version__ = "0.2.0"

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
    "Translation",
    "__version__",
    "export_pairs",
    "family_from_name",
    "lie_derivative",
    "load_network",
    "load_results",
    "measure",
    "measure_family",
]
