"""The sections of a leaderboard, their rows and their columns: the tables before any formatting.

Layout. Each dataset has a section of model metrics whose rows are methods and, when
explanation metrics were measured, a section ``<dataset> · explanations`` whose rows are
(method, explainer) pairs labelled ``method (explainer)``. Within a section the metrics
are grouped by ``category``: accuracy, efficiency, localization, faithfulness,
consistency, sanity, then any other category in order of appearance. Each group is one
table: in Markdown a ``### Accuracy`` (explanations: ``### Localization (explanations)``)
table under the section's ``## <section>`` heading and caption, in LaTeX one ``table``
float per (section, category). That is the ``full`` view; a view (:mod:`xbench.report.views`)
may show fewer columns per category and put per-exit values in tables of their own
(``### Per exit: ...``, one row per (row, exit), one column per metric, ranked per exit); a note
under such a table names the columns it leaves out. Rows keep their order of first appearance. Within a
group, metrics follow the order of the method that reports the most of them, then
first appearance; a metric's per-exit columns follow it. A column key is ``metric``,
or ``metric@exit{k}`` for a value measured at early exit ``k``. Its header is
``display.label`` (+ `` @exit k``), the unit in brackets, then ↑ (higher is better),
↓ (lower is better) or nothing (no direction).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from xbench.report.records import Record
from xbench.report.stats import STATS, Statistics, as_statistics, category_order

EXPLANATIONS = " · explanations"  # suffix of the section name of explanation metrics


@dataclass(frozen=True)
class _Table:
    """One section of a dataset's leaderboard before formatting.

    ``stats`` is indexed by row label with columns (key, stat), stat in STATS, raw units.
    ``columns`` is indexed by key with the display metadata and category of each column.
    ``seeds`` maps each key to a (row x seed) frame of successful raw values.
    ``rows`` is indexed by row label with the row's ``method`` and ``explainer``.
    """

    dataset: str
    explained: bool
    stats: pd.DataFrame
    columns: pd.DataFrame
    seeds: dict[str, pd.DataFrame]
    rows: pd.DataFrame

    @property
    def name(self) -> str:
        return self.dataset + EXPLANATIONS if self.explained else self.dataset

    @property
    def row_failed(self) -> pd.Series:
        return self.stats.xs("n_failed", axis=1, level="stat").sum(axis=1) > 0

    @property
    def groups(self) -> list[tuple[str, list[str]]]:
        """(category, column keys) in category order, keys in column order."""
        categories = self.columns["category"]
        return [(c, list(categories.index[categories == c])) for c in category_order(categories)]


def _table(dataset: str, explained: bool, stats: Statistics) -> _Table:
    cells = stats.cells[(stats.cells["dataset"] == dataset) & (stats.cells["explained"] == explained)]
    rows = list(cells["row"].unique())
    # Metrics in the order of the row that reports the most of them (a baseline skips the
    # early-exit metrics, which would otherwise trail behind everything), then by first
    # appearance; a metric's per-exit columns follow its overall one; then grouped by category.
    per_row = [list(g["metric"].unique()) for _, g in cells.groupby("row", sort=False)]
    reference = max(per_row, key=len)
    rest = [m for m in cells["metric"].unique() if m not in reference]
    metric_order = {m: i for i, m in enumerate([*reference, *rest])}
    firsts = cells.drop_duplicates("key")  # cells are in order of their first record
    category_rank = {c: i for i, c in enumerate(category_order(firsts["category"]))}
    order = firsts.assign(
        _category=firsts["category"].map(category_rank),
        _metric=firsts["metric"].map(metric_order),
        _exit=firsts["exit"].fillna(-1),
    )
    keys = list(order.sort_values(["_category", "_metric", "_exit"], kind="stable")["key"])
    meta = ["metric", "exit", "category", "label", "unit", "scale", "decimals", "higher_is_better"]
    columns = firsts.set_index("key")[meta].reindex(keys)
    wide = cells.set_index(["row", "key"])[list(STATS)].unstack("key").swaplevel(axis=1)
    full = pd.MultiIndex.from_product([keys, STATS], names=["key", "stat"])
    wide = wide.reindex(index=pd.Index(rows, name="method"), columns=full)
    counts = [c for c in full if c[1] in ("n_seeds", "n_failed")]
    wide[counts] = wide[counts].fillna(0).astype("int64")
    values = stats.ok
    ok = values[(values["dataset"] == dataset) & (values["explained"] == explained)]
    seeds = {
        key: group.pivot(index="row", columns="seed", values="value").reindex(rows).astype("float64")
        for key, group in ok.groupby("key", sort=False)
    }
    for key in keys:  # a column with failures only still gets an (empty) frame
        seeds.setdefault(key, pd.DataFrame(index=pd.Index(rows), dtype="float64"))
    row_meta = cells.drop_duplicates("row").set_index("row")[["method", "explainer"]].reindex(rows)
    return _Table(dataset, explained, wide, columns, seeds, row_meta)


def _tables(records: Iterable[Record]) -> list[_Table]:
    stats = as_statistics(records)
    tables = []
    for dataset, cells in stats.cells.groupby("dataset", sort=False):
        # A dataset's model metrics, then its explanation metrics.
        for explained in (False, True):
            if cells["explained"].eq(explained).any():
                tables.append(_table(str(dataset), explained, stats))
    return tables


def leaderboard_frame(records: Iterable[Record]) -> dict[str, pd.DataFrame]:
    """Aggregate records over seeds, one frame per section in order of appearance.

    Sections are named by dataset, and ``<dataset> · explanations`` for explanation
    metrics. Each frame is indexed by row label (method, or ``method (explainer)``);
    its columns are a MultiIndex (key, stat) with stat in ``mean``, ``ci`` (95% CI
    half-width, NaN below two seeds), ``n_seeds`` (successful seeds) and ``n_failed``
    (failed records), in raw (unscaled) units.
    """
    return {table.name: table.stats for table in _tables(records)}
