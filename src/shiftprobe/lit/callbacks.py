"""``ShiftProbeCallback``: measure invariance / equivariance layer by layer at the end of testing.

Runs after ``trainer.test`` (so after ``python train.py`` and ``python eval.py``) on the network
being tested and on the same network at its initial weights (the untrained control), writes
``results.json``, ``results.md`` and figures into the run directory and logs the headline scores and
figures to the loggers. Under DDP every rank measures its share of the test images; the
``torchmetrics`` states are summed across ranks and rank 0 writes the files.

``initial_state=<path>`` (a state_dict or checkpoint) replaces the untrained control's weights (a
whole saved module only with ``trust_initial_state=True``: Hydra's ``trust_checkpoint=true``);
``export_pairs=N`` also writes N seeded pairs with their activations (``pairs.pt``, ``pairs.npz``).
``untrained_inits=K`` measures K independent initialisations of the untrained network (the saved
initial weights and K - 1 re-initialised copies) and reports their spread (``untrained_inits``).
``transforms`` (Hydra: ``transform=[translation,rot90,...]``) adds the other transformation families:
``results["families"][name]`` for each (``shiftprobe.measure_family``, trained and untrained), a table
per family in results.md and ``<family>.png``; ``families.translation`` is the translation results.
Translation alone (the default) writes exactly what it wrote before.
``lie_derivative=true`` (or a list of generators, e.g. ``[translate_x,rotate,scale]``) adds
``shiftprobe.lie_derivative`` of both networks on a seeded subset of ``lie_derivative_images`` of the
measured images (``lie_derivative``, ``untrained.lie_derivative``); ``lie_derivative_layerwise=true`` adds
its layer-wise decomposition (a table in results.md and ``lie_layerwise.png``).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import lightning as L
import torch

from shiftprobe.atomic import all_or_none, make_folder
from shiftprobe.checkpoints import fit_problems, read_checkpoint
from shiftprobe.errors import ShiftProbeError, setting_error
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.engine import measure_network, subset_indices, subset_info
from shiftprobe.probe.plan import ShiftPlan
from shiftprobe.probe.section import inits_summary
from shiftprobe.probe.transforms import check_max_shift

log = logging.getLogger(__name__)

#: summary scores logged as scalars (and shown in TensorBoard's HPARAMS tab), by layer kind
HEADLINE_SPATIAL = ("equivariance_score", "aligned_rel")
HEADLINE_VECTOR = ("invariance_score",)
HEADLINE_CLASSIFIER = ("consistency",)


def untrained_copy(pl_module) -> torch.nn.Module | None:
    """The module's network at its initial weights (``initial_net_state``), or None if unknown."""
    state = getattr(pl_module, "initial_net_state", None)
    if state is None:
        return None
    net = copy.deepcopy(pl_module.net)
    net.load_state_dict(state)
    return net


