"""Cache keys: what each cached model, metric value and set of maps depends on.

Keys hash canonical JSON (:func:`xbench.engine.cache.cache_key`) of the settings and a
fingerprint of the code that computes the entry, so editing a method (or a plugin)
recomputes that method's cells and nothing else. See ``docs/design.md`` (Cache).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xbench.engine import train as train_module
from xbench.engine.cache import cache_key
from xbench.engine.provenance import code_fingerprint
from xbench.explain.base import Explainer
from xbench.metrics.base import Metric
from xbench.metrics.context import EvalContext
from xbench.models import exits as exits_module
from xbench.registry import BACKBONES, DATASETS, METHODS
from xbench.suite import PluginSpec

if TYPE_CHECKING:
    from xbench.engine.plan import CellSpec, Plan
    from xbench.engine.resolved import ResolvedCell


def setup_hash(config: dict[str, Any]) -> str:
    """The short hash of a cell's settings that every record carries (``setup``)."""
    return cache_key(config)[:12]


def model_key(plan: Plan, cell: CellSpec, torch_version: str) -> str:
    """A trained model: the cell's settings but evaluation, the seed, the code, torch, the model it builds on."""
    config = plan.cell_config(cell)
    del config["evaluation"]
    code = code_fingerprint(
        METHODS.get(cell.method.name),
        BACKBONES.get(plan.backbone_of(cell.method)[0].name),
        DATASETS.get(cell.dataset.name),
        train_module,
    )
    required = plan.required_cell(cell)
    base = None if required is None else model_key(plan, required, torch_version)
    return cache_key(
        {"kind": "model", **config, "seed": cell.seed, "code": code, "torch": torch_version, "requires": base}
    )


def reference_key(model: str, sha256: str) -> str:
    """A reference model's metric values are cached under its own weights' hash, never a trained model's."""
    return cache_key({"kind": "reference", "model": model, "sha256": sha256})


def explainer_identity(explainer: Explainer) -> dict[str, Any]:
    return {"name": explainer.name, "params": explainer.param_dict(), "code": code_fingerprint(type(explainer))}


def metric_key(
    cell: ResolvedCell, model: str, spec: PluginSpec, metric: Metric, device_type: str, explainer: str | None = None
) -> str:
    """A metric's values for a model (and explainer), under the suite's evaluation settings."""
    code = code_fingerprint(type(metric), cell.method_class, EvalContext, exits_module)
    return cache_key(
        {
            "kind": "metric",
            "model": model,
            "metric": spec.name,
            "params": metric.param_dict(),
            "evaluation": cell.evaluation.model_dump(mode="json"),
            "device": device_type,
            "code": code,
            **({} if explainer is None else {"explainer": explainer_identity(cell.explainers[explainer])}),
        }
    )


def explanations_key(cell: ResolvedCell, model: str, explainer: str, device_type: str) -> str:
    """One explainer's maps of a model's explained test images."""
    return cache_key(
        {
            "kind": "explanations",
            "model": model,
            "explainer": explainer_identity(cell.explainers[explainer]),
            "method_code": code_fingerprint(cell.method_class, EvalContext),
            "evaluation": cell.evaluation.model_dump(mode="json"),
            "device": device_type,
        }
    )
