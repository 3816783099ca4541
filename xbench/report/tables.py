"""Leaderboards: pure functions from records to Markdown, CSV and LaTeX tables.

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

Cells. Each cell aggregates the seeds of one (row, column): the mean and, from two
seeds on, ± the half-width of the 95% confidence interval of the mean with Student's t,
``t.ppf(0.975, n - 1) * std(ddof=1) / sqrt(n)``, as :mod:`xbench.report.stats` computes
them for the tables, the plots and the regression check alike (every function here that
takes records also takes their :class:`~xbench.report.stats.Statistics`). Values are shown as
``value * display.scale`` with ``display.decimals`` decimals. A zero-width interval
(a count no seed changes) is not shown. The number of seeds is stated in the caption.

Marks, judged per column on the *displayed* (rounded) means and the column's
direction: the best value is bold (``**x**``, LaTeX ``\\textbf``), the second-best
distinct value underlined (``<u>x</u>``, LaTeX ``\\underline``); values that print the
same tie and share the mark. Columns without a direction have no marks. Significance
(:mod:`xbench.report.significance`, paired by seed, t-test by default) adds
superscripts: ``*`` the row is not significantly different from the best row
(p >= alpha; bold cells are not marked), ``+``/``−`` the row is significantly
better/worse than the reference row (``baseline``; in explanation sections
``baseline (gradcam)``). Rows with fewer than two paired seeds are not tested, and the
caption says so. The best row of a column is the bold row with the best unrounded mean.

Failures. A row with a failed record shows "failed" in every column where it has no
successful value, and a failure is never best. Duplicate records of the same (dataset,
row, seed, metric, exit) keep the last one, so a re-run (or a later run directory given
to ``xbench report``) replaces a failure. Rows trained with ground-truth masks get
`` †`` and a caption note.

CSV. ``to_csv`` (``leaderboard.csv``) is wide: one row per (section, row) with columns
``dataset``, ``method``, ``explainer`` (empty for model rows), then per column key
``<key>_mean``, ``<key>_ci`` and ``<key>_n_seeds``, then ``failed``. ``to_long_csv``
(``leaderboard_long.csv``) has one row per (dataset, method, explainer, metric, exit)
cell with ``mean``, ``ci``, ``n_seeds``, ``unit``, ``direction``, the marks and the
p-values. Means and intervals are in display units (raw value * ``display.scale``) at
full precision; ``ci`` is empty below two seeds.

LaTeX. ``to_latex`` needs ``\\usepackage{booktabs}`` and ``\\usepackage{siunitx}``
(v2.2 or later). Metric columns are siunitx ``S`` columns with a ``table-format``
fitted to their values, cells are written ``89.87 \\pm 0.12`` and printed as
``89.87 ± 0.12`` (``separate-uncertainty``); bold and underlined values are wrapped in
``\\tablenum`` so that they stay aligned, with ``detect-weight`` for the bold digits;
non-numeric cells are braced (``{failed}``, ``{--}``). Labels and method names are
escaped (``_ & % # $ { } ~ ^ \\``), and ±, ↑, ↓, µ and the multiplication sign become
math-mode symbols, so the output compiles with pdflatex. Every table fits the line of a
10-pt ``article`` by estimated width (:mod:`xbench.report.texwidth`): when it does not fit in
one ``tabular``, headers wrap (``\\shortstack``) and the columns are split into stacked blocks
(at most ``max_columns`` each) in the same float; in the two-column layout a table that needs
more than one block at ``\\columnwidth`` becomes a ``table*``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xbench.fileio import atomic_write_text
from xbench.report import significance as sig
from xbench.report.claims import Verdict
from xbench.report.claims import to_markdown as claims_markdown
from xbench.report.claims import to_rows as claim_rows
from xbench.report.claims import verdicts as claim_verdicts
from xbench.report.records import Record
from xbench.report.stats import (
    MASK_MARK,
    STATS,
    Statistics,
    as_statistics,
    category_order,
    column_title,
    direction_of,
)
from xbench.report.texwidth import (
    ONE_COLUMN_TEXTWIDTH,
    TABCOLSEP,
    TWO_COLUMN_COLUMNWIDTH,
    TWO_COLUMN_TEXTWIDTH,
    number_width,
    text_width,
)
from xbench.report.views import DEFAULT_VIEW, FULL, View, get_view

EXPLANATIONS = " · explanations"  # suffix of the section name of explanation metrics


@dataclass(frozen=True)
class Significance:
    """How leaderboard rows are tested against each other (see :mod:`xbench.report.significance`).

    Attributes:
        reference: row label the model rows are compared with.
        explanation_reference: row label (``method (explainer)``) the explanation rows are compared with.
        test: ``"ttest"`` (paired t-test) or ``"wilcoxon"`` (Wilcoxon signed-rank test).
        alpha: significance level.
    """

    reference: str = "baseline"
    explanation_reference: str = "baseline (gradcam)"
    test: str = "ttest"
    alpha: float = sig.DEFAULT_ALPHA

    def __post_init__(self) -> None:
        sig.check_test(self.test)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


DEFAULT_SIGNIFICANCE = Significance()


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


# --------------------------------------------------------------------------- cell analysis


@dataclass(frozen=True)
class _Cell:
    """One formatted cell: ``state`` is "ok", "failed" or "missing"; ``rank`` 1 (best), 2 (second) or 0."""

    state: str
    mean: str = ""
    ci: str = ""
    rank: int = 0
    marks: str = ""  # significance marks, a subsequence of "+-*"


@dataclass(frozen=True)
class _Analysis:
    """Cells of one section with the significance outcome behind them."""

    cells: pd.DataFrame  # rows x keys of _Cell
    p_reference: pd.DataFrame  # rows x keys, NaN where untested
    p_best: pd.DataFrame
    reference: str | None  # the reference row label, None when the section has none
    tested: bool  # at least one test ran
    untested: bool  # some comparison was skipped for lack of paired seeds
    settings: Significance = field(default=DEFAULT_SIGNIFICANCE)


def _number(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _direction(column: pd.Series) -> bool | None:
    return direction_of(column["higher_is_better"])


def _reference_row(table: _Table, settings: Significance) -> str | None:
    wanted = settings.explanation_reference if table.explained else settings.reference
    for row in table.stats.index:
        if row == wanted or str(row).replace(MASK_MARK, "") == wanted:
            return str(row)
    return None


def _ranks(shown: pd.Series, direction: bool | None) -> pd.Series:
    """1 for the best displayed value, 2 for the second-best distinct one, else 0."""
    ranks = pd.Series(0, index=shown.index, dtype="int64")
    if direction is None or shown.empty:
        return ranks
    distinct = sorted(set(shown), reverse=direction)
    for rank, value in enumerate(distinct[:2], start=1):
        ranks[shown == value] = rank
    return ranks


def _skipped(compared: pd.DataFrame, ok: pd.Series, against: str) -> bool:
    """Whether a comparison with ``against`` was due but lacked two paired seeds."""
    if against not in ok.index or not ok[against]:
        return False
    due = ok & (compared.index != against)
    return bool((due & compared["p"].isna()).any())


def _analyse(table: _Table, settings: Significance) -> _Analysis:
    reference = _reference_row(table, settings)
    index = table.stats.index
    cells = pd.DataFrame(_Cell("failed"), index=index, columns=table.columns.index, dtype=object)
    cells.loc[~table.row_failed] = _Cell("missing")
    p_reference = pd.DataFrame(np.nan, index=index, columns=table.columns.index)
    p_best = p_reference.copy()
    tested = untested = False
    for key, column in table.columns.iterrows():
        scale, decimals = float(column["scale"]), int(column["decimals"])
        direction = _direction(column)
        stats = table.stats[key]
        ok = stats["n_seeds"] > 0
        means = {row: _number(m * scale, decimals) for row, m in stats.loc[ok, "mean"].items()}
        shown = pd.Series({row: float(text) for row, text in means.items()}, dtype="float64")
        ranks = _ranks(shown, direction)
        values = table.seeds[key]
        marks = pd.Series("", index=index, dtype=object)
        if reference is not None:
            compared = sig.compare_rows(values, reference, settings.test)
            p_reference[key] = compared["p"]
            marks += sig.reference_marks(compared, direction, settings.alpha)
            tested |= bool(compared["p"].notna().any())
            untested |= _skipped(compared, ok, reference)
        if direction is not None and (ranks == 1).any():
            bold = stats.loc[ranks.index[ranks == 1], "mean"]
            best = str(bold.idxmax() if direction else bold.idxmin())
            compared = sig.compare_rows(values, best, settings.test)
            p_best[key] = compared["p"]
            tied = sig.tied_with_best(compared, settings.alpha) & ~index.isin(ranks.index[ranks == 1])
            marks[tied] += sig.TIED
            tested |= bool(compared["p"].notna().any())
            untested |= _skipped(compared, ok, best)
        for row, mean in means.items():
            ci = stats.loc[row, "ci"]
            # A zero-width interval (a count that no seed changes, e.g. parameters) is noise in a table.
            ci_text = "" if pd.isna(ci) or ci == 0 else _number(ci * scale, decimals)
            cells.loc[row, key] = _Cell("ok", mean, ci_text, int(ranks[row]), marks[row])
    return _Analysis(cells, p_reference, p_best, reference, tested, untested, settings)


_Prepared = list[tuple[_Table, _Analysis]]


def _prepare(records: Iterable[Record], significance: Significance) -> _Prepared:
    return [(table, _analyse(table, significance)) for table in _tables(records)]


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


# --------------------------------------------------------------------------- Markdown

_MD_MARKS = {sig.BETTER: "+", sig.WORSE: "\u2212", sig.TIED: "*"}


def _md_marks(marks: str) -> str:
    return f"<sup>{''.join(_MD_MARKS[m] for m in marks)}</sup>" if marks else ""


def _md_cell(cell: _Cell) -> str:
    if cell.state == "failed":
        return "failed"
    if cell.state == "missing":
        return "\u2013"
    mean = {1: f"**{cell.mean}**", 2: f"<u>{cell.mean}</u>"}.get(cell.rank, cell.mean)
    return mean + (f" ± {cell.ci}" if cell.ci else "") + _md_marks(cell.marks)


def _md_caption(parts: list[str | _Mark]) -> str:
    return "".join(_md_marks(p.symbol) if isinstance(p, _Mark) else p for p in parts)


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(
    records: Iterable[Record],
    title: str | None = None,
    significance: Significance = DEFAULT_SIGNIFICANCE,
    view: str | View = FULL,
) -> str:
    """GitHub-flavoured Markdown: per section a ``## section`` heading, its caption and its tables.

    ``view`` (:mod:`xbench.report.views`) picks the tables: ``full`` (the default here) one per
    category with every column, ``paper`` compact ones and per-exit tables.
    """
    return _markdown(_prepare(records, significance), title, view=get_view(view))


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_group(table: _Table, analysis: _Analysis, group: _Group) -> list[str]:
    first = "Method (explainer)" if table.explained else "Method"
    if group.per_exit:
        header = [first, "Exit", *(_metric_header(c) for c in _metric_columns(table, group))]
        body = [
            _md_row(
                [
                    _markdown_escape(row),
                    str(exit),
                    *(_md_cell(c) for c in _exit_cells(table, analysis, group, row, exit)),
                ]
            )
            for row, exit in _exit_rows(table, group)
        ]
        align = "|:---|---:|" + "---:|" * len(group.metrics)
    else:
        header = [first, *(_header(table.columns.loc[k]) for k in group.keys)]
        body = [
            _md_row([_markdown_escape(str(row)), *(_md_cell(c) for c in cells)])
            for row, cells in zip(table.stats.index, analysis.cells[group.keys].to_numpy().tolist(), strict=True)
        ]
        align = "|:---|" + "---:|" * len(group.keys)
    return [_md_row([_markdown_escape(h) for h in header]), align, *body]


def _markdown(prepared: _Prepared, title: str | None, claims: str = "", view: View = FULL) -> str:
    parts = [f"# {title}\n"] if title else []
    if claims:
        parts.append(claims)
    for table, analysis in prepared:
        section = [f"## {table.name}\n\n{_md_caption(_caption(table, analysis))}\n"]
        for group in _groups(table, view):
            note = _group_note(table, group)
            lines = _md_group(table, analysis, group)
            section.append(f"### {group.heading}\n\n" + (f"{note}\n\n" if note else "") + "\n".join(lines) + "\n")
        parts.append("\n".join(section))
    return "\n".join(parts) if parts else "No records.\n"


# --------------------------------------------------------------------------- CSV


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


# --------------------------------------------------------------------------- LaTeX

# Greek letters (e.g. "egt (λ=0)") have no text-mode glyph with pdflatex's default fonts: math mode.
_GREEK = "αβγδεζηθικλνξπρστυφχψωΓΔΘΛΞΠΣΥΦΨΩ"


def _greek(letter: str) -> str:
    *_, case, _, name = unicodedata.name(letter).split()  # "GREEK SMALL LETTER LAMDA"
    name = name.lower().replace("lamda", "lambda")
    return "$\\" + (name.capitalize() if case == "CAPITAL" else name) + "$"


_LATEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        "|": r"\textbar{}",
        "±": r"$\pm$",
        "↑": r"$\uparrow$",
        "↓": r"$\downarrow$",
        "µ": r"$\mu$",
        "μ": r"$\mu$",
        "\u00d7": r"$\times$",
        "\u2013": "--",
        "\u2014": "---",
        "\u2212": r"$-$",
        "†": r"\textdagger{}",
        "·": r"$\cdot$",
        "≥": r"$\geq$",
        **{letter: _greek(letter) for letter in _GREEK},
    }
)

LATEX_PREAMBLE = (
    "% xbench leaderboard (generated by xbench.report.tables).\n"
    "% Requires in the preamble: \\usepackage{booktabs} and \\usepackage{siunitx} (v2.2 or later).\n"
    "% Metric columns are siunitx S columns; best values are \\textbf, second best \\underline,\n"
    "% both around \\tablenum so that they stay aligned; superscripts mark significance (see captions).\n"
)
_LATEX_MARKS = {sig.BETTER: "+", sig.WORSE: "$-$", sig.TIED: "*"}
_SISETUP = r"\sisetup{separate-uncertainty = true, detect-weight = true}"


def latex_escape(text: str) -> str:
    """Escape ``text`` for LaTeX text mode; ±, ↑, ↓, µ and the multiplication sign become math symbols."""
    return text.translate(_LATEX_ESCAPES)


def _latex_marks(marks: str) -> str:
    # Zero width, so a mark does not push its number out of alignment.
    return rf"\rlap{{\textsuperscript{{{''.join(_LATEX_MARKS[m] for m in marks)}}}}}" if marks else ""


def _latex_cell(cell: _Cell) -> str:
    """An S-column cell: a number, or braced text that siunitx leaves alone."""
    if cell.state == "failed":
        return "{failed}"
    if cell.state == "missing":
        return "{--}"
    number = cell.mean + (rf" \pm {cell.ci}" if cell.ci else "")
    if cell.rank:
        style = r"\textbf" if cell.rank == 1 else r"\underline"
        return rf"{{{style}{{\tablenum{{{number}}}}}{_latex_marks(cell.marks)}}}"
    return number + (f"{{{_latex_marks(cell.marks)}}}" if cell.marks else "")


def _digits(text: str) -> tuple[int, int]:
    """(integer digits, decimal digits) of a formatted number, sign excluded."""
    whole, _, frac = text.lstrip("-").partition(".")
    return len(whole), len(frac)


def _table_format(cells: list[_Cell]) -> str | None:
    """``table-format`` that fits every value of a column (compact uncertainty digits), or None."""
    ok = [c for c in cells if c.state == "ok"]
    if not ok:
        return None
    sign = "-" if any(c.mean.startswith("-") for c in ok) else ""
    integer = max(_digits(c.mean)[0] for c in ok)
    decimals = max(_digits(c.mean)[1] for c in ok)
    # siunitx stores "89.87 \pm 0.12" as 89.87(12): the uncertainty's digits without leading zeros.
    uncertainty = max((len(c.ci.replace(".", "").lstrip("0")) or 1 for c in ok if c.ci), default=0)
    text = f"{sign}{integer}" + (f".{decimals}" if decimals else "")
    return text + (f"({uncertainty})" if uncertainty else "")


def _latex_label(base: str | None, section: str, category: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.:-]+", "-", f"{section}:{category}").strip("-")
    return f"{base}:{slug}" if base else f"tab:xbench:{slug}"


def _latex_caption(parts: list[str | _Mark]) -> str:
    return "".join(
        rf"\textsuperscript{{{_LATEX_MARKS[p.symbol]}}}" if isinstance(p, _Mark) else latex_escape(p) for p in parts
    )


@dataclass(frozen=True)
class _LatexColumn:
    """One column of a LaTeX table: its spec, header, cells and estimated width in pt.

    ``overhang`` is how far the zero-width significance marks of its cells reach past it.
    """

    spec: str
    header: str
    cells: list[str]
    width: float
    overhang: float = 0.0


def _mark_width(marks: str) -> float:
    # \textsuperscript at \small sets in 6 pt: two thirds of the 9-pt widths, plus a little air.
    return text_width("".join(_LATEX_MARKS[m].strip("$") for m in marks)) * 2 / 3 + 1.0 if marks else 0.0


def _header_lines(text: str, width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` where a word allows."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


#: Headers wrap into lines at least this wide (pt), so that short labels stay on one line.
_HEADER_LINE = 34.0


def _latex_header(text: str, width: float | None) -> tuple[str, float]:
    r"""A header in lines (``\shortstack``) about ``width`` wide (None: one line), braced, and its width."""
    widest_word = max(text_width(w) for w in text.split(" "))
    lines = [text] if width is None else _header_lines(text, max(width, widest_word, _HEADER_LINE))
    # A line starting with "[" would be read as the optional argument of the \\ before it.
    escaped = [("{}" if i and line.startswith("[") else "") + latex_escape(line) for i, line in enumerate(lines)]
    body = escaped[0] if len(escaped) == 1 else r"\shortstack{" + r"\\".join(escaped) + "}"
    return "{" + body + "}", max(text_width(line) for line in lines)


def _number_column(title: str, cells: list[_Cell], wrap: bool) -> _LatexColumn:
    """An S column (a c column when no cell has a number) fitted to its values and header (wrapped: in lines)."""
    fmt = _table_format(cells)
    ok = [c for c in cells if c.state == "ok"]
    numbers = 0.0
    if ok:
        numbers = number_width(
            max(_digits(c.mean)[0] for c in ok),
            max(_digits(c.mean)[1] for c in ok),
            negative=any(c.mean.startswith("-") for c in ok),
            uncertainty=max((len(c.ci.replace(".", "")) for c in ok if c.ci), default=0),
        )
    words = {"failed": "failed", "missing": "–"}
    texts = max((text_width(words[c.state]) for c in cells if c.state != "ok"), default=0.0)
    header, header_width = _latex_header(title, max(numbers, texts) if wrap else None)
    overhang = max((_mark_width(c.marks) for c in cells), default=0.0)
    spec = f"S[table-format={fmt}]" if fmt else "c"
    return _LatexColumn(spec, header, [_latex_cell(c) for c in cells], max(numbers, texts, header_width), overhang)


def _label_column(title: str, labels: list[str], spec: str = "l") -> _LatexColumn:
    width = max([text_width(title), *(text_width(label) for label in labels)])
    return _LatexColumn(spec, latex_escape(title), [latex_escape(label) for label in labels], width)


def _tabular_width(columns: list[_LatexColumn]) -> float:
    """Estimated width of a tabular of ``columns`` as :func:`_tabular_lines` sets it (``@{}`` at both edges)."""
    gaps = 2 * TABCOLSEP * (len(columns) - 1)
    inner = sum(max(c.overhang - 2 * TABCOLSEP, 0.0) for c in columns[:-1])
    return sum(c.width for c in columns) + gaps + inner + columns[-1].overhang


def _tabular_lines(columns: list[_LatexColumn], rules: Sequence[int] = ()) -> list[str]:
    """A booktabs tabular of ``columns``; ``rules`` are body rows after which an ``\addlinespace`` goes."""
    spec = "@{}"
    for i, column in enumerate(columns):
        spec += column.spec
        last = i == len(columns) - 1
        # A column whose marks reach past its cells gets the room before the next column.
        reach = column.overhang if last else max(column.overhang, 2 * TABCOLSEP)
        if last:
            spec += f"@{{\\hspace{{{reach:.1f}pt}}}}" if reach else "@{}"
        elif column.overhang > 2 * TABCOLSEP:
            spec += f"@{{\\hspace{{{reach:.1f}pt}}}}"
    header = " & ".join(c.header for c in columns) + r" \\"
    body = []
    for i, row in enumerate(zip(*(c.cells for c in columns), strict=True)):
        if i in rules:
            body.append(r"\addlinespace")
        body.append(" & ".join(row) + r" \\")
    return [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]


def _blocks(
    labels: list[_LatexColumn], columns: list[_LatexColumn], width: float, most: int
) -> list[list[_LatexColumn]]:
    """``columns`` in order, packed into blocks that fit ``width`` beside the label columns (at most ``most`` each)."""
    blocks: list[list[_LatexColumn]] = []
    for column in columns:
        if blocks and len(blocks[-1]) < most and _tabular_width([*labels, *blocks[-1], column]) <= width:
            blocks[-1].append(column)
        else:
            blocks.append([column])
    # As many blocks, but of even size where they fit (4 + 1 columns reads worse than 3 + 2).
    size = -(-len(columns) // len(blocks))
    even = [columns[i : i + size] for i in range(0, len(columns), size)]
    if len(even) == len(blocks) and all(_tabular_width([*labels, *block]) <= width for block in even):
        return even
    return blocks


def _latex_columns(
    table: _Table, analysis: _Analysis, group: _Group, wrap: bool
) -> tuple[list[_LatexColumn], list[_LatexColumn], list[int]]:
    """(label columns, metric columns, body rows before which a method's rows start) of one group.

    ``wrap`` sets the metric headers in lines about as wide as their numbers.
    """
    first = "Method (explainer)" if table.explained else "Method"
    if not group.per_exit:
        labels = [_label_column(first, [str(row) for row in table.stats.index])]
        metrics = [_number_column(_header(table.columns.loc[k]), list(analysis.cells[k]), wrap) for k in group.keys]
        return labels, metrics, []
    pairs = _exit_rows(table, group)
    # A method's name on its first exit only; a little space between methods.
    names = [row if i == 0 or pairs[i - 1][0] != row else "" for i, (row, _) in enumerate(pairs)]
    starts = [i for i, (row, _) in enumerate(pairs) if i and pairs[i - 1][0] != row]
    labels = [_label_column(first, names), _label_column("Exit", [str(e) for _, e in pairs], "c")]
    lines = [_exit_cells(table, analysis, group, row, exit) for row, exit in pairs]
    metrics = [
        _number_column(_metric_header(column), [line[j] for line in lines], wrap)
        for j, column in enumerate(_metric_columns(table, group))
    ]
    return labels, metrics, starts


#: Page layouts of :func:`to_latex`: (float, width in pt) of a table that fits one column, and of
#: one that does not (None: there is no wider float).
LAYOUTS = {"onecolumn": ("table", ONE_COLUMN_TEXTWIDTH), "twocolumn": ("table", TWO_COLUMN_COLUMNWIDTH)}
#: What a table is allowed to fill of its line width, for the estimate's errors.
_FILL = 0.97


def to_latex(
    records: Iterable[Record],
    caption: str | None = None,
    label: str | None = None,
    significance: Significance = DEFAULT_SIGNIFICANCE,
    max_columns: int = 6,
    view: str | View = FULL,
    layout: str = "onecolumn",
) -> str:
    """One booktabs ``table`` per table of the view; needs ``booktabs`` and ``siunitx``.

    Every table fits the line width of a standard 10-pt ``article`` (see
    :mod:`xbench.report.texwidth`): its columns are split into stacked ``tabular`` blocks that do.

    Args:
        records: the records to tabulate.
        caption: text put before the section and category in every ``\\caption``.
        label: prefix of every ``\\label``; a table's label is ``{label}:{section}:{category}``
            (default prefix ``tab:xbench``), reduced to ``[A-Za-z0-9.:-]``.
        significance: reference rows, test and level of the significance marks.
        max_columns: metric columns per ``tabular`` at most.
        view: which tables and columns (:mod:`xbench.report.views`; ``full`` by default here).
        layout: ``onecolumn`` (tables fit ``\\textwidth``) or ``twocolumn`` (a ``table`` fits
            ``\\columnwidth``; a table that needs more than one block there is a ``table*``
            fitting the two-column ``\\textwidth``).
    """
    return _latex(_prepare(records, significance), caption, label, max_columns, view=get_view(view), layout=layout)


def _latex_claims(found: list[Verdict], layout: str = "onecolumn") -> str:
    """The Claims table: ragged-right text columns that fit ``\\linewidth`` (plain ``p{}``, no extra package).

    In two columns it spans both (``table*``): six wrapped columns do not fit one.
    """
    rows = claim_rows(found)
    head = ["Claim", "Dataset", "Paper", "Ours (mean ± 95% CI)", "Seeds", "Verdict"]
    # Six columns and five gaps of 2 x 4 pt fit the 345-pt \textwidth of a 10-pt article, and
    # the widest words ("synthetic_" once broken after the underscore, "inconclusive") fit theirs.
    widths = ["0.24", "0.13", "0.13", "0.16", "0.07", "0.15"]
    spec = "".join(f"p{{{w}\\linewidth}}" for w in widths)

    def line(cells: list[str]) -> str:
        # \raggedright redefines \\ inside a cell, so rows end with \tabularnewline.
        return " & ".join(r"\raggedright " + c for c in cells) + r" \tabularnewline"

    body = [line([_breakable(latex_escape(r[h])) for h in head]) for r in rows]
    env = "table*" if layout == "twocolumn" else "table"
    return (
        "\n".join(
            [
                rf"\begin{{{env}}}[htbp]",
                r"\centering\small",
                r"\setlength{\tabcolsep}{4pt}",
                r"\caption{Paper claims tested on this run (mean $\pm$ 95\% CI over seeds; supported: the CI satisfies "
                r"the claim; not supported: the CI excludes it; inconclusive: it straddles it or too few seeds).}",
                r"\label{tab:claims}",
                rf"\begin{{tabular}}{{@{{}}{spec}@{{}}}}",
                r"\toprule",
                line([latex_escape(h) for h in head]),
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                rf"\end{{{env}}}",
            ]
        )
        + "\n"
    )


def _breakable(text: str) -> str:
    """Let TeX break long identifiers (``faithfulness_correlation``) after underscores and slashes."""
    return text.replace(r"\_", r"\_\allowbreak{}").replace("/", r"/\allowbreak{}")


def _fit(
    table: _Table, analysis: _Analysis, group: _Group, layout: str, max_columns: int
) -> tuple[str, list[list[_LatexColumn]], list[_LatexColumn], list[int]]:
    """(float environment, blocks of metric columns, label columns, method starts) that fit the layout.

    Headers stay on one line when the whole table fits in one block; otherwise they wrap and
    the columns are packed into as few blocks as fit. In two columns a table that needs more
    than one block at ``\\columnwidth`` becomes a ``table*`` packed to the page's ``\\textwidth``.
    """
    env, width = LAYOUTS[layout]
    labels, metrics, starts = _latex_columns(table, analysis, group, wrap=False)
    if len(metrics) <= max_columns and _tabular_width([*labels, *metrics]) <= width * _FILL:
        return env, [metrics], labels, starts
    labels, metrics, starts = _latex_columns(table, analysis, group, wrap=True)
    blocks = _blocks(labels, metrics, width * _FILL, max_columns)
    if layout == "twocolumn" and len(blocks) > 1:
        env = "table*"
        blocks = _blocks(labels, metrics, TWO_COLUMN_TEXTWIDTH * _FILL, max_columns)
    return env, blocks, labels, starts


def _latex(
    prepared: _Prepared,
    caption: str | None,
    label: str | None,
    max_columns: int = 6,
    claims: list[Verdict] | None = None,
    view: View = FULL,
    layout: str = "onecolumn",
) -> str:
    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown LaTeX layout {layout!r} (known: {', '.join(LAYOUTS)})")
    parts = [_latex_claims(claims, layout)] if claims else []
    for table, analysis in prepared:
        text = _latex_caption(_caption(table, analysis))
        for group in _groups(table, view):
            title = f"{table.name}: {group.heading.removesuffix(' (explanations)')}"
            title = f"{caption} ({title})" if caption else title
            note = _group_note(table, group)
            env, blocks, labels, starts = _fit(table, analysis, group, layout, max_columns)
            body: list[str] = []
            for i, block in enumerate(blocks):
                if i:
                    body.append(r"\par\medskip")
                body += _tabular_lines([*labels, *block], starts)
            parts.append(
                "\n".join(
                    [
                        rf"\begin{{{env}}}[htbp]",
                        r"\centering\small",
                        _SISETUP,
                        rf"\setlength{{\tabcolsep}}{{{TABCOLSEP:g}pt}}",
                        rf"\caption{{{latex_escape(title)}. {text}" + (f" {latex_escape(note)}" if note else "") + "}",
                        rf"\label{{{_latex_label(label, table.name, group.slug)}}}",
                        *body,
                        rf"\end{{{env}}}",
                    ]
                )
                + "\n"
            )
    return LATEX_PREAMBLE + "\n" + "\n".join(parts) if parts else "% xbench leaderboard: no records\n"


def write_leaderboard(
    records: Iterable[Record],
    out_dir: str | Path,
    significance: Significance = DEFAULT_SIGNIFICANCE,
    view: str | View = DEFAULT_VIEW,
) -> list[Path]:
    """Write the leaderboard files into ``out_dir`` atomically.

    ``leaderboard.md``, ``leaderboard.tex`` (one-column: every table fits ``\\textwidth``) and
    ``leaderboard_twocolumn.tex`` (``\\columnwidth``, ``table*`` where needed) show ``view``
    (``paper`` by default; :mod:`xbench.report.views`); ``leaderboard.csv`` and
    ``leaderboard_long.csv`` hold every column whatever the view.

    Returns:
        The paths: ``.md``, ``.csv``, ``_long.csv``, ``.tex``, ``_twocolumn.tex``.
    """
    chosen = get_view(view)
    stats = as_statistics(records)
    prepared = _prepare(stats, significance)  # aggregated and tested once for every file
    found = claim_verdicts(stats)  # the papers' claims come first: what a reader looks for
    out_dir = Path(out_dir)
    markdown = _markdown(prepared, "Leaderboard", claims_markdown(found), view=chosen)
    return [
        atomic_write_text(out_dir / "leaderboard.md", markdown),
        atomic_write_text(out_dir / "leaderboard.csv", _csv([table for table, _ in prepared])),
        atomic_write_text(out_dir / "leaderboard_long.csv", _long_csv(prepared)),
        atomic_write_text(out_dir / "leaderboard.tex", _latex(prepared, None, None, claims=found, view=chosen)),
        atomic_write_text(
            out_dir / "leaderboard_twocolumn.tex",
            _latex(prepared, None, None, claims=found, view=chosen, layout="twocolumn"),
        ),
    ]
