"""The cells of a leaderboard section: formatted means and CIs, ranks (bold, underlined) and significance marks.

Cells. Each cell aggregates the seeds of one (row, column): the mean and, from two
seeds on, ± the half-width of the 95% confidence interval of the mean with Student's t,
``t.ppf(0.975, n - 1) * std(ddof=1) / sqrt(n)``, as :mod:`xbench.report.stats` computes
them for the tables, the plots and the regression check alike (every function of
:mod:`xbench.report.tables` that takes records also takes their
:class:`~xbench.report.stats.Statistics`). Values are shown as ``value * display.scale`` with
``display.decimals`` decimals. A zero-width interval (a count no seed changes) is not shown.
The number of seeds is stated in the caption.

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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xbench.report import significance as sig
from xbench.report.records import Record
from xbench.report.stats import MASK_MARK, direction_of
from xbench.report.tables.layout import _Table, _tables


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
