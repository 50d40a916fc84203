"""Fake results carrying the newer keys: ``_se`` / ``_ci``, certified sorting, consistency_correct,
predictions and untrained_inits, added to ``results_factory.make_fake_results``'s dict.

Every half-width is known: a score's ``_ci`` is ``value ± SCORE_HW``, every other mean has
``_se = MEAN_SE`` (half-width ``1.96 * MEAN_SE``).
"""

from __future__ import annotations

from results_factory import make_fake_results, translation

SCORE_HW = 0.02
MEAN_SE = 0.005
SCORES = ("invariance_score", "equivariance_score", "equivariance_score_certified")
CONVS = ("conv1", "conv2")


def _blocks(section: dict) -> list[dict]:
    return [b for blocks in section["groups"].values() for b in blocks] + [section["summary"]]


def _add_to_block(block: dict, certified: float | None) -> None:
    for layer in ("conv1", "conv2", "fc1", "logits"):
        entry = block[layer]
        if layer in CONVS:
            aligned = entry.get("aligned_rel")
            entry["nearest_aligned_rel"] = aligned if aligned is not None else 0.3
            if aligned is not None and certified is not None:
                entry["sorted_rel_certified"] = (1.0 - certified) * 0.5
                entry["equivariance_score_certified"] = certified
        if layer == "logits":
            entry["consistency_correct"] = min(1.0, entry["consistency"] + 0.01)
        for metric, value in list(entry.items()):
            if value is None or metric.endswith(("_se", "_ci", "_max", "_no_overlap")):
                continue
            if metric in SCORES:
                entry[f"{metric}_ci"] = [value - SCORE_HW, value + SCORE_HW]
            else:
                entry[f"{metric}_se"] = MEAN_SE


def with_new_keys(
    res: dict | None = None,
    *,
    certified: float | None = 1.0,
    near_constant_untrained: bool = True,
    k_inits: int = 3,
) -> dict:
    """``res`` (default: a fresh fake, max_shift 2) with every newer key in its translation section;
    returns it (changed in place)."""
    res = res if res is not None else make_fake_results(max_shift=2)
    t = translation(res)
    for net in [t] + ([t["untrained"]] if t.get("untrained") else []):
        for block in _blocks(net):
            _add_to_block(block, certified)
    t["predictions"] = {
        "histogram": [10] * 10,
        "entropy_bits": 3.32,
        "max_entropy_bits": 3.32,
        "top_class_share": 0.1,
        "near_constant": False,
    }
    if t.get("untrained"):
        t["untrained"]["predictions"] = {
            "histogram": [1, 1, 1, 91, 1, 1, 1, 1, 1, 1],
            "entropy_bits": 0.7,
            "max_entropy_bits": 3.32,
            "top_class_share": 0.91,
            "near_constant": near_constant_untrained,
        }
        summary = {
            layer: {
                metric: {"mean": value, "std": 0.01, "min": value - 0.02, "max": value + 0.02}
                for metric, value in block.items()
                if isinstance(value, float) and not metric.endswith(("_se", "_max"))
            }
            for layer, block in t["untrained"]["summary"].items()
            if isinstance(block, dict)
        }
        t["untrained_inits"] = {"k": k_inits, "summary": summary}
    return res
