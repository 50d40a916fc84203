"""``ShiftProbeCallback``: at the end of testing, ``shiftprobe.measure`` once on every rank, then rank 0 writes
results.json, results.md, the figures and ``export_pairs`` pairs (all or none) and logs the scalars."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch

from shiftprobe.atomic import all_or_none, make_folder
from shiftprobe.checkpoints import fit_problems, read_checkpoint
from shiftprobe.errors import ShiftProbeError, setting_error
from shiftprobe.probe.budget import parse_memory_budget
from shiftprobe.probe.capture import resolve_layers
from shiftprobe.probe.engine import subset_indices
from shiftprobe.probe.translation import Translation

log = logging.getLogger(__name__)
PROBE = "callbacks.shift_probe"
#: the scores logged per layer kind; the first is the layer's ``answer`` (TensorBoard's first screen, HPARAMS)
HEADLINE = {"spatial": ("equivariance_score", "aligned_rel"), "vector": ("invariance_score",),
            "classifier": ("invariance_score", "consistency"), "lie": ("rel",)}


def family_settings(transforms) -> list[tuple[str, object]]:
    """``transforms`` as ``(name, settings)`` pairs, in order, duplicates dropped: the Hydra group's
    ``{translation: {}, rot90: {}, ...}``, a list of names, of ``{"name": ..., **settings}`` dicts or of
    family objects; None: translation only."""
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
                items.append((str(item["name"]), {k: v for k, v in item.items() if k != "name"}))
            else:
                items.append((str(item.name), item))
    first: dict = {}
    for name, settings in items:
        first.setdefault(name, settings)
    return list(first.items())


def build_family(name: str, settings):
    """The family object of one ``(name, settings)`` pair (a ValueError naming ``transform.<name>``)."""
    from shiftprobe.probe.families import family_from_name
    from shiftprobe.probe.transform import Transform

    if isinstance(settings, Transform):
        return settings
    try:
        return family_from_name(name, **dict(settings))
    except (TypeError, ValueError) as err:
        raise ValueError(f"transform.{name}: {err}") from None


def lie_generators_setting(value, layerwise=False) -> tuple[str, ...] | None:
    """``lie_derivative`` as generators: None (off: false or null), the default three (true) or the names
    listed; a ValueError naming the key otherwise, or for ``lie_derivative_layerwise`` without it."""
    from omegaconf import OmegaConf

    from shiftprobe.probe.generators import DEFAULT_GENERATORS, check_generators

    key = f"{PROBE}.lie_derivative"
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if not isinstance(layerwise, bool):
        raise ValueError(f"{key}_layerwise={layerwise!r}: use true or false")
    if layerwise and value in (None, False):
        raise ValueError(f"{key}_layerwise=true needs {key}=true or a list of generators, e.g. {key}=[translate_x,rotate]")
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_GENERATORS
    try:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("use true, false or a list of generators, e.g. [translate_x,rotate,scale]")
        return check_generators(value)
    except ValueError as err:
        raise ValueError(f"{key}={value!r}: {err}") from None


def input_normalization(pl_module) -> tuple | None:
    """The ``(mean, std)`` the training module applies to the network's input (``data.normalize=true``),
    declared to the engine so that every transform acts on pixels; None when the network takes pixels."""
    norm = getattr(pl_module, "input_normalization", None)
    return None if norm is None else tuple(torch.as_tensor(t).flatten().tolist() for t in norm)


def _kind(section: dict, layer: str) -> str:
    """``HEADLINE``'s key of a layer: the Lie derivative's, the classifier, or its geometry's kind."""
    if section.get("kind") == "lie_derivative":
        return "lie"
    if layer == section.get("classifier"):
        return "classifier"
    return (section.get("geometry", {}).get(layer) or {}).get("kind", "vector")


