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
from xbench.suite import PluginSpec

if TYPE_CHECKING:
    from xbench.engine.resolved import ResolvedCell


def setup_hash(config: dict[str, Any]) -> str:
    """The short hash of a cell's settings that every record carries (``setup``)."""
    return cache_key(config)[:12]


def model_key(
    config: dict[str, Any], seed: int, torch_version: str, plugins: tuple[type, ...], requires: str | None
) -> str:
    """A trained model: the cell's settings but evaluation, the seed, the code, torch, the model it builds on.

    Args:
        config: the cell's config (``Plan.cell_config``).
        plugins: the method, backbone and dataset classes whose code the model depends on.
        requires: the key of the model the cell builds on, if any.
    """
    config = {k: v for k, v in config.items() if k != "evaluation"}
    code = code_fingerprint(*plugins, train_module)
    key = {"kind": "model", **config, "seed": seed, "code": code, "torch": torch_version, "requires": requires}
    return cache_key(key)


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
