"""Records shaped like a smoke-suite run, for tests that look at whole reports (page fit, browser).

Every metric of ``suites/smoke.yaml`` (and ``explanation_time``, the explainer zoo's) with the
registry's own labels, units and directions; the smoke suite's eight method rows; per-exit values
for the early-exit methods; explanation metrics per explainer, the baseline's with several of the
zoo's (long names: the Ranking and Sanity tables get many rows); the methods' paper claims; three
seeds, so that cells carry confidence intervals and significance marks: the widest a table of that
suite gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from helpers import make_record

from xbench.registry import METHODS, METRICS
from xbench.report.records import Record
from xbench.suite import load_suite
from xbench.suite.schema import PluginSpec

SMOKE = Path(__file__).resolve().parents[2] / "suites" / "smoke.yaml"
#: Exits of the early-exit rows (EGT: one per stage; Coded ResNeXt: one per coded block).
EXITS = {"egt": 3, "egt (λ=0)": 3, "coded_resnext": 4}
#: Metrics with a value per exit (those without ``requires_exits`` also have a final one).
PER_EXIT = {
    "top1",
    "exit_fraction",
    "latency",
    "attention_consistency",
    "attention_consistency_pearson",
    "attention_consistency_ssim",
    "attention_consistency_iou",
}
#: Explainers of each row whose maps the explanation metrics score.
EXPLAINERS = {
    "baseline": ["gradcam", "random", "integrated_gradients", "guided_gradcam", "kernel_shap", "scorecam"],
    "tame": ["native"],
}
#: Metrics beyond the smoke suite's: what an explainer's map costs (suites/explainers.yaml).
EXTRA_METRICS = [PluginSpec(name="explanation_time")]
DEFAULT_EXPLAINERS = ["native", "gradcam", "random"]


def smoke_like_records(seeds: int = 3) -> list[Record]:
    """Records of every (method row, metric[, exit][, explainer], seed) a smoke run writes."""
    suite = load_suite(SMOKE)
    rng = np.random.default_rng(0)
    records: list[Record] = []
    for method in suite.methods:
        row, cls = method.display, METHODS.get(method.name)
        config: dict[str, Any] = {"claims": [c.model_dump(mode="json") for c in cls.claims]}
        config["uses_masks"] = bool(method.params.get("injection"))
        exits = EXITS.get(row, 0)
        for spec in [*suite.metrics, *EXTRA_METRICS]:
            metric = METRICS.get(spec.name)
            display = {**metric.display(), **({"label": spec.label} if spec.label else {})}
            coded_only = spec.name.startswith("binary_") or spec.name == "branch_energy"
            if coded_only and method.name != "coded_resnext":
                continue
            if metric.requires_exits and not exits:
                continue
            explainers = [None]
            if metric.uses_explanations:
                explainers = EXPLAINERS.get(method.name, DEFAULT_EXPLAINERS)  # type: ignore[assignment]
            positions: list[int | None] = [None]
            if spec.name in PER_EXIT:
                # Attention consistency compares each early exit with the final one: no final value.
                positions = [] if metric.requires_exits else [None]
                positions += list(range(exits))
            for explainer in explainers:
                for position in positions:
                    base = rng.uniform(0.05, 0.95)
                    for seed in range(seeds):
                        value = base + rng.normal(0, 0.02)
                        records.append(
                            make_record(
                                row,
                                seed,
                                spec.display,
                                float(value / display.get("scale", 1.0) if display.get("unit") == "M" else value),
                                exit=position,
                                explainer=explainer,
                                category=metric.category,
                                higher_is_better=metric.higher_is_better,
                                display=display,
                                dataset="synthetic_shapes",
                                suite="smoke",
                                method_name=method.name,
                                config={**config, "method": {"name": method.name, "params": method.params}},
                            )
                        )
    return records
