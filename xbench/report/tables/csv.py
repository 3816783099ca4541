"""Leaderboards as CSV, every column whatever the view.

CSV. ``to_csv`` (``leaderboard.csv``) is wide: one row per (section, row) with columns
``dataset``, ``method``, ``explainer`` (empty for model rows), then per column key
``<key>_mean``, ``<key>_ci`` and ``<key>_n_seeds``, then ``failed``. ``to_long_csv``
(``leaderboard_long.csv``) has one row per (dataset, method, explainer, metric, exit)
cell with ``mean``, ``ci``, ``n_seeds``, ``unit``, ``direction``, the marks and the
p-values. Means and intervals are in display units (raw value * ``display.scale``) at
full precision; ``ci`` is empty below two seeds.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from xbench.report.records import Record
from xbench.report.tables.cells import DEFAULT_SIGNIFICANCE, Significance, _Cell, _direction, _prepare, _Prepared
from xbench.report.tables.layout import _Table, _tables


def _direction_name(value: bool | None) -> str:
    return {True: "higher", False: "lower", None: ""}[value]


def to_csv(records: Iterable[Record]) -> str:
    """Wide CSV, one row per (section, row); see the module docstring for the columns."""
    return _csv(_tables(records))


def _csv(tables: list[_Table]) -> str:
    frames = []
    for table in tables:
        columns: dict[str, object] = {}  # built at once: column-by-column inserts fragment the frame
        for key, column in table.columns.iterrows():
            scale = float(column["scale"])
            columns[f"{key}_mean"] = table.stats[(key, "mean")] * scale
            columns[f"{key}_ci"] = table.stats[(key, "ci")] * scale
            columns[f"{key}_n_seeds"] = table.stats[(key, "n_seeds")]
        columns["failed"] = table.row_failed
        wide = pd.DataFrame(columns, index=table.stats.index)
        wide["method"] = table.rows["method"].to_numpy()
        wide["explainer"] = table.rows["explainer"].to_numpy()
        frames.append(wide.reset_index(drop=True).assign(dataset=table.dataset))
    if not frames:
        return "dataset,method,explainer,failed\n"
    out = pd.concat(frames, ignore_index=True, sort=False)
    n_seeds = [c for c in out.columns if c.endswith("_n_seeds")]
    out[n_seeds] = out[n_seeds].fillna(0).astype("int64")
    fixed = ("dataset", "method", "explainer", "failed")
    values = [c for c in out.columns if c not in fixed]
    out = out[["dataset", "method", "explainer", *values, "failed"]]
    return str(out.to_csv(index=False, lineterminator="\n", float_format="%.12g"))


LONG_COLUMNS = [
    "dataset",
    "method",
    "explainer",
    "category",
    "metric",
    "exit",
    "label",
    "unit",
    "direction",
    "mean",
    "ci",
    "n_seeds",
    "n_failed",
    "rank",
    "marks",
    "p_vs_reference",
    "p_vs_best",
    "reference",
    "test",
]


def to_long_csv(records: Iterable[Record], significance: Significance = DEFAULT_SIGNIFICANCE) -> str:
    """Long CSV, one row per (dataset, method, explainer, metric, exit) with a value or a failure.

    ``mean`` and ``ci`` are in display units; ``direction`` is ``higher``, ``lower`` or
    empty; ``rank`` is 1 (bold), 2 (underlined) or empty; ``marks`` holds the
    significance marks (``+``, ``-``, ``*``); ``p_vs_reference`` and ``p_vs_best`` are the
    p-values of the paired tests against ``reference`` and the best row (empty when untested).
    """
    return _long_csv(_prepare(records, significance))


def _long_csv(prepared: _Prepared) -> str:
    rows = []
    for table, analysis in prepared:
        for key, column in table.columns.iterrows():
            scale = float(column["scale"])
            stats = table.stats[key]
            for row in table.stats.index:
                n_seeds, n_failed = int(stats.loc[row, "n_seeds"]), int(stats.loc[row, "n_failed"])
                if n_seeds == 0 and n_failed == 0:
                    continue
                cell: _Cell = analysis.cells.loc[row, key]
                rows.append(
                    {
                        "dataset": table.dataset,
                        "method": table.rows.loc[row, "method"],
                        "explainer": table.rows.loc[row, "explainer"],
                        "category": column["category"],
                        "metric": column["metric"],
                        "exit": column["exit"],
                        "label": column["label"],
                        "unit": column["unit"],
                        "direction": _direction_name(_direction(column)),
                        "mean": stats.loc[row, "mean"] * scale,
                        "ci": stats.loc[row, "ci"] * scale,
                        "n_seeds": n_seeds,
                        "n_failed": n_failed,
                        "rank": cell.rank or None,
                        "marks": cell.marks,
                        "p_vs_reference": analysis.p_reference.loc[row, key],
                        "p_vs_best": analysis.p_best.loc[row, key],
                        "reference": analysis.reference or "",
                        "test": analysis.settings.test,
                    }
                )
    out = pd.DataFrame(rows, columns=LONG_COLUMNS).astype({"exit": "Int64", "rank": "Int64"})
    return str(out.to_csv(index=False, lineterminator="\n", float_format="%.12g"))
