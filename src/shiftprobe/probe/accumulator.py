"""``PairMetricAccumulator``: a torchmetrics ``Metric`` holding the sums of the per-pair metrics by parameter id,
the control sums and, per group of the plan, the per-image statistics of the standard errors (``n``, ``sum m``,
``sum m^2``, ``sum m c``, ``sum c``: ``shiftprobe.probe.stats``). Every state is reduced by sum (the per-pair
maxima by max), so a DDP split gives the single-process figures; float64 where the device has it."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from shiftprobe.probe.metrics import sum_dtype

#: metrics whose per-pair value may be NaN (undefined or no certified overlap); counted separately,
#: with their no-overlap counts and per-pair maxima
COUNTED = ("aligned_rel", "nearest_aligned_rel", "sorted_rel_certified")
#: metrics averaged over the pairs where they are defined (not NaN): ``COUNTED`` and the consistency
#: of the images classified correctly before the shift
MASKED = (*COUNTED, "consistency_correct")
#: the control metric each score divides by: ``score = 1 - pair / control``
SCORE_CONTROL = {"dist": "dist", "sorted_rel": "sorted_rel", "sorted_rel_certified": "sorted_rel"}
#: rows of the per-image group statistics
IMAGE_ROWS = ("n", "sum", "sum_sq", "sum_xc", "sum_c")


class PairMetricAccumulator(Metric):
    """Sums of per-pair metrics by parameter id, control sums and image-level counts.

    ``update`` takes any of: ``shift_ids`` (B, S) with ``pair_values`` (K, B, S) (every metric of
    ``image_keys``; NaN: undefined, counted apart for the masked metrics) and ``no_overlap`` flags (the NaNs
    that mean "no certified position"); ``control`` {(layer, metric): (B,)}; ``n_images``, ``correct``,
    ``two_shift_agree``, ``predicted`` (a class histogram); ``image_means`` (K, B, G) with ``image_control``
    (K, B). ``sums()`` (``compute``) returns a dict keyed ``"pair_count"``, ``"images"``, ``"correct"``,
    ``"two_shift_agree"``, ``("pair", layer, metric)`` (+ ``_count``, ``_no_overlap``, ``_max``),
    ``("control", ...)``, ``("control_sq", ...)``, ``("image", layer, metric)`` (``IMAGE_ROWS x G``),
    ``"pred_hist"``.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, n_shift_ids: int, metrics: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                 dtype=torch.float64, n_groups: int = 0, n_classes: int = 0, masked: tuple[str, ...] = MASKED,
                 **kwargs):
        super().__init__(**kwargs)
        self.masked = tuple(masked)
        self.n_shift_ids = int(n_shift_ids)
        self.metrics = dict(metrics)
        self.layers = tuple(self.metrics)
        self.n_groups, self.n_classes = int(n_groups), int(n_classes)
        self.add_state("pair_count", torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="sum")
        for name in ("images", "correct", "two_shift_agree"):
            self.add_state(name, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
        if self.n_classes:
            self.add_state("pred_hist", torch.zeros(self.n_classes, dtype=dtype), dist_reduce_fx="sum")
        #: the pair metrics with per-image group statistics, in the order of ``image_means``
        self.image_keys = tuple((layer, metric) for layer, (pair, _) in self.metrics.items() for metric in pair)
        if self.n_groups:
            shape = (len(self.image_keys), len(IMAGE_ROWS), self.n_groups)
            self.add_state("image_stats", torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")
        self._pair_keys, self._control_keys, self._control_sq_keys = {}, {}, {}
        # states are named by position: a layer may have any name (dots, a tuple of a layer-wise part)
        for layer, (pair, control) in self.metrics.items():
            for metric in pair:
                names = [metric]
                if metric in self.masked:
                    names.append(f"{metric}_count")
                if metric in COUNTED:
                    names.append(f"{metric}_no_overlap")
                for m in names:
                    self._pair_keys[layer, m] = attr = f"pair_{len(self._pair_keys)}"
                    self.add_state(attr, torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="sum")
                if metric in COUNTED:  # the worst pair: "exact" is decided on it, not on the mean
                    self._pair_keys[layer, f"{metric}_max"] = attr = f"pair_{len(self._pair_keys)}"
                    self.add_state(attr, torch.zeros(self.n_shift_ids, dtype=dtype), dist_reduce_fx="max")
            for metric in control:
                self._control_keys[layer, metric] = attr = f"control_{len(self._control_keys)}"
                self.add_state(attr, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")
                self._control_sq_keys[layer, metric] = attr = f"control_sq_{len(self._control_sq_keys)}"
                self.add_state(attr, torch.zeros((), dtype=dtype), dist_reduce_fx="sum")

    def _state(self, key) -> torch.Tensor:
        return getattr(self, self._pair_keys[key])

    def update(self, shift_ids=None, pair_values=None, no_overlap=None, control=None, n_images=None,
               correct=None, two_shift_agree=None, predicted=None, image_means=None,
               image_control=None) -> None:
        dtype = self.pair_count.dtype
        if pair_values is not None:
            self._add_pair_values(shift_ids, pair_values, no_overlap or {})
        if control is not None:
            for (layer, metric), values in control.items():
                state = getattr(self, self._control_keys[layer, metric])
                values = values.to(state.device, dtype)
                state += values.sum()
                getattr(self, self._control_sq_keys[layer, metric]).add_((values * values).sum())
        if predicted is not None and self.n_classes:
            predicted = predicted.reshape(-1).to(self.pred_hist.device)
            self.pred_hist.index_add_(0, predicted, torch.ones(predicted.shape, dtype=dtype, device=predicted.device))
        if image_means is not None:
            self._add_image_means(image_means, image_control)
        if n_images is not None:
            self.images += int(n_images)
        if correct is not None:
            self.correct += correct.to(self.correct.device, dtype).sum()
        if two_shift_agree is not None:
            self.two_shift_agree += two_shift_agree.to(self.correct.device, dtype).sum()

    def _add_pair_values(self, shift_ids: torch.Tensor, values: torch.Tensor, no_overlap: dict) -> None:
        """Add the per-pair values ``(K, ...)`` of the metrics ``image_keys`` at
        ``shift_ids`` (the pairs' shape): one ``index_add_`` of the ``K x P`` values gives every sum, one of
        the defined-flags every count of a masked metric (an undefined pair adds 0 there: NaN means
        undefined only for ``MASKED`` metrics, elsewhere it stays in the sum), one ``scatter_reduce_``
        (undefined as -inf) every maximum."""
        dtype, device, keys = self.pair_count.dtype, self.pair_count.device, self.image_keys
        ids = shift_ids.reshape(-1).to(device, non_blocking=True)
        values = values.reshape(len(keys), -1).to(device, dtype)
        defined = ~torch.isnan(values)
        n_ids = self.n_shift_ids
        masked = [k for k, (_, metric) in enumerate(keys) if metric in self.masked]
        counted = [k for k in masked if keys[k][1] in COUNTED]
        is_masked = torch.zeros((len(keys), 1), dtype=torch.bool, device=device)
        is_masked[masked] = True
        sums = torch.zeros(values.shape[0], n_ids, dtype=dtype, device=device)
        sums.index_add_(1, ids, torch.where(defined | ~is_masked, values, 0.0))
        self.pair_count.index_add_(0, ids, torch.ones(ids.shape, dtype=dtype, device=device))
        if masked:
            counts = torch.zeros(len(masked), n_ids, dtype=dtype, device=device)
            counts.index_add_(1, ids, defined[masked].to(dtype))
        if counted:
            worst = torch.full((len(counted), n_ids), -torch.inf, dtype=dtype, device=device)
            rows = values[counted]
            worst.scatter_reduce_(1, ids.expand(len(counted), -1), torch.where(defined[counted], rows, -torch.inf), "amax")
        for k, (layer, metric) in enumerate(keys):
            self._state((layer, metric)).add_(sums[k])
            if metric in self.masked:
                self._state((layer, f"{metric}_count")).add_(counts[masked.index(k)])
            if metric in COUNTED:
                state = self._state((layer, f"{metric}_max"))
                torch.maximum(state, worst[counted.index(k)], out=state)
                flags = no_overlap.get((layer, metric))
                if flags is not None:
                    flags = flags.reshape(-1).to(device, dtype)
                    self._state((layer, f"{metric}_no_overlap")).index_add_(0, ids, flags)

    def _add_image_means(self, means: torch.Tensor, control: torch.Tensor | None) -> None:
        """Add one batch's per-image group means ``(K, B, G)`` (NaN: the image has no pair in the group)."""
        stats = self.image_stats
        means = means.to(stats.device, stats.dtype)
        has = ~torch.isnan(means)
        m = torch.where(has, means, torch.zeros((), dtype=stats.dtype, device=stats.device))
        stats[:, 0] += has.sum(1, dtype=stats.dtype)
        stats[:, 1] += m.sum(1)
        stats[:, 2] += (m * m).sum(1)
        if control is not None:
            c = control.to(stats.device, stats.dtype).unsqueeze(-1)  # K x B x 1
            stats[:, 3] += (m * c).sum(1)
            stats[:, 4] += (has * c).sum(1)

    def compute(self) -> dict:
        out = {name: getattr(self, name).detach().cpu().double() for name in ("pair_count", "images", "correct", "two_shift_agree")}
        for kind, states in (("pair", self._pair_keys), ("control", self._control_keys),
                             ("control_sq", self._control_sq_keys)):
            for (layer, metric), attr in states.items():
                out[kind, layer, metric] = getattr(self, attr).detach().cpu().double()
        if self.n_groups:
            stats = self.image_stats.detach().cpu().double()
            for k, key in enumerate(self.image_keys):
                out[("image", *key)] = stats[k]
        if self.n_classes:
            out["pred_hist"] = self.pred_hist.detach().cpu().double()
        return out

    def sums(self) -> dict:
        """``compute()`` with every per-id sum of shape ``(n_ids,)`` (torchmetrics squeezes one-element
        results to scalars: a family of one parameter)."""
        raw = self.compute()
        return {k: v.reshape(self.n_shift_ids) if k == "pair_count" or (isinstance(k, tuple) and k[0] == "pair") else v
                for k, v in raw.items()}


def new_accumulator(n_ids: int, metrics: dict, device, n_groups: int = 0, n_classes: int = 0,
                    masked: tuple[str, ...] = MASKED) -> PairMetricAccumulator:
    return PairMetricAccumulator(n_ids, metrics, dtype=sum_dtype(device), n_groups=n_groups, n_classes=n_classes,
                                 masked=masked).to(device)
