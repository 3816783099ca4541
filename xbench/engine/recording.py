"""Records of one cell: a metric's value with everything it depends on, or the error that stopped it."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from xbench.engine.keys import explainer_identity
from xbench.engine.resolved import ResolvedCell
from xbench.metrics.base import Metric, MetricResult
from xbench.report.records import Record
from xbench.suite import PluginSpec


@dataclass(frozen=True)
class Provenance:
    """What every record says about where it was computed."""

    suite: str
    versions: dict[str, str]
    git: str | None
    device: str


def cell_identity(cell: ResolvedCell, data_source: str | None, uses_masks: bool) -> tuple[dict[str, Any], str]:
    """``(config with data source, setup hash)`` of a cell, as every record of it carries.

    A method's paper claims (``Method.claims``) ride along under ``claims``, outside the setup
    hash (they say what to test, not how the cell was made), so reports can judge them from records.
    """
    extra: dict[str, Any] = {"data_source": data_source, "uses_masks": uses_masks}
    if cell.claims:
        extra["claims"] = list(cell.claims)
    return {**cell.config, **extra}, cell.setup


def make_record(
    cell: ResolvedCell,
    provenance: Provenance,
    identity: tuple[dict[str, Any], str],
    spec: PluginSpec,
    metric: Metric,
    result: MetricResult | None,
    time_s: float | None,
    error: str | None = None,
    explainer: str | None = None,
) -> Record:
    config, setup = identity
    return Record(
        suite=provenance.suite,
        dataset=cell.dataset.display,
        method=cell.method.display,
        seed=cell.seed,
        metric=spec.display,
        value=None if result is None else result.value,
        exit=None if result is None else result.exit,
        explainer=explainer,
        n=None if result is None else result.n,
        higher_is_better=metric.higher_is_better,
        category=metric.category,
        display={**metric.display(), **({"label": spec.label} if spec.label else {})},
        params={
            **metric.param_dict(),
            **({} if explainer is None else {"explainer": explainer_identity(cell.explainers[explainer])["params"]}),
            **({} if result is None else result.params),
        },
        versions=provenance.versions,
        git=provenance.git,
        device=provenance.device,
        time_s=time_s,
        status="ok" if error is None else "failed",
        error=error,
        method_name=cell.method.name,
        cell=cell.id,
        config=config,
        setup=setup,
    )


def failed_records(
    cell: ResolvedCell,
    provenance: Provenance,
    identity: tuple[dict[str, Any], str],
    err: BaseException,
    timing_only: bool = False,
) -> list[Record]:
    """One failed record per metric of the suite (``timing_only``: per timing metric) for ``err``."""
    text = error_text(err)
    return [
        make_record(cell, provenance, identity, spec, metric, None, None, error=text)
        for spec, metric in cell.metrics
        if metric.measures_time or not timing_only
    ]


def error_text(err: BaseException) -> str:
    """``Type: message`` and the traceback, as a failed record carries it."""
    return f"{type(err).__name__}: {err}\n{''.join(traceback.format_exception(err))}"