def reinitialised_copy(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A fresh initialisation of the same architecture: a deep copy of ``net`` (on the CPU) whose every
    submodule with a ``reset_parameters()`` is re-initialised, children before parents (a model's own
    ``reset_parameters`` has the last word), under ``torch.manual_seed(seed)``. The global random state
    is restored afterwards. Parameters of modules without ``reset_parameters`` keep ``net``'s values
    (give the untrained network, so they stay untrained)."""
    fresh = copy.deepcopy(net).cpu()
    kept = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for name, module in reversed(list(fresh.named_modules())):
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
            elif any(True for _ in module.parameters(recurse=False)):
                kept.append(name or type(module).__name__)
    if kept:
        log.warning("untrained_inits: %s has no reset_parameters(); its parameters are those of init 0", ", ".join(kept))
    return fresh


def family_settings(transforms) -> list[tuple[str, object]]:
    """The ``transforms`` argument as ``(name, settings)`` pairs, in order, duplicates dropped.

    Accepts what the Hydra group gives (``transform: {translation: {}, rot90: {}, ...}``, settings under
    each option's name), a list of names, of ``{"name": ..., **settings}`` dicts or of family objects
    (``shiftprobe.Rotation90()``: kept as they are); None means translation only, as before the group.
    """
    from omegaconf import OmegaConf

    if transforms is None:
        return [("translation", {})]
    if OmegaConf.is_config(transforms):
        transforms = OmegaConf.to_container(transforms, resolve=True)
    if isinstance(transforms, str):
        transforms = [transforms]
    if isinstance(transforms, dict):
        items = [(str(name), dict(settings or {})) for name, settings in transforms.items()]
    else:
        items = []
        for item in transforms:
            if isinstance(item, str):
                items.append((item, {}))
            elif isinstance(item, dict):
                settings = dict(item)
                items.append((str(settings.pop("name")), settings))
            else:
                items.append((str(item.name), item))
    out, seen = [], set()
    for name, settings in items:
        if name not in seen:
            seen.add(name)
            out.append((name, settings))
    return out


def build_family(name: str, settings):
    """The family object of one ``(name, settings)`` pair of :func:`family_settings` (a ValueError naming
    ``transform.<name>`` for a bad setting)."""
    from shiftprobe.probe.families import TransformFamily, family_from_name

    if isinstance(settings, TransformFamily):
        return settings
    try:
        return family_from_name(name, **dict(settings))
    except (TypeError, ValueError) as err:
        raise ValueError(f"transform.{name}: {err}") from None


def lie_generators_setting(value, layerwise=False) -> tuple[str, ...] | None:
    """``callbacks.shift_probe.lie_derivative`` as the generators to measure: None (off: false or null),
    the default three (true) or the names listed; a ValueError naming the key for anything else, or for
    ``lie_derivative_layerwise`` without it."""
    from omegaconf import OmegaConf

    from shiftprobe.probe.generators import DEFAULT_GENERATORS, check_generators

    key = "callbacks.shift_probe.lie_derivative"
    if not isinstance(layerwise, bool):
        raise ValueError(f"{key}_layerwise={layerwise!r}: use true or false")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or value is False:
        if layerwise:
            raise ValueError(
                f"{key}_layerwise=true needs {key}=true or a list of generators, e.g. {key}=[translate_x,rotate]"
            )
        return None
    if value is True:
        return DEFAULT_GENERATORS
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        try:
            return check_generators(value)
        except ValueError as err:
            raise ValueError(f"{key}={list(value)}: {err}") from None
    raise ValueError(
        f"{key}={value!r}: use true, false or a list of generators, e.g. {key}=[translate_x,rotate,scale]"
    )


def input_normalization(pl_module) -> tuple | None:
    """The ``(mean, std)`` the training module applies to the network's input (``data.normalize=true``),
    declared to the engine so that every transform acts on pixels; None when the network takes pixels."""
    norm = getattr(pl_module, "input_normalization", None)
    return None if norm is None else tuple(torch.as_tensor(t).flatten().tolist() for t in norm)


def default_example_shifts(max_shift: int) -> list[tuple[int, int]]:
    """One odd and one even diagonal shift within ``max_shift`` (e.g. (1, 1) and (2, 2))."""
    out = []
    if max_shift >= 1:
        out.append((1, 1))
    if max_shift >= 2:
        out.append((2, 2))
    return out or [(0, 0)]


class ShiftProbeCallback(L.Callback):
    def __init__(
        self,
        max_shift: int = 4,
        mode: str = "crop",
        pattern: str = "grid",
        seed: int = 0,
        layers: list[str] | None = None,
        batch_size: int = 64,
        pairs_per_chunk: int | None = None,  # None: per device (512 on the CPU, 4096 on an accelerator)
        fast_path: bool = True,
        untrained: bool = True,
        figures: bool = True,
        output_dir: str | None = None,
        progress: bool = True,
        max_images: int | None = None,
        initial_state: str | None = None,
        trust_initial_state: bool = False,  # True: initial_state may be unpickled (runs code stored in it)
        export_pairs: int = 0,
        untrained_inits: int = 1,
        transforms=None,
        lie_derivative: bool | list[str] = False,
        lie_derivative_images: int = 500,
        lie_derivative_layerwise: bool = False,
    ):
        # validate early: a bad value fails when the callback is built, before training
        ShiftPlan.build(max_shift, mode, pattern, seed, 1 if pattern != "random" else 0)
        if batch_size < 1:
            raise ValueError(f"callbacks.shift_probe.batch_size must be >= 1, got {batch_size}")
        if max_images is not None and max_images < 2:
            raise ValueError(f"callbacks.shift_probe.max_images={max_images}: use at least 2 (or null for all)")
        if not isinstance(untrained_inits, int) or isinstance(untrained_inits, bool) or untrained_inits < 1:
            raise ValueError(
                f"callbacks.shift_probe.untrained_inits={untrained_inits!r}: use a number of initialisations >= 1 (default 1)"
            )
        self.untrained_inits = untrained_inits
        if not isinstance(lie_derivative_images, int) or isinstance(lie_derivative_images, bool) or lie_derivative_images < 2:
            raise ValueError(
                f"callbacks.shift_probe.lie_derivative_images={lie_derivative_images!r}: use a number of images >= 2"
            )
        self.lie_generators = lie_generators_setting(lie_derivative, lie_derivative_layerwise)
        self.lie_derivative = self.lie_generators is not None
        self.lie_derivative_images, self.lie_derivative_layerwise = lie_derivative_images, lie_derivative_layerwise
        # the families to measure (conf/transform/): translation (the settings above) and any others
        self.transforms = family_settings(transforms)
        if not self.transforms:
            raise ValueError("callbacks.shift_probe.transforms=[] measures nothing: give a family, e.g. [translation, rot90]")
        self.families = [(name, build_family(name, settings)) for name, settings in self.transforms if name != "translation"]
        self.measures_translation = any(name == "translation" for name, _ in self.transforms)
        self.max_shift, self.mode, self.pattern, self.seed = max_shift, mode, pattern, seed
        if isinstance(layers, str) or (layers is not None and len(layers) == 0):
            # as the API's resolve_layers: [] measures nothing (None: the model's default layers)
            raise ValueError(
                f"layers={layers!r}: give a list of module names, e.g. ['conv2', 'fc1'], or None for the "
                f"model's defaults"
            )
        self.layers = list(layers) if layers is not None else None
        self.batch_size, self.pairs_per_chunk, self.fast_path = batch_size, pairs_per_chunk, fast_path
        self.untrained, self.figures, self.progress = untrained, figures, progress
        self.output_dir = output_dir
        self.max_images = max_images
        self.initial_state = str(initial_state) if initial_state else None
        self.trust_initial_state = trust_initial_state is True
        self.export_pairs = export_pairs
        self._initial_weights: dict | None = None
        self._untrained_net: torch.nn.Module | None = None
        self.results: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Check ``export_pairs`` and ``layers`` (against the network) and read ``initial_state`` before
        training or testing starts."""
        n = self.export_pairs
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ShiftProbeError(
                f"callbacks.shift_probe.export_pairs={n!r} is not allowed: use a number of pairs >= 0 (0 = off), e.g. 100."
            )
        self._check_export_memory(trainer, pl_module)
        try:
            resolve_layers(pl_module.net, self.layers)
        except ValueError as err:  # every rank finds it at the same point: reported once
            problem = setting_error("callbacks.shift_probe.layers", self.layers, str(err))
            problem.same_on_every_rank = True
            raise problem from None
        if self.initial_state is None or self._initial_weights is not None:
            return
        what = "callbacks.shift_probe.initial_state"
        weights = read_checkpoint(self.initial_state, what=what, trusted=self.trust_initial_state).weights
        problems = fit_problems(weights, pl_module.net.state_dict())
        if problems:
            raise ShiftProbeError(
                f"{what}={self.initial_state!r} does not fit the network being measured: {problems}. "
                f"Give the initial weights of this same architecture."
            )
        self._initial_weights = weights

    def _check_export_memory(self, trainer, pl_module) -> None:
        """Refuse ``export_pairs`` pairs that would not fit in memory, before training (one line with the
        largest count that fits; ``shiftprobe.probe.export.check_export_memory``). The image size comes
        from the data module's loaded images; without them the export checks itself before it starts."""
        if not self.export_pairs or trainer is None:
            return
        from shiftprobe.probe.engine import as_image_batch
        from shiftprobe.probe.export import check_export_memory, pair_bytes

        dm = getattr(trainer, "datamodule", None)
        loaded = [getattr(dm, name, None) for name in ("test_images", "train_images")]
        images = next((x for x in loaded if isinstance(x, torch.Tensor) and len(x)), None)
        if images is None:
            return
        networks = 2 if self.untrained else 1
        try:  # a layer name the network does not have is named here too, before training
            per_pair = pair_bytes(pl_module.net, self.layers, tuple(as_image_batch(images[:1]).shape[1:]), networks)
            check_export_memory(self.export_pairs, per_pair, key="callbacks.shift_probe.export_pairs")
        except ValueError as err:
            raise ShiftProbeError(str(err)) from None

    def untrained_network(self, pl_module) -> tuple[torch.nn.Module | None, str | None]:
        """The untrained control and where its weights come from, in words (None, None if unknown)."""
        if self.initial_state is not None:
            if self._initial_weights is None:
                self.setup(None, pl_module, "test")
            net = copy.deepcopy(pl_module.net)
            net.load_state_dict(self._initial_weights)
            return net, f"the file given by callbacks.shift_probe.initial_state ({self.initial_state})"
        net = untrained_copy(pl_module)
        return net, (getattr(pl_module, "initial_net_origin", None) if net is not None else None)

    def _output_dir(self, trainer) -> Path:
        return make_folder(Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir))

    def test_images(self, trainer) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The measured test images and labels (a seeded random subset with ``max_images``)."""
        dm = trainer.datamodule
        images, labels = dm.test_images, dm.test_labels
        subset = subset_indices(len(images), self.max_images, self.seed)
        info = subset_info(len(images) if subset is None else len(subset), len(images), self.seed)
        if subset is not None:
            subset = subset.to(images.device)
            images, labels = images[subset], labels[subset]
        return images, labels, info

    def measure(self, trainer, pl_module) -> dict:
        """Measure the network (and its untrained copy) under every family; every rank must call this."""
        images, labels, subset = self.test_images(trainer)
        kwargs = dict(
            normalization=input_normalization(pl_module),
            layers=self.layers,
            control_seed=self.seed,
            batch_size=self.batch_size,
            pairs_per_chunk=self.pairs_per_chunk,
            fast_path=self.fast_path,
            device=pl_module.device,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            progress=self.progress and trainer.is_global_zero,
        )
        start = time.perf_counter()
        results: dict = {}
        self._untrained_net = None
        if self.measures_translation:
            check_max_shift(self.max_shift, min(images.shape[-2:]))
            plan = ShiftPlan.build(self.max_shift, self.mode, self.pattern, self.seed, len(images))
            results = measure_network(pl_module.net, images, labels, plan, desc="shift probe: trained", **kwargs)
            if self.untrained:
                net0, origin = self.untrained_network(pl_module)
                if net0 is None:
                    log.warning("the module has no initial_net_state; skipping the untrained measurement")
                else:
                    net0.to(pl_module.device)
                    results["untrained"] = measure_network(net0, images, labels, plan, desc="shift probe: untrained", **kwargs)
                    if origin:
                        results["untrained_origin"] = origin
                    self._untrained_net = net0
                    runs = [results["untrained"]]
                    for k in range(1, self.untrained_inits):
                        net_k = reinitialised_copy(net0, self.seed + k).to(pl_module.device)
                        desc = f"shift probe: untrained init {k}/{self.untrained_inits - 1}"
                        runs.append(measure_network(net_k, images, labels, plan, desc=desc, **kwargs))
                    results["untrained_inits"] = inits_summary(runs)
        elif self.untrained:
            self._untrained_net = self._untrained_for_families(pl_module, results)
        if self.lie_derivative:
            self._add_lie_derivative(trainer, pl_module, results, images)
        results["subset"] = subset
        results["seconds_total"] = time.perf_counter() - start
        if self.families:  # results.json families: {name: section}, in the order of transforms
            self._measure_families(pl_module, images, labels, kwargs, results)
            results["seconds_total"] = time.perf_counter() - start
        return results

    def _untrained_for_families(self, pl_module, results: dict) -> torch.nn.Module | None:
        """The untrained control when translation (which builds it) is not measured."""
        net0, origin = self.untrained_network(pl_module)
        if net0 is None:
            log.warning("the module has no initial_net_state; skipping the untrained measurement")
            return None
        if origin:
            results["untrained_origin"] = origin
        return net0.to(pl_module.device)

    def _measure_families(self, pl_module, images, labels, kwargs: dict, results: dict) -> None:
        """``results["families"]``: a section per family (``shiftprobe.measure_family``, trained and
        untrained); ``families.translation`` is the translation results above. DDP: each rank measures
        its share of the images (``rank``, ``world_size``) and the sums are reduced across ranks."""
        from shiftprobe.probe.family_engine import measure_family

        kwargs = {k: v for k, v in kwargs.items() if k != "fast_path"}
        built = dict(self.families)
        families: dict = {}
        for name, _ in self.transforms:
            if name == "translation":
                families[name] = dict(results)
                continue
            section = measure_family(pl_module.net, images, labels, built[name], desc=f"shift probe: {name}", **kwargs)
            if self._untrained_net is not None:
                section["untrained"] = measure_family(
                    self._untrained_net, images, labels, built[name], desc=f"shift probe: {name}, untrained", **kwargs
                )
            families[name] = section
        results["families"] = families

    def _add_lie_derivative(self, trainer, pl_module, results: dict, images: torch.Tensor) -> None:
        """``results["lie_derivative"]`` (and the untrained network's, when it was measured): the Lie
        derivative on a seeded subset of ``lie_derivative_images`` of the measured images."""
        from shiftprobe.probe.lie_derivative import lie_derivative

        subset = subset_indices(len(images), self.lie_derivative_images, self.seed)
        if subset is not None:
            images = images[subset.to(images.device)]
        kwargs = dict(
            layers=self.layers, generators=self.lie_generators, layerwise=self.lie_derivative_layerwise,
            normalization=input_normalization(pl_module),
            batch_size=self.batch_size, device=pl_module.device, progress=self.progress and trainer.is_global_zero,
        )
        results["lie_derivative"] = lie_derivative(pl_module.net, images, **kwargs)
        if self._untrained_net is not None and "untrained" in results:
            results["untrained"]["lie_derivative"] = lie_derivative(self._untrained_net, images, **kwargs)

    def on_test_end(self, trainer, pl_module) -> None:
        results = self.measure(trainer, pl_module)
        self.results = results
        if not trainer.is_global_zero:
            return
        out = self._output_dir(trainer)
        from shiftprobe.probe.results import Results
        from shiftprobe.reporting.family_report import family_summary_lines
        from shiftprobe.reporting.markdown import summary_lines, write_results_markdown

        # every file atomically, and all or none: a stop half-way (Ctrl-C, SIGTERM, a full disk) removes
        # the files already written, so no results.json is left without its results.md, figures and pairs
        with all_or_none():
            Results(results).save(out / "results.json")
            write_results_markdown(results, out / "results.md")
            if self.figures:
                self._figures(trainer, pl_module, results, out)
            if self.export_pairs:
                self._export_pairs(trainer, pl_module, out)
        self._log_scalars(trainer, results)
        for line in (summary_lines(results) if self.measures_translation else []) + family_summary_lines(results):
            log.info(line)
        log.info("shift probe: wrote %s and %s", out / "results.json", out / "results.md")

    def _export_pairs(self, trainer, pl_module, out: Path) -> None:
        """``pairs.pt`` / ``pairs.npz``: ``export_pairs`` seeded pairs of the measured images."""
        from shiftprobe.probe.export import export_pairs
        from shiftprobe.probe.transforms import Translation

        images, labels, _ = self.test_images(trainer)
        transform = Translation(self.max_shift, self.mode, self.pattern, self.seed)
        export_pairs(
            pl_module.net, images, labels, self.layers, transform, self.export_pairs, self.seed,
            untrained=self._untrained_net, path=out, device=pl_module.device,
            normalization=input_normalization(pl_module),
        )
        log.info("shift probe: wrote %d pairs to %s and %s", self.export_pairs, out / "pairs.pt", out / "pairs.npz")

    # -- logging -----------------------------------------------------------------------------------
    @staticmethod
    def headline(results: dict, prefix: str = "probe") -> dict[str, float]:
        summary = results.get("summary", {})
        geometry = results.get("geometry", {})
        out = {}
        for layer in results.get("layers", []):
            if layer == results.get("classifier"):
                metrics = HEADLINE_VECTOR + HEADLINE_CLASSIFIER
            elif (geometry.get(layer) or {}).get("kind") == "spatial":
                metrics = HEADLINE_SPATIAL
            else:
                metrics = HEADLINE_VECTOR
            for metric in metrics:
                value = (summary.get(layer) or {}).get(metric)
                if value is not None:
                    out[f"{prefix}/{layer}/{metric}"] = float(value)
                ci = (summary.get(layer) or {}).get(f"{metric}_ci")
                if ci is not None and None not in ci:  # the 95 % interval of a score
                    out[f"{prefix}/{layer}/{metric}_ci_low"] = float(ci[0])
                    out[f"{prefix}/{layer}/{metric}_ci_high"] = float(ci[1])
        return out

    def _log_scalars(self, trainer, results: dict) -> None:
        metrics = self.headline(results)
        if "untrained" in results:
            metrics.update(self.headline(results["untrained"], prefix="probe_untrained"))
        for radial in results.get("radial", []):
            for key, value in self.headline({**results, "summary": radial}, prefix=f"probe_radius{radial['radius']}").items():
                metrics[key] = value
        for name, section in (results.get("families") or {}).items():  # probe_<family>/<layer>/<score>
            if name != "translation":
                metrics.update(self.headline(section, prefix=f"probe_{name}"))
                if section.get("untrained"):
                    metrics.update(self.headline(section["untrained"], prefix=f"probe_{name}_untrained"))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()

    def _example_layer(self, results: dict) -> str | None:
        """The deepest probe point with an exact test (the lab's conv2)."""
        geometry = results.get("geometry", {})
        candidates = [name for name in results.get("layers", []) if (geometry.get(name) or {}).get("stride")]
        return candidates[-1] if candidates else None

    def _figures(self, trainer, pl_module, results: dict, out: Path) -> None:
        import matplotlib.pyplot as plt

        from shiftprobe.probe.examples import example_pairs
        from shiftprobe.reporting.family_figures import save_family_figures
        from shiftprobe.reporting.figures import save_all_figures
        from shiftprobe.reporting.lie_figure import save_lie_figures

        figures = {}
        if self.measures_translation:
            examples = None
            layer = self._example_layer(results)
            if layer is not None:
                images = trainer.datamodule.test_images[:3]
                examples = example_pairs(pl_module.net, images, default_example_shifts(self.max_shift), layer, mode=self.mode,
                                         normalization=input_normalization(pl_module))
            figures = save_all_figures(results, out, examples=examples)
        figures.update(save_family_figures(results, out))  # <family>.png for every other family
        figures.update(save_lie_figures(results, out))  # lie_layerwise.png with the layer-wise decomposition
        for fig in figures.values():
            plt.close(fig)
        writers = [w for w in (getattr(lg, "experiment", None) for lg in trainer.loggers) if hasattr(w, "add_image")]
        # the PNGs just written, read once, not the figures drawn again (add_figure renders each anew)
        pixels = {name: plt.imread(out / f"{name}.png")[..., :3] for name in figures} if writers else {}
        for writer in writers:
            for name, image in pixels.items():
                writer.add_image(f"shift_probe/{name}", image, global_step=trainer.global_step, dataformats="HWC")
            writer.flush()
