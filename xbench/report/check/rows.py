"""A run's rows: its records aggregated over seeds per (dataset, method, explainer, metric, exit)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from xbench.report.records import DISPLAY_DEFAULTS, Record
from xbench.report.stats import as_statistics

RowKey = tuple[str, str, str | None, str, int | None]  # dataset, method, explainer, metric, exit


@dataclass(frozen=True)
class Aggregate:
    """One row of a run aggregated over seeds (raw units); ``mean``/``ci`` are None without a successful seed."""

    mean: float | None
    ci: float | None
    n_seeds: int
    n_failed: int
    higher_is_better: bool | None
    display: dict[str, Any]
    setup: str | None


def _display(display: Mapping[str, Any], metric: str) -> dict[str, Any]:
    out = {**DISPLAY_DEFAULTS, **display}
    if out["label"] is None:
        out["label"] = metric
    return out


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def aggregate(records: Iterable[Record]) -> dict[RowKey, Aggregate]:
    """Aggregate records over seeds per (dataset, method, explainer, metric, exit), in order of appearance.

    The cells of :func:`~xbench.report.stats.statistics` (without the ground-truth-mask dagger,
    so rows keep their names), so the statistics, the duplicate rule (the last record of a seed
    wins) and the refusal to mix settings are those of the leaderboards.
    """
    stats = as_statistics(records, mark_masks=False)
    out = {}
    for cell in stats.cells.itertuples(index=False):
        r = stats.records[int(cell.first)]
        n_seeds = int(cell.n_seeds)
        out[(r.dataset, r.method, r.explainer, r.metric, r.exit)] = Aggregate(
            mean=_float(cell.mean) if n_seeds else None,
            ci=_float(cell.ci) if n_seeds else None,
            n_seeds=n_seeds,
            n_failed=int(cell.n_failed),
            higher_is_better=r.higher_is_better,
            display=_display(r.display, r.metric),
            setup=r.setup,
        )
    return out


def _merged(values: Iterable[Any]) -> Any:
    """The one distinct value, or the sorted distinct values when records disagree (None when there are none)."""
    distinct = sorted({json.dumps(v, sort_keys=True) for v in values if v is not None})
    if not distinct:
        return None
    parsed = [json.loads(v) for v in distinct]
    return parsed[0] if len(parsed) == 1 else parsed


def _sort_key(key: RowKey) -> tuple[str, str, str, str, int]:
    dataset, method, explainer, metric, exit = key
    return (dataset, method, explainer or "", metric, -1 if exit is None else exit)


def _row_name(key: RowKey) -> str:
    dataset, method, explainer, metric, exit = key
    where = f"{method} ({explainer})" if explainer else method
    return f"{dataset} / {where} / {metric}" + (f" @exit {exit}" if exit is not None else "")
