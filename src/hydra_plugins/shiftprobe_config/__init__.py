"""Config nodes YAML cannot express, in Hydra's ``ConfigStore`` (Hydra's plugin scan imports this before it
composes any configuration). ``shiftprobe_open``: an empty node whose struct flag is off; a section that
starts from it (``defaults: [/shiftprobe_open@_here_, _self_]``, ``conf/trainer/default.yaml``) takes any
key without ``+``, e.g. every ``Trainer`` argument (``check_known_keys`` still refuses a key that is not one)."""

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
