"""The tables a view prints of a section (one per category, per-exit tables), their headers, notes and captions.

What goes where is described in :mod:`xbench.report.tables.layout`; the views in :mod:`xbench.report.views`.
Captions are text pieces and :class:`_Mark` s, which each output format renders its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from xbench.report import significance as sig
from xbench.report.stats import MASK_MARK, category_order, column_title
from xbench.report.tables.cells import _Analysis, _Cell, _direction
from xbench.report.tables.layout import _Table
from xbench.report.views import View

# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class _Mark:
    """A significance mark inside caption text."""

    symbol: str


def _caption(table: _Table, analysis: _Analysis) -> list[str | _Mark]:
    """Caption of a section as text pieces and marks, rendered by each output format."""
    seeds = table.stats.xs("n_seeds", axis=1, level="stat").to_numpy().ravel()
    seeds = seeds[seeds > 0]
    if seeds.size == 0:
        return ["No successful cells."]
    low, high = int(seeds.min()), int(seeds.max())
    if high == 1:
        parts: list[str | _Mark] = ["Mean over 1 seed (no CI)."]
    else:
        count = f"{high}" if low == high else f"{low}\u2013{high}"
        parts = [f"Mean ± 95% CI (Student's t) over {count} seeds."]
        if low == 1:
            parts.append(" Cells with 1 seed have no CI.")
    parts.append(" Best per column in bold, second best underlined; ↑ higher is better, ↓ lower is better.")
    parts.append(" Units in brackets; a column without one is a unitless score.")
    if any(_direction(column) is None for _, column in table.columns.iterrows()):
        parts.append(" Columns without ↑/↓ describe the method and are not ranked.")
    settings = analysis.settings
    if analysis.tested:
        parts += [f" Significance ({sig.describe(settings.test, settings.alpha)}): ", _Mark(sig.TIED)]
        parts.append(f" not significantly different from the best row (p ≥ {settings.alpha:g})")
        if analysis.reference is not None:
            parts += ["; ", _Mark(sig.BETTER), "/", _Mark(sig.WORSE)]
            parts.append(f" significantly better/worse than {analysis.reference} (p < {settings.alpha:g})")
        else:
            wanted = settings.explanation_reference if table.explained else settings.reference
            parts.append(f"; no {wanted} row to compare with")
        parts.append(".")
        if analysis.untested:
            parts.append(" Rows with fewer than 2 paired seeds are not tested.")
    else:
        parts.append(" No significance tests: they need at least 2 paired seeds.")
    if table.rows["method"].str.endswith(MASK_MARK).any():
        parts.append(" † trained with ground-truth masks (weak supervision).")
    return parts


def _title(category: str) -> str:
    return category[:1].upper() + category[1:]


def _header(column: pd.Series) -> str:
    return column_title(column["label"], column["unit"], column["exit"], column["higher_is_better"])


def _metric_header(column: pd.Series) -> str:
    """A per-exit table's column: the metric without its exit (the rows say which exit)."""
    return column_title(column["label"], column["unit"], None, column["higher_is_better"])


# --------------------------------------------------------------------------- views

EXIT_NOTE = (
    "One row per early exit (0 is the first). Each exit is ranked among the methods that have it: "
    "best in bold, second best underlined."
)


@dataclass(frozen=True)
class _Group:
    """One printed table of a section, as a view chose it.

    ``keys`` are its column keys; a per-exit table (``metrics`` not empty) has one column per
    metric and one row per (row, exit), its ``keys`` are those metrics' per-exit keys.
    ``hidden`` are the keys of its category that the view leaves out.
    """

    heading: str
    slug: str
    keys: list[str]
    metrics: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)

    @property
    def per_exit(self) -> bool:
        return bool(self.metrics)


def _chosen(table: _Table, category: str, keys: list[str], view: View) -> list[str]:
    """The keys of a category's table the view shows, in table order."""
    if view.max_columns is None or len(keys) <= view.max_columns:
        return keys
    preferred = view.preferred.get(category, ())
    metrics = table.columns["metric"]

    def priority(key: str) -> tuple[int, int]:
        metric = str(metrics[key])
        return (preferred.index(metric) if metric in preferred else len(preferred), keys.index(key))

    shown = set(sorted(keys, key=priority)[: view.max_columns])
    return [k for k in keys if k in shown]


