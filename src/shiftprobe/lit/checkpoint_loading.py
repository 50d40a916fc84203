"""``WeightsOnlyCheckpointIO``: every checkpoint the trainer loads (resume, test) is read with
``weights_only=True`` unless the user trusts the files (``trust_checkpoint=true``): Lightning passes
``weights_only=None`` to ``torch.load``, and torch may then unpickle (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``,
an older torch), which runs code stored in the file."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``load_checkpoint`` uses ``weights_only=not trusted``, whatever the caller
    asks (``trusted``: ``trust_checkpoint=true``, the files may be unpickled)."""

    def __init__(self, trusted: bool = False):
        super().__init__()
        self.trusted = bool(trusted)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=not self.trusted, **kwargs)
