"""The ``Transform`` protocol every family implements (translation included): parameters, ``act`` / ``apply``,
``plan`` (which parameters pair with which images, and the groups results.json reports), the map action on a
spatial layer with its compared positions (or None and why), and the family's Lie generators."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from shiftprobe.probe.metrics import EPS, norm, sum_dtype, working

#: a group of a plan: (group name, its label in results.json, the parameter ids in it)
Group = tuple[str, Any, tuple[int, ...]]


@dataclass(frozen=True)
class Plan:
    """Which parameters pair with which images, and the groups results.json reports.

    ``params``: the parameter ids' values (id ``j`` is ``params[j]``, host values); ``pairs``: the ids every
    image is paired with (a tuple), or ``n x k`` ids per image (a host tensor); ``groups``: in the
    accumulator's column order (``membership``); ``draws``: two parameter ids per image for R. Zhang's
    two-parameter consistency (translation), or None.
    """

    params: tuple
    groups: tuple[Group, ...]
    pairs: tuple[int, ...] | torch.Tensor
    draws: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def uniform(self) -> bool:
        """Every image is paired with the same parameters."""
        return isinstance(self.pairs, tuple)

    @property
    def params_per_image(self) -> int:
        return len(self.pairs) if self.uniform else self.pairs.shape[1]

    def ids_of(self, images: torch.Tensor) -> torch.Tensor:
        """``B x k`` parameter ids (host) of the images with these indices."""
        if self.uniform:
            return torch.tensor(self.pairs, dtype=torch.long).expand(len(images), -1)
        return self.pairs[images.cpu()]

    def param_values(self, ids: torch.Tensor) -> torch.Tensor:
        """The numeric parameters (translation's shifts) of ``ids`` as a host tensor (``ids.shape x P``)."""
        return torch.tensor(self.params, dtype=torch.long)[ids]

    @classmethod
    def every(cls, params) -> Plan:
        """Every image with every parameter; a group per parameter and the summary."""
        params = tuple(params)
        ids = tuple(range(len(params)))
        groups = tuple(("param", p, (j,)) for j, p in enumerate(params)) + (("summary", None, ids),)
        return cls(params, groups, ids)

    def membership(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n_params x n_groups``: 1 where parameter ``j`` is in group ``g``."""
        out = torch.zeros(len(self.params), len(self.groups), dtype=dtype)
        for g, (_, _, ids) in enumerate(self.groups):
            out[list(ids), g] = 1
        return out


@dataclass(frozen=True)
class MapAction:
    """What an equivariant layer's map of ``T(p) x`` holds: ``expected`` (``..., C, h', w'``) at the positions
    ``region`` of the map (rows, columns; None: the whole map)."""

    expected: torch.Tensor
    region: tuple[slice, slice] | None = None

    @property
    def empty(self) -> bool:
        """No position is compared."""
        return self.expected.shape[-1] * self.expected.shape[-2] == 0

    def rel(self, actual: torch.Tensor) -> torch.Tensor:
        """``||actual[region] - expected|| / ||expected||`` per map (``..., C, h, w``) in the sum dtype; NaN
        where no position is compared."""
        if self.empty:
            return torch.full(actual.shape[:-3], float("nan"), dtype=sum_dtype(actual.device), device=actual.device)
        if self.region is not None:
            actual = actual[..., self.region[0], self.region[1]]
        actual, expected = working(actual), working(self.expected)
        return norm((actual - expected).flatten(-3)) / norm(expected.flatten(-3)).clamp_min(EPS)


class Transform:
    """The protocol (subclasses are frozen dataclasses with a ``name`` field)."""

    #: the family's type (the Hydra option); ``name`` (the results key) defaults to it
    kind: ClassVar[str] = ""
    #: the parameter's name in results.json
    parameter: ClassVar[str] = ""
    #: the transform permutes pixels, so a per-channel sort of an equivariant map forgets it (sorting test)
    permutes_pixels: ClassVar[bool] = False
    #: ``aligned_rel_max`` within the tolerance certifies exact equivariance (False: a measure only)
    exact_test: ClassVar[bool] = True
    #: the infinitesimal generators of the family (``shiftprobe.probe.generators``); () if discrete
    generators: ClassVar[tuple[str, ...]] = ()
    #: the metrics of a spatial layer with a defined map action (in the accumulator's order)
    map_metrics: ClassVar[tuple[str, ...]] = ("aligned_rel",)

    name: str

    @property
    def dims(self) -> int:
        return 1

    def params(self) -> list:
        raise NotImplementedError

    def act(self, x: torch.Tensor, param) -> torch.Tensor:
        """``T(param) x`` for images or maps ``x`` (``..., H, W``, float)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params) -> torch.Tensor:
        """``B x P x C x H x W``: every image of ``x`` (``B x C x H x W``) under each of ``params`` (a list)."""
        return torch.stack([self.act(x, p) for p in params], dim=1)

    def check_image_size(self, height: int, width: int) -> None:
        """A ValueError when the family cannot act on ``height x width`` images."""
        if height < 2 or width < 2:
            raise ValueError(f"{type(self).__name__} needs images of at least 2x2 pixels, got {height}x{width}")

    def plan(self, n_images: int, image_size: tuple[int, int]) -> Plan:
        """``Plan.every`` of the family's parameters."""
        return Plan.every(self.params())

    def map_problem(self, param, geometry, image_size: tuple[int, int]) -> str | None:
        """Why the map action of ``param`` is undefined for ``geometry`` (None: it is defined)."""
        raise NotImplementedError

    def map_action_note(self, geometry, image_size: tuple[int, int]) -> str | None:
        """Why the map action is undefined for ``geometry`` at some parameter (None: defined at every one)."""
        return next((p for p in (self.map_problem(q, geometry, image_size) for q in self.params()) if p), None)

    def layer_map_metrics(self, geometry, image_size: tuple[int, int]) -> tuple[str, ...]:
        """The map metrics a layer gets: ``aligned_rel`` where the map action is defined for some parameter."""
        if geometry.spatial and any(self.map_problem(p, geometry, image_size) is None for p in self.params()):
            return self.map_metrics
        return ()

    def map_action(self, feature: torch.Tensor, param, geometry, image_size: tuple[int, int]) -> MapAction | None:
        """What an equivariant layer's map of ``T(param) x`` holds, from its map ``feature`` of ``x``
        (``..., C, h, w``); None where undefined (``map_action_note``)."""
        if self.map_problem(param, geometry, image_size) is not None:
            return None
        expected = self._act_on_map(working(feature), param, geometry)
        region = self.map_region(param, geometry)
        return MapAction(expected if region is None else expected[..., region[0], region[1]], region)

    def _act_on_map(self, feature: torch.Tensor, param, geometry) -> torch.Tensor:
        """The map action on a map of ``geometry``: by default ``act`` on the map itself."""
        return self.act(feature, param)

    def map_region(self, param, geometry) -> tuple[slice, slice] | None:
        """The map positions ``aligned_rel`` compares (rows, columns); None: the whole map."""
        return None

    def map_values(self, f_x: torch.Tensor, f_t: torch.Tensor, params, ctx) -> tuple[dict, dict]:
        """``aligned_rel`` (``B x P``; NaN where undefined or nothing is compared) of the maps ``f_t`` of the
        chunk's ``params`` against the map action on ``f_x``, and the flags of the pairs with nothing compared."""
        shape = f_t.shape[:2]
        values = torch.full(shape, float("nan"), dtype=sum_dtype(f_x.device), device=f_x.device)
        empty = torch.zeros(shape, dtype=torch.bool, device=f_x.device)
        for j, param in enumerate(params):
            action = self.map_action(f_x, param, ctx.geometry, ctx.image_size)
            if action is not None:
                values[:, j], empty[:, j] = action.rel(f_t[:, j]), action.empty
        return {"aligned_rel": values}, {"aligned_rel": empty}

    def param_to_json(self, param) -> Any:
        """A parameter as results.json writes it."""
        return param

    def to_dict(self) -> dict:
        """The settings (results.json ``config``)."""
        out = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
