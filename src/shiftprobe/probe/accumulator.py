"""``PairMetricAccumulator``: a torchmetrics ``Metric`` holding the sums of the per-pair metrics.

Every state is a sum (per shift id, or a scalar) reduced with ``"sum"``, so the figures computed from
it are the same whether the test images were processed in one process or split across DDP ranks.
Sums are float64 where the device has it (float32 on Apple MPS).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from shiftprobe.probe.geometry import LayerGeometry
from shiftprobe.probe.metrics import sum_dtype

#: metrics whose per-pair value may be NaN (undefined or no certified overlap); counted separately
COUNTED = ("aligned_rel", "nearest_aligned_rel")


def layer_metrics(geo: LayerGeometry, classifier: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pair metrics, control metrics)`` measured for a layer of this geometry."""
    pair, control = ["cos", "dist", "rel"], ["cos", "dist", "rel"]
    if geo.spatial:
        pair.append("sorted_rel")
        control.append("sorted_rel")
        if geo.exact_test:
            pair += ["aligned_rel", "nearest_aligned_rel"]
    if classifier:
        pair += ["consistency", "shifted_correct"]
        control.append("consistency")
    return tuple(pair), tuple(control)


class PairMetricAccumulator(Metric):
    """Sums of per-pair metrics indexed by shift id, control sums and image-level counts.

    ``update`` takes any of:

    * ``shift_ids`` (P,) with ``pairs`` {(layer, metric): (P,)}: one entry per image-shift pair. For
      ``aligned_rel`` / ``nearest_aligned_rel`` a NaN contributes to no sum; ``no_overlap``
      {(layer, metric): (P,) bool} marks the NaNs that mean "no certified position" (the others mean
      "the stride does not divide the shift"), counted in ``<metric>_no_overlap``.
    * ``control`` {(layer, metric): (B,)}: one entry per image;
    * ``n_images``: images of the batch; ``correct`` (B,) and ``two_shift_agree`` (B,): unshifted correctness, Zhang's two-shift consistency.

    ``compute`` returns the (synchronised) sums as a plain dict keyed ``"pair_count"``, ``"images"``,
    ``"correct"``, ``"two_shift_agree"``, ``("pair", layer, metric)`` (plus ``<metric>_count`` and
    ``<metric>_no_overlap`` and the largest value ``<metric>_max`` for the counted metrics) and ``("control", layer, metric)``.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, n_shift_ids: int, metrics: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], dtype=torch.float64, **kwargs):
        super().__init__(**kwargs)
        self.n_shift_ids = int(n_shift_ids)
        self.metrics = dict(metrics)
        self.layers = tuple(self.metrics)
        self.add_state("pair_count", torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="sum")
        for name in ("images", "correct", "two_shift_agree"):
            self.add_state(name, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        self._pair_keys, self._control_keys = {}, {}
        for layer, (pair, control) in self.metrics.items():
            for metric in pair:
                names = [metric] + ([f"{metric}_count", f"{metric}_no_overlap"] if metric in COUNTED else [])
                for m in names:
                    self._pair_keys[layer, m] = attr = f"pair__{layer}__{m}".replace(".", "_")
                    self.add_state(attr, torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="sum")
                if metric in COUNTED:  # the worst pair: "exact" is decided on it, not on the mean
                    self._pair_keys[layer, f"{metric}_max"] = attr = f"pair__{layer}__{metric}_max".replace(".", "_")
                    self.add_state(attr, torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="max")
            for metric in control:
                self._control_keys[layer, metric] = attr = f"control__{layer}__{metric}".replace(".", "_")
                self.add_state(attr, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")

    def _state(self, key) -> torch.Tensor:
        return getattr(self, self._pair_keys[key])

    def update(
        self, shift_ids=None, pairs=None, no_overlap=None, control=None, n_images=None, correct=None, two_shift_agree=None
    ) -> None:
        dtype = self.pair_count.dtype
        if pairs is not None:
            ids = shift_ids.reshape(-1).to(self.pair_count.device)
            ones = torch.ones(ids.shape, dtype=dtype, device=ids.device)
            self.pair_count.index_add_(0, ids, ones)
            for (layer, metric), values in pairs.items():
                values = values.reshape(-1).to(self.pair_count.device, dtype)
                if metric in COUNTED:
                    defined = ~torch.isnan(values)
                    self._state((layer, f"{metric}_count")).index_add_(0, ids[defined], ones[defined])
                    flags = (no_overlap or {}).get((layer, metric))
                    if flags is not None:
                        flags = flags.reshape(-1).to(ids.device)
                        self._state((layer, f"{metric}_no_overlap")).index_add_(0, ids[flags], ones[flags])
                    self._state((layer, metric)).index_add_(0, ids[defined], values[defined])
                    worst = self._state((layer, f"{metric}_max"))
                    worst.scatter_reduce_(0, ids[defined], values[defined], reduce="amax", include_self=True)
                else:
                    self._state((layer, metric)).index_add_(0, ids, values)
        if control is not None:
            for (layer, metric), values in control.items():
                state = getattr(self, self._control_keys[layer, metric])
                state += values.to(state.device, dtype).sum()
        if n_images is not None:
            self.images += int(n_images)
        if correct is not None:
            self.correct += correct.to(self.correct.device, dtype).sum()
        if two_shift_agree is not None:
            self.two_shift_agree += two_shift_agree.to(self.correct.device, dtype).sum()

    def compute(self) -> dict:
        out = {name: getattr(self, name).detach().cpu().double() for name in ("pair_count", "images", "correct", "two_shift_agree")}
        for (layer, metric), attr in self._pair_keys.items():
            out["pair", layer, metric] = getattr(self, attr).detach().cpu().double()
        for (layer, metric), attr in self._control_keys.items():
            out["control", layer, metric] = getattr(self, attr).detach().cpu().double()
        return out


def new_accumulator(n_shift_ids: int, metrics: dict, device) -> PairMetricAccumulator:
    return PairMetricAccumulator(n_shift_ids, metrics, dtype=sum_dtype(device)).to(device)
