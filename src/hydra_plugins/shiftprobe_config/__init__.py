"""Config nodes of shiftprobe's own that YAML cannot express, put into Hydra's ``ConfigStore``.

Hydra imports every module of the ``hydra_plugins`` namespace package when it starts (its plugin scan,
as it does for the launchers' configs), before it composes a configuration: so ``conf/`` can use these
nodes wherever Hydra composes it (``train.py``, ``eval.py``, the compose API of the tests and scripts).

``shiftprobe_open``: an empty node whose struct flag is off. Hydra closes the composed configuration
(struct mode): a key not in it can be set on the command line only with ``+``. A section that starts
from this node (``defaults: [/shiftprobe_open@_here_, _self_]``) keeps its own flag, so any key may be
set without ``+``: ``conf/trainer/default.yaml`` uses it, so that every argument of Lightning's
``Trainer`` can be set as ``trainer.<argument>=...``. The run still refuses a key that is not one
(``shiftprobe.app.config_checks.check_known_keys``, naming the closest argument).
"""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

#: the open node's name in the ConfigStore (``/shiftprobe_open`` in a defaults list); in no group, so that
#: ``python train.py --help`` does not list it as a choice
OPEN_NODE = "shiftprobe_open"

ConfigStore.instance().store(
    name=OPEN_NODE,
    node=OmegaConf.create({}, flags={"struct": False}),
    provider="shiftprobe",
)
