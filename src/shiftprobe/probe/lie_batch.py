"""The Lie derivative of one batch, per image: ``layer_values`` (each probe point, one forward-mode pass) and
``layerwise_values``, the layer-wise decomposition of the output's (docs/measurement.md, "The layer-wise
decomposition"): each module's own ``L_m = J_m(a) D(a) - D(b)`` carried to the output, and the gaps between
modules; the parts telescope to the end-to-end value (``unexplained``: the round-off)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwad
from torch import nn

from shiftprobe.probe.capture import OUTPUT, Feed, LayerCapture
from shiftprobe.probe.generators import GENERATORS, image_derivative, map_derivative
from shiftprobe.probe.geometry import CANVAS_PAD, growth_stride

#: module types left out of the default layer-wise modules (the identity in eval mode)
SKIPPED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
INPUT = "input"
Norms = dict[str, torch.Tensor]


def per_image_norms(d: torch.Tensor, ref: torch.Tensor, acc: torch.dtype) -> Norms:
    """``abs``: per image, the RMS of ``d`` over its elements; ``rel``: ``abs`` over the RMS of ``ref``
    (NaN where that is 0). Both ``(B,)`` in ``acc``."""
    b = len(ref)
    rms = d.reshape(b, -1).to(acc).pow(2).mean(1).sqrt()
    act = ref.reshape(b, -1).to(acc).pow(2).mean(1).sqrt()
    return {"abs": rms, "rel": torch.where(act > 0, rms / act, float("nan"))}


@contextmanager
def dual_level() -> Iterator[None]:
    """``forward_ad.dual_level`` without torch's own FutureWarning that its forward-mode decompositions use
    ``torch.jit.script`` (printed on the first dual tensor of a process; nothing a user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        with fwad.dual_level():
            yield


def _primal_tangent(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    primal, tangent = fwad.unpack_dual(t)
    return primal, (torch.zeros_like(primal) if tangent is None else tangent)


# -- per probe point --------------------------------------------------------------------------------
def layer_values(cap: LayerCapture, x: torch.Tensor, actions: dict[tuple[str, str], tuple[int, int] | None],
                 generators: Sequence[str], method: str, acc: torch.dtype) -> dict[tuple[str, str], Norms]:
    """Per (probe point, generator) in ``actions``: the per-image ``abs`` and ``rel`` of its Lie derivative
    for the batch ``x`` (pixels in the model's dtype). ``actions[layer, g]``: the map's stride (scored for
    equivariance: the map is moved back) or None (scored for invariance). One forward-mode pass carries
    the batch once per generator."""
    b, k = len(x), len(generators)
    tangent = torch.cat([image_derivative(x, g, method) for g in generators])
    names = sorted({name for name, _ in actions})
    with torch.no_grad(), dual_level():
        feats = cap.run(fwad.make_dual(x.repeat(k, 1, 1, 1), tangent))
        unpacked = {}
        for name in names:
            primal, dual = _primal_tangent(feats[name])
            unpacked[name] = (primal[:b].clone(), dual.clone())
    out = {}
    with torch.no_grad():
        for (name, g), stride in actions.items():
            primal, dual = unpacked[name]
            j = generators.index(g)
            d = dual[j * b : (j + 1) * b]
            if stride is not None:
                d = d - map_derivative(primal, g, method, stride)
            out[name, g] = per_image_norms(d, primal, acc)
    return out


# -- the layer-wise plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """A tensor the decomposition may transform: ``kind`` ``"image"`` (the network's input), ``"map"``
    (with its ``stride``) or ``"none"`` (a vector, or a map of unknown stride: no action)."""

    kind: str
    stride: tuple[int, int] | None = None

    def tangent(self, t: torch.Tensor, generator: str, method: str) -> torch.Tensor | None:
        """``D(t)``, or None where the transformation does not act on this tensor."""
        if not self.acts(generator):
            return None
        if self.kind == "image":
            return image_derivative(t, generator, method)
        return map_derivative(t, generator, method, self.stride)

    def acts(self, generator: str) -> bool:
        return self.kind == "image" or (self.kind == "map" and not GENERATORS[generator].colour)


@dataclass(frozen=True)
class Step:
    """A module of the decomposition, with its input and output."""

    name: str
    module: nn.Module
    input: Point
    output: Point


@dataclass
class LayerwisePlan:
    """The modules in the order they run, the network's output, and notes on modules left out."""

    steps: list[Step]
    output: Point
    notes: list[str] = field(default_factory=list)

    def gaps(self) -> list[tuple[str, Step | None, Step | None]]:
        """``(label, module before or None for the input, module after or None for the output)`` for
        every gap between consecutive points."""
        return [(f"{p.name if p else INPUT} → {q.name if q else OUTPUT}", p, q)
                for p, q in zip([None, *self.steps], [*self.steps, None], strict=True)]


def _candidates(model: nn.Module, modules: Sequence[str] | None) -> tuple[dict[str, nn.Module], bool]:
    """The modules asked for (checked) or, by default, every leaf module but dropout and identity."""
    named = dict(model.named_modules())
    if modules is None:
        return {n: m for n, m in named.items()
                if n and not list(m.children()) and not isinstance(m, SKIPPED_MODULES)}, False
    chosen = list(modules)
    if not chosen:
        raise ValueError("layerwise_modules=[] decomposes nothing: name modules, or leave it None "
                         "(every leaf)")
    for name in chosen:
        if name not in named or name == "":
            raise ValueError(f"layerwise module {name!r} is not a module of {type(model).__name__}; use "
                             f"names from model.named_modules(), e.g. {[n for n in named if n][:12]}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"layerwise_modules={chosen} lists a module twice; list each once")
    for a in chosen:
        for b in chosen:
            if b.startswith(a + "."):
                raise ValueError(f"layerwise modules {a!r} and {b!r} are nested; choose modules that do not "
                                 "contain each other")
    return {n: named[n] for n in chosen}, True


def _forward(model: nn.Module, x: torch.Tensor, feed: Feed) -> torch.Tensor:
    """The model's output tensor for pixels ``x``, through ``feed`` (normalisation, output key)."""
    return feed.model_output(model(feed.model_input(x)))


def _record(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module], feed: Feed
            ) -> tuple[dict, torch.Tensor | None]:
    """One forward pass of ``x``: per module, its calls (order, input, output); and the output (None if
    the pass failed, e.g. a canvas a fixed-size layer cannot take)."""
    seen: dict[str, dict] = {name: {"calls": 0} for name in modules}
    order = [0]
    handles = []
    for name, module in modules.items():

        def pre(mod, args, kwargs, name=name):
            rec = seen[name]
            rec["calls"] += 1
            rec["order"] = order[0]
            order[0] += 1
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            rec["input"] = args[0] if single else None
            rec["is_image"] = single and args[0] is x

        def post(mod, args, kwargs, out, name=name):
            seen[name]["output"] = out if isinstance(out, torch.Tensor) else None

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            try:
                y = _forward(model, x, feed)
            except Exception:  # a canvas the network cannot take: what ran before is recorded
                y = None
    finally:
        for h in handles:
            h.remove()
    return seen, y


def _point(t: torch.Tensor | None, grown: torch.Tensor | None, is_image: bool) -> tuple[Point, str | None]:
    """The Point of a tensor (from its shapes on the image and on the canvas), and a note if a map has
    no stride."""
    if is_image:
        return Point("image", (1, 1)), None
    if t is None or t.dim() != 4 or t.shape[-2] * t.shape[-1] <= 1:
        return Point("none"), None
    if grown is None or grown.dim() != 4:
        return Point("none"), "a map of unknown stride (the network does not run on a larger canvas)"
    stride = growth_stride(tuple(t.shape[-2:]), tuple(grown.shape[-2:]), CANVAS_PAD)
    if isinstance(stride, str):
        return Point("none"), stride
    return Point("map", stride), None


def plan_layerwise(model: nn.Module, sample: torch.Tensor, modules: Sequence[str] | None, feed: Feed
                   ) -> LayerwisePlan:
    """Which modules the decomposition uses (``modules``, or every leaf but dropout and identity), in the
    order they run on ``sample`` (a few images in the model's dtype and device), and what each one's
    input and output are (the input image, a map of known stride, or neither). A default module that
    runs more or less than once, or takes or returns anything but one tensor, is left out with a note;
    a module named in ``modules`` is refused (ValueError)."""
    chosen, explicit = _candidates(model, modules)
    seen, y = _record(model, sample, chosen, feed)
    h, w = sample.shape[-2:]
    canvas = sample.new_zeros(*sample.shape[:-2], h + 2 * CANVAS_PAD, w + 2 * CANVAS_PAD)
    grown, y_grown = _record(model, canvas, chosen, feed)
    steps, notes = [], []
    for name in sorted(chosen, key=lambda n: seen[n].get("order", -1)):
        rec = seen[name]
        problem = None
        if rec["calls"] != 1:
            problem = f"runs {rec['calls']} times in one forward pass (the decomposition needs once)"
        elif rec.get("input") is None or rec.get("output") is None:
            problem = "takes or returns something other than one tensor"
        if problem:
            if explicit:
                raise ValueError(f"layerwise module {name!r} {problem}; choose other modules")
            notes.append(f"{name}: left out, it {problem}")
            continue
        a, a_note = _point(rec["input"], grown[name].get("input"), rec["is_image"])
        b, b_note = _point(rec["output"], grown[name].get("output"), False)
        notes += [f"{name} {side}: {note}, not transformed"
                  for side, note in (("input", a_note), ("output", b_note)) if note]
        steps.append(Step(name, chosen[name], a, b))
    if not steps:
        raise ValueError(f"no module of {type(model).__name__} can be decomposed: "
                         f"{'; '.join(notes) or 'none ran'}")
    out_point, note = _point(y, y_grown, False)
    if note:
        notes.append(f"output: {note}, not transformed")
    return LayerwisePlan(steps, out_point, notes)


# -- the layer-wise passes --------------------------------------------------------------------------
Hook = tuple[nn.Module, str, Callable]


def _output_tangent(model: nn.Module, x: torch.Tensor, generator: str, method: str, *,
                    x_tangent: torch.Tensor | None = None, hooks: Sequence[Hook] = (),
                    output: Point | None = None, feed: Feed) -> torch.Tensor:
    """The output's tangent after one forward-mode pass of ``x`` (tangent ``x_tangent``, or none), with
    ``hooks`` (``(module, "pre" or "post", hook)``) injecting tangents; ``- D(y)`` when ``output`` is
    given."""
    handles = []
    try:
        for module, kind, fn in hooks:
            register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(register(fn))
        with torch.no_grad(), dual_level():
            inp = x if x_tangent is None else fwad.make_dual(x, x_tangent)
            primal, tangent = _primal_tangent(_forward(model, inp, feed))
            tangent = tangent.clone()
            d = output.tangent(primal, generator, method) if output is not None else None
            if d is not None:
                tangent = tangent - d
    finally:
        for handle in handles:
            handle.remove()
    return tangent


def _with_tangent(t: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    primal, tangent = fwad.unpack_dual(t)
    return fwad.make_dual(primal, add if tangent is None else tangent + add)


def _gap_hooks(p: Step | None, q: Step | None, generator: str, method: str) -> list[Hook]:
    """``+D(b)`` at the output of ``p`` and ``-D(a)`` at the input of ``q`` (into ``q`` only)."""
    hooks: list[Hook] = []
    if p is not None and p.output.acts(generator):

        def post(module, args, out):
            return _with_tangent(out, p.output.tangent(fwad.unpack_dual(out).primal, generator, method))

        hooks.append((p.module, "post", post))
    if q is not None and q.input.acts(generator):

        def pre(module, args):
            d = q.input.tangent(fwad.unpack_dual(args[0]).primal, generator, method)
            return (_with_tangent(args[0], -d),)

        hooks.append((q.module, "pre", pre))
    return hooks


def _own_hooks(step: Step, generator: str, method: str, record: dict) -> list[Hook]:
    """Inject the module's own Lie derivative ``L = J_m(a) D(a) - D(b)`` at its output; ``record`` gets
    ``L`` and ``b``. ``J_m(a) D(a)``: the module run again on its (saved) input, in forward mode."""
    state: dict = {"busy": False}

    def pre(module, args):
        if not state["busy"]:
            state["a"] = fwad.unpack_dual(args[0]).primal.clone()  # before an in-place module changes it

    def post(module, args, out):
        if state["busy"]:
            return None
        a, b = state["a"], fwad.unpack_dual(out).primal
        own = torch.zeros_like(b)
        da = step.input.tangent(a, generator, method)
        if da is not None:
            state["busy"] = True
            try:
                own = own + _primal_tangent(module(fwad.make_dual(a, da)))[1]
            finally:
                state["busy"] = False
        db = step.output.tangent(b, generator, method)
        if db is not None:
            own = own - db
        record["own"], record["b"] = own.clone(), b.clone()
        return _with_tangent(out, own)

    return [(step.module, "pre", pre), (step.module, "post", post)]


def layerwise_values(model: nn.Module, x: torch.Tensor, plan: LayerwisePlan, generators: Sequence[str],
                     method: str, acc: torch.dtype, feed: Feed) -> dict[tuple[str, str, str, str], Norms]:
    """The layer-wise decomposition of the output's Lie derivative for the batch ``x`` (module docstring):
    per-image ``{"abs", "rel"}`` (relative to the RMS of the network's output; ``own``: of the module's
    output, only where it has the batch's size) of each part of ``layerwise_parts``, keyed
    ``(kind, name, generator, part)``."""
    with torch.no_grad():
        y = _forward(model, x, feed).clone()
    n = len(x)
    zero: Norms = {key: torch.zeros(n, dtype=acc, device=x.device) for key in ("abs", "rel")}
    gaps = acting_gaps(plan, generators)
    out: dict[tuple[str, str, str, str], Norms] = {}
    for g in generators:
        end = _output_tangent(model, x, g, method, x_tangent=image_derivative(x, g, method),
                              output=plan.output, feed=feed)
        total = {"modules": torch.zeros_like(y), "between": torch.zeros_like(y)}
        for step in plan.steps:
            if not (step.input.acts(g) or step.output.acts(g)):
                out["module", step.name, g, "contribution"] = out["module", step.name, g, "own"] = zero
                continue
            record: dict = {}
            c = _output_tangent(model, x, g, method, hooks=_own_hooks(step, g, method, record), feed=feed)
            total["modules"] += c
            out["module", step.name, g, "contribution"] = per_image_norms(c, y, acc)
            if len(record["b"]) == n:
                out["module", step.name, g, "own"] = per_image_norms(record["own"], record["b"], acc)
        for label, p, q in gaps:
            if not _gap_acts((label, p, q), plan, g):
                out["between", label, g, "contribution"] = zero
                continue
            x_tangent = image_derivative(x, g, method) if p is None else None
            c = _output_tangent(model, x, g, method, x_tangent=x_tangent, hooks=_gap_hooks(p, q, g, method),
                                output=plan.output if q is None else None, feed=feed)
            total["between"] += c
            out["between", label, g, "contribution"] = per_image_norms(c, y, acc)
        out["total", "end_to_end", g, "value"] = per_image_norms(end, y, acc)
        for part, value in total.items():
            out["total", part, g, "value"] = per_image_norms(value, y, acc)
        unexplained = end - total["modules"] - total["between"]
        out["total", "unexplained", g, "value"] = per_image_norms(unexplained, y, acc)
    return out


def _gap_acts(gap: tuple[str, Step | None, Step | None], plan: LayerwisePlan, generator: str) -> bool:
    """Whether the transformation acts on either side of a gap (else the gap contributes exactly 0)."""
    _, p, q = gap
    before = True if p is None else p.output.acts(generator)  # the input image: every generator acts
    after = plan.output.acts(generator) if q is None else q.input.acts(generator)
    return before or after


def acting_gaps(plan: LayerwisePlan, generators: Sequence[str]) -> list:
    """The gaps between modules where the transformation acts on a side for some generator."""
    return [gap for gap in plan.gaps() if any(_gap_acts(gap, plan, g) for g in generators)]


#: the parts of the output's Lie derivative ``layerwise_values`` reports under ``("total", part, ...)``
TOTAL_PARTS = ("end_to_end", "modules", "between", "unexplained")


def layerwise_parts(plan: LayerwisePlan, generators: Sequence[str]) -> list[tuple[str, str, str]]:
    """The parts ``layerwise_values`` returns, without the generator: ``("module", name, "contribution" or
    "own")``, ``("between", label, "contribution")`` where the transformation acts on a side of the gap, and
    ``("total", part, "value")`` (``modules``, ``between``: the sums; ``unexplained``: the end-to-end value
    minus both, round-off)."""
    parts = [("module", step.name, kind) for step in plan.steps for kind in ("contribution", "own")]
    parts += [("between", label, "contribution") for label, _, _ in acting_gaps(plan, generators)]
    return parts + [("total", part, "value") for part in TOTAL_PARTS]
