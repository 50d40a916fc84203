"""``WeightsOnlyCheckpointIO``: every checkpoint the trainer loads is read with ``weights_only=True``.

Lightning reads ``trainer.fit(ckpt_path=...)`` (resume) and ``trainer.test(ckpt_path=...)`` through its
strategy's ``CheckpointIO``, which passes ``weights_only=None`` on to ``torch.load`` unless the caller
sets it: torch then decides, and the environment variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (or
an older torch) makes it unpickle the file, which runs code stored in it. This ``CheckpointIO`` sets
``weights_only`` itself: True, unless the user trusts the file (``trust_checkpoint=true``).

Only loading changes: saving is ``TorchCheckpointIO``'s (a saving ``CheckpointIO`` can subclass this one,
or this one's ``load_checkpoint`` can be moved into it; Lightning takes one ``CheckpointIO`` per trainer).
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``load_checkpoint`` uses ``weights_only=not trusted``, whatever the caller asks.

    Parameters
    ----------
    trusted : bool
        The user trusts the checkpoint files of this run (``trust_checkpoint=true``): they may be
        unpickled. Default False: tensors and plain containers only.
    """

    def __init__(self, trusted: bool = False):
        super().__init__()
        self.trusted = bool(trusted)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load, with ``weights_only`` fixed by ``trusted`` (the caller's value is ignored)."""
        kwargs = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=not self.trusted, **kwargs)
