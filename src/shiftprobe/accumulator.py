"""``ShiftMetricAccumulator``: a torchmetrics ``Metric`` holding float64 sums of the per-pair metrics.

Every state is a sum (per shift id, or a scalar) reduced with ``"sum"``, so the figures computed from
it are the same whether the test images were processed in one process or split across DDP ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

#: metrics summed per layer kind: (every layer, conv layers only, the logits only)
PAIR_METRICS = (
    ("cos", "dist", "rel"),
    ("sorted_rel", "aligned_rel", "aligned_count", "nearest_aligned_rel"),
    ("consistency", "shifted_correct"),
)
#: control metrics (pairs of unrelated images x_i, x_{(i+k) mod n}), same layout
CONTROL_METRICS = (("cos", "dist", "rel"), ("sorted_rel",), ("consistency",))


def metric_names(table, layer: str, conv_layers, logit_layer: str = "logits") -> tuple[str, ...]:
    """The metrics of ``table`` (``PAIR_METRICS`` or ``CONTROL_METRICS``) that apply to ``layer``."""
    every, conv, logits = table
    return every + (conv if layer in conv_layers else ()) + (logits if layer == logit_layer else ())


class ShiftMetricAccumulator(Metric):
    """Sums of per-pair metrics indexed by shift id, control sums and image-level counts.

    ``update`` takes any of:

    * ``shift_ids`` (P,) with ``pairs`` {(layer, metric): (P,) float64} — one entry per image-shift pair
      (``aligned_rel`` entries that are NaN, i.e. undefined, contribute to neither sum nor count);
    * ``control`` {(layer, metric): (B,)} — one entry per image;
    * ``correct`` (B,) and ``two_shift_agree`` (B,) — unshifted correctness, Zhang's two-shift consistency.

    ``compute`` returns the (synchronised) sums as a plain dict keyed ``"pair_count"``,
    ``"images"``, ``"correct"``, ``"two_shift_agree"``, ``("pair", layer, metric)`` and
    ``("control", layer, metric)``.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, n_shift_ids: int, layers, conv_layers, **kwargs):
        super().__init__(**kwargs)
        self.n_shift_ids = int(n_shift_ids)
        self.layers = tuple(layers)
        self.conv_layers = tuple(conv_layers)
        f64 = torch.float64
        self.add_state("pair_count", torch.zeros(self.n_shift_ids, dtype=f64), dist_reduce_fx="sum")
        for name in ("images", "correct", "two_shift_agree"):
            self.add_state(name, torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self._pair_keys, self._control_keys = {}, {}
        for layer in self.layers:
            for metric in metric_names(PAIR_METRICS, layer, self.conv_layers):
                self._pair_keys[layer, metric] = attr = f"pair__{layer}__{metric}"
                self.add_state(attr, torch.zeros(self.n_shift_ids, dtype=f64), dist_reduce_fx="sum")
            for metric in metric_names(CONTROL_METRICS, layer, self.conv_layers):
                self._control_keys[layer, metric] = attr = f"control__{layer}__{metric}"
                self.add_state(attr, torch.zeros((), dtype=f64), dist_reduce_fx="sum")

    def update(self, shift_ids=None, pairs=None, control=None, correct=None, two_shift_agree=None) -> None:
        if pairs is not None:
            ids = shift_ids.reshape(-1).to(self.pair_count.device)
            self.pair_count.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
            for (layer, metric), values in pairs.items():
                values = values.reshape(-1).to(self.pair_count.device, torch.float64)
                if metric == "aligned_rel":
                    defined = ~torch.isnan(values)
                    count_attr = getattr(self, self._pair_keys[layer, "aligned_count"])
                    count_attr.index_add_(0, ids[defined], torch.ones_like(values[defined]))
                    ids_m, values = ids[defined], values[defined]
                else:
                    ids_m = ids
                state = getattr(self, self._pair_keys[layer, metric])
                state.index_add_(0, ids_m, values)
        if control is not None:
            for (layer, metric), values in control.items():
                state = getattr(self, self._control_keys[layer, metric])
                state += values.to(state.device, torch.float64).sum()
        if correct is not None:
            self.images += correct.numel()
            self.correct += correct.to(self.correct.device, torch.float64).sum()
        if two_shift_agree is not None:
            self.two_shift_agree += two_shift_agree.to(self.correct.device, torch.float64).sum()

    def compute(self) -> dict:
        out = {
            name: getattr(self, name).detach().cpu()
            for name in ("pair_count", "images", "correct", "two_shift_agree")
        }
        for (layer, metric), attr in self._pair_keys.items():
            out["pair", layer, metric] = getattr(self, attr).detach().cpu()
        for (layer, metric), attr in self._control_keys.items():
            out["control", layer, metric] = getattr(self, attr).detach().cpu()
        return out
