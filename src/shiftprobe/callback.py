"""``ShiftProbeCallback``: measure invariance / equivariance layer by layer at the end of testing.

Runs after ``trainer.test`` (so after ``python train.py`` and ``python eval.py``) on the network
being tested and on the same network at its initial weights (the untrained control), writes
``results.json``, ``results.md`` and figures into the run directory and logs the headline scores and
figures to the loggers. Under DDP every rank measures its share of the test images; the
``torchmetrics`` states are summed across ranks and rank 0 writes the files.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import lightning as L
import torch

from shiftprobe.measure import measure_results
from shiftprobe.paired import PairedShiftDataset, ShiftPlan

log = logging.getLogger(__name__)

#: summary scores logged as scalars (and shown in TensorBoard's HPARAMS tab)
HEADLINE_METRICS = (
    ("conv1", "equivariance_score"),
    ("conv2", "equivariance_score"),
    ("fc1", "invariance_score"),
    ("logits", "consistency"),
)


def paired_test_set(datamodule, max_shift: int, mode: str, pattern: str, seed: int) -> PairedShiftDataset:
    """The DataModule's paired test set, built from its in-memory test split."""
    if hasattr(datamodule, "paired_test_set"):
        return datamodule.paired_test_set(max_shift=max_shift, mode=mode, pattern=pattern, seed=seed)
    images, labels = datamodule.test_images, datamodule.test_labels
    return PairedShiftDataset(images, labels, ShiftPlan.build(max_shift, mode, pattern, seed, len(images)))


def untrained_copy(pl_module) -> torch.nn.Module | None:
    """The module's network at its initial weights (``initial_net_state``), or None if unknown."""
    state = getattr(pl_module, "initial_net_state", None)
    if state is None:
        return None
    net = copy.deepcopy(pl_module.net)
    net.load_state_dict(state)
    return net


class ShiftProbeCallback(L.Callback):
    def __init__(
        self,
        max_shift: int = 4,
        mode: str = "crop",
        pattern: str = "grid",
        seed: int = 0,
        batch_size: int = 64,
        pairs_per_chunk: int = 256,
        fast_path: bool = True,
        untrained: bool = True,
        figures: bool = True,
        output_dir: str | None = None,
        progress: bool = True,
        max_images: int | None = None,
    ):
        # validate early: a bad value fails when the callback is built, before training
        ShiftPlan.build(max_shift, mode, pattern, seed, 1 if pattern != "random" else 0)
        if batch_size < 1:
            raise ValueError(f"callbacks.shift_probe.batch_size must be >= 1, got {batch_size}")
        self.max_shift, self.mode, self.pattern, self.seed = max_shift, mode, pattern, seed
        self.batch_size, self.pairs_per_chunk, self.fast_path = batch_size, pairs_per_chunk, fast_path
        self.untrained, self.figures, self.progress = untrained, figures, progress
        self.output_dir = output_dir
        self.max_images = max_images
        self.results: dict | None = None

    def _output_dir(self, trainer) -> Path:
        path = Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def measure(self, trainer, pl_module) -> dict:
        """Measure the network (and its untrained copy); every rank must call this."""
        paired = paired_test_set(trainer.datamodule, self.max_shift, self.mode, self.pattern, self.seed)
        images, labels, plan = paired.images, paired.labels, paired.plan
        if self.max_images is not None and self.max_images < len(images):
            images, labels = images[: self.max_images], labels[: self.max_images]
            plan = ShiftPlan.build(self.max_shift, self.mode, self.pattern, self.seed, len(images))
        kwargs = dict(
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
        results = measure_results(pl_module.net, images, labels, plan, desc="shift probe: trained", **kwargs)
        if self.untrained:
            net0 = untrained_copy(pl_module)
            if net0 is None:
                log.warning("the module has no initial_net_state; skipping the untrained measurement")
            else:
                net0.to(pl_module.device)
                results["untrained"] = measure_results(
                    net0, images, labels, plan, desc="shift probe: untrained", **kwargs
                )
        results["seconds_total"] = time.perf_counter() - start
        return results

    def on_test_end(self, trainer, pl_module) -> None:
        results = self.measure(trainer, pl_module)
        self.results = results
        if not trainer.is_global_zero:
            return
        out = self._output_dir(trainer)
        from shiftprobe.report import summary_lines, write_results_json, write_results_markdown

        write_results_json(results, out / "results.json")
        write_results_markdown(results, out / "results.md")
        self._log_scalars(trainer, results)
        if self.figures:
            self._figures(trainer, pl_module, results, out)
        for line in summary_lines(results):
            log.info(line)
        log.info("shift probe: wrote %s and %s", out / "results.json", out / "results.md")

    # -- logging -----------------------------------------------------------------------------------
    @staticmethod
    def headline(results: dict, prefix: str = "probe") -> dict[str, float]:
        summary = results.get("summary", {})
        out = {}
        for layer, metric in HEADLINE_METRICS:
            value = summary.get(layer, {}).get(metric)
            if value is not None:
                out[f"{prefix}/{layer}/{metric}"] = float(value)
        return out

    def _log_scalars(self, trainer, results: dict) -> None:
        metrics = self.headline(results)
        if "untrained" in results:
            metrics.update(self.headline(results["untrained"], prefix="probe_untrained"))
        for radial in results.get("radial", []):
            for layer, metric in HEADLINE_METRICS:
                value = radial.get(layer, {}).get(metric)
                if value is not None:
                    metrics[f"probe_radius{radial['radius']}/{layer}/{metric}"] = float(value)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()

    def _figures(self, trainer, pl_module, results: dict, out: Path) -> None:
        try:
            import matplotlib.pyplot as plt

            from shiftprobe.plots import save_all_figures
        except ImportError as err:  # pragma: no cover - matplotlib is a dependency
            log.warning("figures skipped: %s", err)
            return
        images = trainer.datamodule.test_images[:4].unsqueeze(1).float().div(255).to(pl_module.device)
        figures = save_all_figures(results, out, net=pl_module.net, images=images, mode=self.mode)
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None)
            if hasattr(writer, "add_figure"):
                for name, fig in figures.items():
                    writer.add_figure(f"shift_probe/{name}", fig, global_step=trainer.global_step, close=False)
                writer.flush()
        for fig in figures.values():
            plt.close(fig)