def _count(value, key: str, least: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{PROBE}.{key}={value!r}: use {what} >= {least}")
    return value


class ShiftProbeCallback(L.Callback):
    def __init__(
        self,
        max_shift: int = 4,
        mode: str = "crop",
        pattern: str = "grid",
        seed: int = 0,
        layers: list[str] | None = None,
        batch_size: int = 64,
        pairs_per_chunk: int | None = None,  # None: sized to memory_budget
        memory_budget: int | str | None = None,  # bytes or "2GB"; None: a share of the available memory
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
        self.translation = Translation(max_shift, mode, pattern, seed)
        self.max_shift, self.mode, self.pattern, self.seed = max_shift, mode, pattern, seed
        self.batch_size = _count(batch_size, "batch_size", 1, "a number of images")
        if max_images is not None:
            _count(max_images, "max_images", 2, "a number of images (or null for all)")
        self.untrained_inits = _count(untrained_inits, "untrained_inits", 1, "a number of initialisations")
        self.lie_derivative_images = _count(lie_derivative_images, "lie_derivative_images", 2, "a number of images")
        self.lie_generators = lie_generators_setting(lie_derivative, lie_derivative_layerwise)
        self.lie_derivative_layerwise = lie_derivative_layerwise
        self.transforms = family_settings(transforms)
        if not self.transforms:
            raise ValueError(f"{PROBE}.transforms=[] measures nothing: give a family, e.g. [translation, rot90]")
        self.families = [self.translation if name == "translation" else build_family(name, settings)
                         for name, settings in self.transforms]
        if isinstance(layers, str) or (layers is not None and len(layers) == 0):
            raise ValueError(f"layers={layers!r}: give a list of module names, or None for the model's defaults")
        self.layers = list(layers) if layers is not None else None
        self.pairs_per_chunk, self.fast_path = pairs_per_chunk, fast_path
        try:
            parse_memory_budget(memory_budget)
        except ValueError as err:
            raise ValueError(f"{PROBE}.{err}") from None
        self.memory_budget = memory_budget
        self.untrained, self.figures, self.progress = untrained, figures, progress
        self.output_dir, self.max_images = output_dir, max_images
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
            raise ShiftProbeError(f"{PROBE}.export_pairs={n!r} is not allowed: use a number of pairs >= 0 (0 = off), e.g. 100.")
        self._check_export_memory(trainer, pl_module)
        try:
            resolve_layers(pl_module.net, self.layers)
        except ValueError as err:  # every rank finds it at the same point: reported once
            problem = setting_error(f"{PROBE}.layers", self.layers, str(err))
            problem.same_on_every_rank = True
            raise problem from None
        if self.initial_state is None or self._initial_weights is not None:
            return
        what = f"{PROBE}.initial_state"
        weights = read_checkpoint(self.initial_state, what=what, trusted=self.trust_initial_state).weights
        problems = fit_problems(weights, pl_module.net.state_dict())
        if problems:
            raise ShiftProbeError(f"{what}={self.initial_state!r} does not fit the network being measured: {problems}. "
                                  f"Give the initial weights of this same architecture.")
        self._initial_weights = weights

    def _check_export_memory(self, trainer, pl_module) -> None:
        """Refuse ``export_pairs`` pairs that would not fit in memory, before training (one line with the
        largest count that fits); the image size comes from the data module's loaded images."""
        if not self.export_pairs or trainer is None:
            return
        from shiftprobe.probe.export import check_export_memory, pair_bytes
        from shiftprobe.probe.inputs import as_image_batch

        dm = getattr(trainer, "datamodule", None)
        loaded = [getattr(dm, name, None) for name in ("test_images", "train_images")]
        images = next((x for x in loaded if isinstance(x, torch.Tensor) and len(x)), None)
        if images is None:
            return
        try:  # a layer name the network does not have is named here too, before training
            shape = tuple(as_image_batch(images[:1]).shape[1:])
            per_pair = pair_bytes(pl_module.net, self.layers, shape, 2 if self.untrained else 1)
            check_export_memory(self.export_pairs, per_pair, key=f"{PROBE}.export_pairs")
        except ValueError as err:
            raise ShiftProbeError(str(err)) from None

    def untrained_network(self, pl_module) -> tuple[torch.nn.Module | None, str | None]:
        """The untrained control and where its weights come from, in words (None, None if unknown)."""
        if self.initial_state is not None:
            if self._initial_weights is None:
                self.setup(None, pl_module, "test")
            weights, origin = self._initial_weights, f"the file given by {PROBE}.initial_state ({self.initial_state})"
        else:
            weights, origin = getattr(pl_module, "initial_net_state", None), getattr(pl_module, "initial_net_origin", None)
        if weights is None:
            return None, None
        net = copy.deepcopy(pl_module.net).eval()
        net.load_state_dict(weights)
        return net, origin

    def measure(self, trainer, pl_module) -> dict:
        """``shiftprobe.measure`` of the network (and its untrained control); every rank must call this."""
        from shiftprobe.probe.measure import measure

        dm = trainer.datamodule
        net0, origin = self.untrained_network(pl_module) if self.untrained else (None, None)
        if self.untrained and net0 is None:
            log.warning("the module has no initial_net_state; skipping the untrained measurement")
        self._untrained_net = net0.to(pl_module.device) if net0 is not None else None
        res = measure(
            pl_module.net, dm.test_images, dm.test_labels, self.layers, self.families,
            untrained=self._untrained_net, untrained_inits=self.untrained_inits if net0 is not None else 1,
            lie_derivative=self.lie_generators, lie_derivative_images=self.lie_derivative_images,
            layerwise=self.lie_derivative_layerwise, control_seed=self.seed,
            max_images=self.max_images, batch_size=self.batch_size, pairs_per_chunk=self.pairs_per_chunk,
            memory_budget=self.memory_budget,
            fast_path=self.fast_path, device=pl_module.device, progress=self.progress and trainer.is_global_zero,
            rank=trainer.global_rank, world_size=trainer.world_size, normalization=input_normalization(pl_module),
        )
        results = dict(res.data)
        if self._untrained_net is not None and origin:
            results["untrained_origin"] = origin
        return results

    def on_test_end(self, trainer, pl_module) -> None:
        results = self.measure(trainer, pl_module)
        self.results = results
        if not trainer.is_global_zero:
            return
        out = make_folder(Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir))
        from shiftprobe.probe.results import Results
        from shiftprobe.reporting.markdown import summary_lines, write_results_markdown

        # every file atomically, and all or none (a stop half-way removes the files already written)
        with all_or_none():
            Results(results).save(out / "results.json")
            write_results_markdown(results, out / "results.md")
            if self.figures:
                self._figures(trainer, results, out)
            if self.export_pairs:
                self._export_pairs(trainer, pl_module, out)
        self._log_scalars(trainer, results)
        for line in summary_lines(results):
            log.info(line)
        log.info("shift probe: wrote %s and %s", out / "results.json", out / "results.md")

    def _export_pairs(self, trainer, pl_module, out: Path) -> None:
        """``pairs.pt`` / ``pairs.npz``: ``export_pairs`` seeded pairs of the measured images."""
        from shiftprobe.probe.export import export_pairs

        images, labels = trainer.datamodule.test_images, trainer.datamodule.test_labels
        subset = subset_indices(len(images), self.max_images, self.seed)
        if subset is not None:
            subset = subset.to(images.device)
            images, labels = images[subset], labels[subset]
        export_pairs(pl_module.net, images, labels, self.layers, self.translation, self.export_pairs, self.seed,
                     untrained=self._untrained_net, path=out, device=pl_module.device,
                     normalization=input_normalization(pl_module))
        log.info("shift probe: wrote %d pairs to %s and %s", self.export_pairs, out / "pairs.pt", out / "pairs.npz")

    # -- logging -----------------------------------------------------------------------------------
    def answer_keys(self, net) -> list[str]:
        """TensorBoard's HPARAMS tags (``answer/<layer>``) of ``net``'s probe points (none if unknown)."""
        try:
            return [f"answer/{layer.name}" for layer in resolve_layers(net, self.layers)]
        except ValueError:
            return []

    @staticmethod
    def headline(section: dict, prefix: str = "probe", summary: dict | None = None) -> dict[str, float]:
        """``{prefix/layer/metric: value}`` of a section's summary (or ``summary``): the score of each layer's
        kind (``HEADLINE``) with its 95 % interval (``_ci_low``, ``_ci_high``)."""
        summary = section.get("summary", {}) if summary is None else summary
        out = {}
        for layer in section.get("layers", []):
            block = summary.get(layer) or {}
            for metric in HEADLINE[_kind(section, layer)]:
                if block.get(metric) is not None:
                    out[f"{prefix}/{layer}/{metric}"] = float(block[metric])
                ci = block.get(f"{metric}_ci")
                if ci is not None and None not in ci:
                    out[f"{prefix}/{layer}/{metric}_ci_low"], out[f"{prefix}/{layer}/{metric}_ci_high"] = map(float, ci)
        return out

    @staticmethod
    def scalars(results: dict) -> dict[str, float]:
        """Every logged scalar, in TensorBoard's sorted groups: ``answer`` and ``answer_untrained`` (each
        layer's score of the primary family) first; then ``probe`` (its headline scores with intervals),
        ``probe_untrained``, ``probe_radius`` (translation) and ``probe_<family>``."""
        out = {}
        primary = results["families"][results["primary"]]
        for tag, section in (("answer", primary), ("answer_untrained", primary.get("untrained"))):
            for layer in (section or {}).get("layers", []):
                value = (section["summary"].get(layer) or {}).get(HEADLINE[_kind(section, layer)][0])
                if value is not None:
                    out[f"{tag}/{layer}"] = float(value)
        for name, section in results["families"].items():
            prefix = "probe" if name == results["primary"] else f"probe_{name}"
            out.update(ShiftProbeCallback.headline(section, prefix))
            if section.get("untrained"):
                untrained = "probe_untrained" if prefix == "probe" else f"{prefix}/untrained"
                out.update(ShiftProbeCallback.headline(section["untrained"], untrained))
            for block in section["groups"].get("radius", []):
                out.update(ShiftProbeCallback.headline(section, f"probe_radius/r{block['param']}", block))
        return out

    def _log_scalars(self, trainer, results: dict) -> None:
        metrics = self.scalars(results)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()

    def _figures(self, trainer, results: dict, out: Path) -> None:
        import matplotlib.pyplot as plt

        from shiftprobe.reporting.figures import save_all_figures

        figures = save_all_figures(results, out)  # every family's figures, the example pairs from results
        for fig in figures.values():
            plt.close(fig)
        writers = [w for w in (getattr(lg, "experiment", None) for lg in trainer.loggers) if hasattr(w, "add_image")]
        # the PNGs just written, read once, not the figures drawn again (add_figure renders each anew)
        pixels = {name: plt.imread(out / f"{name}.png")[..., :3] for name in figures} if writers else {}
        for writer in writers:
            for name, image in pixels.items():
                writer.add_image(f"shift_probe/{name}", image, global_step=trainer.global_step, dataformats="HWC")
            writer.flush()
