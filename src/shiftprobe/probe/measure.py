"""``measure``: the only orchestrator. It checks the inputs once, chooses the image subset, and measures every
transform (``measure_section``), the Lie derivative (``lie_section``), the untrained network and its
re-initialised copies; the Lightning callback calls it and only writes files and logs."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from shiftprobe.probe.accumulator import new_accumulator
from shiftprobe.probe.budget import (
    Chunking,
    chunking,
    default_memory_budget,
    format_bytes,
    map_bytes,
    parse_memory_budget,
)
from shiftprobe.probe.engine import (
    control_offset,
    exact_float32,
    model_device,
    progress_default,
    run,
    setup,
    subset_indices,
    subset_info,
    worker_threads,
)
from shiftprobe.probe.examples import example_pairs
from shiftprobe.probe.families import as_transforms
from shiftprobe.probe.generators import DEFAULT_GENERATORS
from shiftprobe.probe.images import Images, checked_images
from shiftprobe.probe.inputs import FIRST_IMAGES, check_model, check_run_settings, eval_mode, to_pixels
from shiftprobe.probe.lie import lie_section
from shiftprobe.probe.pairs import PairComputer, layer_metrics
from shiftprobe.probe.results import Results
from shiftprobe.probe.section import build_section, inits_summary, results_dict
from shiftprobe.probe.translation import Translation

log = logging.getLogger(__name__)


def reinitialised_copy(net: nn.Module, seed: int) -> nn.Module:
    """A fresh initialisation of ``net``'s architecture under ``torch.manual_seed(seed)``: a deep copy (on the
    CPU) whose every submodule with a ``reset_parameters()`` is re-initialised, children before their parent
    (a model's own ``reset_parameters`` has the last word) and siblings in definition order, so a network
    without its own reset gets the draws of ``torch.manual_seed(seed); Net()``. The global random state is
    restored. Parameters of modules without one keep ``net``'s values (announced)."""
    fresh = copy.deepcopy(net).cpu()
    kept = []

    def reset(module: nn.Module, name: str) -> None:
        for child_name, child in module.named_children():
            reset(child, f"{name}.{child_name}" if name else child_name)
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        elif any(True for _ in module.parameters(recurse=False)):
            kept.append(name or type(module).__name__)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        reset(fresh, "")
    if kept:
        log.warning("untrained_inits: %s has no reset_parameters(); its parameters are those of init 0", ", ".join(kept))
    return fresh


def size_chunks(net, images: Images, *, batch_size: int, pairs_per_chunk: int | None, memory_budget,
                workers: int | None) -> Chunking:
    """The batch and chunk sizes of one network's measurement (a ``PairComputer``: batches in parallel threads),
    from its probe maps' shapes and the budget."""
    per_image, per_pair = map_bytes([geo.shape for geo in net.geometry.values()], images.shape, net.dtype)
    budget = parse_memory_budget(memory_budget)
    return chunking(per_image, per_pair, budget=budget or default_memory_budget(net.device),
                    threads=worker_threads(workers, net.device, PairComputer), batch_size=batch_size, device=net.device,
                    pairs_per_chunk=pairs_per_chunk)


def estimate_note(chunks: Chunking) -> str:
    """What the progress line adds: the chunking and its memory."""
    budget = f" of the {format_bytes(chunks.budget)} budget" if chunks.budget is not None else ""
    return (f", {chunks.batch_size} images a batch, chunks of {chunks.pairs_per_chunk:,} pairs, {chunks.threads} "
            f"at once: about {format_bytes(chunks.peak_bytes)} of maps{budget}")


def measure_section(model: nn.Module, images: Images, transform, feed, *, layers=None,
                    control_seed: int = 0, batch_size: int = 64, pairs_per_chunk: int | None = None,
                    memory_budget=None, fast_path: bool = True, device=None, rank: int = 0, world_size: int = 1,
                    progress: bool = False, desc: str = "measuring", workers: int | None = None,
                    sums: dict | None = None, examples: bool = False) -> dict:
    """The section of one network under one transform (``images``, ``feed``: checked). ``sums``, if given,
    receives this process's raw sums (``"raw"``) and ``"section"``: merged sums -> the section."""
    start = time.perf_counter()
    check_run_settings(batch_size, pairs_per_chunk, rank, world_size)
    image_size = tuple(images.shape[-2:])
    transform.check_image_size(*image_size)
    with exact_float32(), eval_mode(model):
        first = images.first(FIRST_IMAGES)
        net = setup(model, first, layers, feed, device=device, seed=control_seed, rank=rank)
        plan = transform.plan(len(images), image_size)
        metrics = {name: layer_metrics(transform, geo, image_size, name == net.classifier, images.labeled)
                   for name, geo in net.geometry.items()}
        chunks = size_chunks(net, images, batch_size=batch_size, pairs_per_chunk=pairs_per_chunk,
                             memory_budget=memory_budget, workers=workers)
        source = PairComputer(model, net.layers, net.geometry, net.classifier, transform, plan, image_size, metrics,
                              pairs_per_chunk=chunks.pairs_per_chunk, device=net.device, feed=feed, fast_path=fast_path)
        source.self_check(to_pixels(first.to(net.device), net.dtype), net.dtype)
        n_classes = net.geometry[net.classifier].shape[0] if net.classifier is not None else 0
        if n_classes and images.labeled:
            images.check_classes(n_classes, net.classifier)
        acc = new_accumulator(len(plan.params), metrics, net.device, n_groups=len(plan.groups), n_classes=n_classes)
        source.bind(acc, plan)
        k = control_offset(len(images), control_seed)
        raw = run(source, acc, images, net, k=k, batch_size=chunks.batch_size, rank=rank, world_size=world_size,
                  workers=workers, progress=progress, desc=desc, pairs_per_image=plan.params_per_image,
                  estimate=estimate_note(chunks))
        section = build_section(raw, transform, plan, net, k, metrics, image_size)
        if sums is not None:
            sums.update(raw=raw, section=lambda r: build_section(r, transform, plan, net, k, metrics, image_size))
        section["fast_path"] = source.windows is not None
        if source.fast_note:
            section["fast_path_note"] = source.fast_note
        if examples and isinstance(transform, Translation):
            section["examples"] = example_pairs(net, first, transform)
    section["seconds"] = time.perf_counter() - start
    return section


def _with_untrained(measure_one, model, untrained, copies: list) -> dict:
    """``measure_one(network, tag)`` of the model, with ``untrained`` and the spread over ``[untrained, *copies]``."""
    section = measure_one(model, "")
    if untrained is not None:
        section["untrained"] = measure_one(untrained, ", untrained")
        if copies:
            runs = [section["untrained"]] + [measure_one(c, f", untrained init {k}/{len(copies)}")
                                             for k, c in enumerate(copies, 1)]
            section["untrained_inits"] = inits_summary(runs)
    return section


def measure(model: nn.Module, images, labels: torch.Tensor | None = None, layers: Sequence[str] | None = None,
            transform=None, *, untrained: nn.Module | None = None, untrained_inits: int = 1,
            lie_derivative: Sequence[str] | bool | None = None, lie_derivative_images: int | None = None,
            layerwise: bool = False, examples: bool = True, control_seed: int = 0,
            max_images: int | None = None, batch_size: int = 64, pairs_per_chunk: int | None = None,
            memory_budget: int | str | None = None, fast_path: bool = True,
            device: torch.device | str | None = None, progress: bool | None = None, rank: int = 0,
            world_size: int = 1, normalization=None, output_key: str | int | None = None) -> Results:
    """Measure how invariant / equivariant each probe point of ``model`` is to each transform (default
    ``Translation(max_shift=4)``; ``[]`` with ``lie_derivative``: the Lie derivative only), in eval mode.

    ``images``: ``(N, [C,] H, W)`` pixels (uint8, floats in [0, 1], or normalised with ``normalization``),
    or a map-style ``Dataset`` / ``DataLoader`` streamed a batch at a time. Every argument: docs/api.md.
    Returns the ``Results`` of results.json schema 3 (``res.families[name]``, ``res.summary``, ``res.save``).

    >>> import torch, shiftprobe
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    >>> _ = net(torch.zeros(1, 1, 12, 12))
    >>> res = shiftprobe.measure(net, torch.rand(8, 12, 12), layers=["0", "3"], transform=shiftprobe.Translation(max_shift=1))
    >>> res.summary["0"]["aligned_rel"] < 1e-5
    True
    """
    start = time.perf_counter()
    transforms = as_transforms(transform if transform is not None else Translation())
    if not transforms and not lie_derivative:
        raise ValueError("transform=[] measures nothing: give a family, e.g. [Translation(), Rotation90()]")
    parse_memory_budget(memory_budget)
    found, feed = checked_images(model, images, labels, normalization=normalization, output_key=output_key)
    for t in transforms:
        t.check_image_size(*found.shape[-2:])
    copies = _untrained_copies(untrained, untrained_inits, control_seed)
    n_total = len(found)
    found = found.subset(subset_indices(n_total, max_images, control_seed))
    lie_images = found.subset(subset_indices(len(found), lie_derivative_images, control_seed,
                                             "lie_derivative_images", least=1)) if lie_derivative else None
    kw = dict(layers=layers, control_seed=control_seed, batch_size=batch_size, device=device, rank=rank,
              world_size=world_size, progress=progress_default(progress))
    families = {}
    with eval_mode(model), eval_mode(untrained) if untrained is not None else contextlib.nullcontext():
        for t in transforms:
            def one(net, tag, t=t):
                return measure_section(net, found, t, feed, pairs_per_chunk=pairs_per_chunk,
                                       memory_budget=memory_budget, fast_path=fast_path,
                                       desc=f"measuring {t.name}{tag}", examples=examples and not tag, **kw)
            families[t.name] = _with_untrained(one, model, untrained, copies)
        if lie_derivative:
            generators = DEFAULT_GENERATORS if lie_derivative is True else lie_derivative

            def lie_one(net, tag):
                return lie_section(net, lie_images, feed, generators, layerwise=layerwise,
                                   desc=f"Lie derivative{tag}", **kw)
            families["lie_derivative"] = _with_untrained(lie_one, model, untrained, copies)
    return Results(results_dict(families, subset_info(len(found), n_total, control_seed), time.perf_counter() - start))


def _untrained_copies(untrained: nn.Module | None, k: int, seed: int) -> list[nn.Module]:
    """The ``k - 1`` re-initialised copies of ``untrained`` (on its device), after checking ``k``."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"untrained_inits={k!r}: use a number of initialisations >= 1 (default 1)")
    if untrained is None:
        if k > 1:
            raise ValueError(f"untrained_inits={k} needs untrained=: the network at its initial weights")
        return []
    check_model(untrained)
    return [reinitialised_copy(untrained, seed + j).to(model_device(untrained)) for j in range(1, k)]


def measure_family(model: nn.Module, images: torch.Tensor, labels, family, *, normalization=None,
                   output_key=None, **kwargs) -> dict:
    """One network under one transform: its section (keywords: those of ``measure_section``)."""
    (family,) = as_transforms(family)
    found, feed = checked_images(model, images, labels, normalization=normalization, output_key=output_key)
    return measure_section(model, found, family, feed, **kwargs)