def _per_exit_groups(table: _Table, keys: list[str], view: View) -> list[_Group]:
    """Per-exit keys as long tables: whole categories packed while they fit, one column per metric."""
    if not keys:
        return []
    columns = table.columns.loc[keys]
    room = max((view.max_columns or len(keys)) - 1, 1)  # the Exit column takes one
    chunks: list[tuple[list[str], list[str]]] = []  # (categories, metrics)
    for category in category_order(columns["category"]):
        metrics = list(dict.fromkeys(columns.loc[columns["category"] == category, "metric"]))
        for i in range(0, len(metrics), room):
            part = metrics[i : i + room]
            if chunks and len(chunks[-1][1]) + len(part) <= room and len(metrics) <= room:
                chunks[-1][0].append(category)
                chunks[-1][1].extend(part)
            else:
                chunks.append(([category], part))
    suffix = " (explanations)" if table.explained else ""
    groups = []
    for categories, metrics in chunks:
        names = list(dict.fromkeys(categories))
        heading = "Per exit: " + ", ".join(names) + suffix
        group_keys = [k for k in keys if columns.loc[k, "metric"] in metrics]
        groups.append(_Group(heading, "per-exit-" + "-".join(names), group_keys, metrics))
    return groups


def _groups(table: _Table, view: View) -> list[_Group]:
    """The tables a view prints for one section, in order: categories, then per-exit tables."""
    suffix = " (explanations)" if table.explained else ""
    if not view.per_exit_table and view.max_columns is None:
        return [_Group(_title(c) + suffix, c, keys) for c, keys in table.groups]
    groups, exit_keys = [], []
    for category, keys in table.groups:
        final = keys
        if view.per_exit_table:
            final = [k for k in keys if pd.isna(table.columns.loc[k, "exit"])]
            exit_keys += [k for k in keys if k not in final]
        if final:
            shown = _chosen(table, category, final, view)
            groups.append(
                _Group(_title(category) + suffix, category, shown, hidden=[k for k in final if k not in shown])
            )
    return groups + _per_exit_groups(table, exit_keys, view)


def _exit_rows(table: _Table, group: _Group) -> list[tuple[str, int]]:
    """(row, exit) pairs of a per-exit table that have a value or a failure, rows in table order."""
    counts = table.stats.xs("n_seeds", axis=1, level="stat") + table.stats.xs("n_failed", axis=1, level="stat")
    exits = table.columns["exit"]
    pairs = []
    for row in table.stats.index:
        found = {int(exits[k]) for k in group.keys if counts.loc[row, k] > 0}
        pairs += [(str(row), e) for e in sorted(found)]
    return pairs


def _exit_cells(table: _Table, analysis: _Analysis, group: _Group, row: str, exit: int) -> list[_Cell]:
    """The cells of one (row, exit) line of a per-exit table, one per metric."""
    columns = table.columns.loc[group.keys]
    cells = []
    for metric in group.metrics:
        match = columns.index[(columns["metric"] == metric) & (columns["exit"] == exit)]
        cells.append(analysis.cells.loc[row, match[0]] if len(match) else _Cell("missing"))
    return cells


def _metric_columns(table: _Table, group: _Group) -> list[pd.Series]:
    """A per-exit table's column metadata: the first per-exit key of each metric."""
    columns = table.columns.loc[group.keys]
    return [columns[columns["metric"] == m].iloc[0] for m in group.metrics]


def _group_note(table: _Table, group: _Group) -> str:
    """What a view's table says under its heading: the per-exit layout, the columns it leaves out."""
    notes = [EXIT_NOTE] if group.per_exit else []
    if group.hidden:
        names = ", ".join(_header(table.columns.loc[k]) for k in group.hidden)
        notes.append(f"Not in this view: {names} (the full view has every column).")
    return " ".join(notes)
