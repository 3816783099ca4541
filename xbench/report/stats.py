"""The one aggregation layer of reporting: records in, one tidy frame of seed statistics out.

Tables, plots, the regression check and the HTML report all render from a :class:`Statistics`
built here, so the rules below hold for every one of them:

* Rows. A *row* is a method (``method``), or for explanation metrics (records with an
  ``explainer``) a method with an explainer, labelled ``method (explainer)``. Rows trained
  with ground-truth masks (``config["uses_masks"]``) carry :data:`MASK_MARK` after the
  method (unless ``mark_masks=False``, as for the baseline check, whose rows keep their names).
* Columns. A column *key* is ``metric``, or ``metric@exit{k}`` for a value measured at early
  exit ``k``.
* Duplicates. One measurement is one (dataset, row, seed, key); when it appears more than
  once the last record wins, failed or not, so a re-run (or a later run folder) replaces a
  failure.
* Settings. Seeds of one (dataset, method) are averaged only when their records share the
  ``setup`` hash; otherwise :func:`statistics` raises :class:`~xbench.errors.DataError`.
* Statistics. Per *cell*, one (dataset, row, key), over the successful seeds: the
  aggregation the metric declares (:class:`~xbench.metadata.Aggregation`, carried in
  ``display["aggregation"]``; the mean when absent) and, for the mean, from two seeds on,
  the half-width of the 95% confidence interval of the mean with Student's t,
  ``t.ppf(0.975, n - 1) * std(ddof=1) / sqrt(n)`` (:func:`ci_half_width`); NaN below two
  seeds, and for a median. ``n_failed`` counts the cell's failed measurements.

:attr:`Statistics.cells` has one row per cell, in order of the cell's first record, with
the columns of :data:`CELL_COLUMNS`: the cell's identity, the display metadata of its first
record (``label``, ``unit``, ``scale``, ``decimals``, ``aggregation``), ``higher_is_better``,
``category``, ``uses_masks`` and ``setup``, the statistics in raw units (``mean``, the declared
aggregation whatever it is, ``ci``, ``n_seeds``, ``n_failed``; ``mean`` and ``ci`` NaN without a
successful seed) and ``first``, the position of the cell's first record in
:attr:`Statistics.records`. :attr:`Statistics.values` holds
the measurements behind them (the last record of each, one row per record as
:func:`~xbench.report.records.records_to_frame` has it, plus the row and key columns),
for what needs single seeds: paired significance tests, curves and matrices in ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from xbench.errors import DataError
from xbench.metadata import Aggregation, Category
from xbench.report.records import Record, records_to_frame

#: Appended to the method of rows whose training used ground-truth masks.
MASK_MARK = " †"
#: Order of metric categories; categories not listed follow in order of appearance.
CATEGORY_ORDER = tuple(category.value for category in Category)
#: Statistics of a cell, raw units.
STATS = ("mean", "ci", "n_seeds", "n_failed")
#: One cell: a (dataset, row, column key); ``explained`` separates a method's explanation rows.
CELL = ["dataset", "explained", "row", "key"]
#: One measurement: a cell's seed; later duplicates replace earlier ones.
MEASUREMENT = [*CELL, "seed"]
#: What each cell takes from its first record, as (cell column, records_to_frame column).
_FIRST = (
    ("method", "method"),
    ("explainer", "explainer"),
    ("metric", "metric"),
    ("exit", "exit"),
    ("category", "category"),
    ("label", "display_label"),
    ("unit", "display_unit"),
    ("scale", "display_scale"),
    ("decimals", "display_decimals"),
    ("aggregation", "display_aggregation"),
    ("higher_is_better", "higher_is_better"),
    ("uses_masks", "uses_masks"),
    ("setup", "setup"),
    ("first", "first"),
)
CELL_COLUMNS = [*CELL, *(name for name, _ in _FIRST), *STATS]


# ----------------------------------------------------------------------------- formulas


def ci_half_width(std: Any, n: Any) -> np.ndarray:
    """Half-width of the 95% CI of a mean from ``std`` (ddof=1) and ``n`` values (Student's t); NaN below 2."""
    std, n = np.asarray(std, dtype="float64"), np.asarray(n)
    t = scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1))
    return np.asarray(np.where(n >= 2, t * std / np.sqrt(n), np.nan))


def _summarize(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: :data:`STATS` of ``value`` (failed records are NaN, so only successes count).

    ``mean`` is the group's ``display_aggregation`` (the mean without that column), an
    :class:`~xbench.metadata.Aggregation` whose value is the name of pandas' reduction;
    ``ci`` is the CI of a mean, so NaN for any other aggregation.
    """
    grouped = frame.assign(failed=frame["status"].eq("failed")).groupby(by, sort=False)
    agg = grouped.agg(
        mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"), n_failed=("failed", "sum")
    )
    agg["ci"] = ci_half_width(agg["std"].to_numpy(), agg["n_seeds"].to_numpy())
    if "display_aggregation" in frame:
        declared = grouped["display_aggregation"].first()
        for aggregation in Aggregation:
            rows = declared.eq(aggregation.value)
            if aggregation is not Aggregation.MEAN and rows.any():
                agg.loc[rows, "mean"] = grouped["value"].agg(aggregation.value)[rows]
                agg.loc[rows, "ci"] = math.nan
    return agg[list(STATS)]


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width of ``values``, as a cell has them; the half-width is NaN below two values."""
    x = np.asarray(values, dtype="float64")
    if x.size == 0:
        return math.nan, math.nan
    stats = _summarize(pd.DataFrame({"value": x, "status": "ok", "group": 0}), ["group"]).iloc[0]
    return float(stats["mean"]), float(stats["ci"])


def category_order(categories: Iterable[str]) -> list[str]:
    """The distinct ``categories``: those of :data:`CATEGORY_ORDER` in its order, then the others as they come."""
    seen = [str(c) for c in dict.fromkeys(categories)]
    return [c for c in CATEGORY_ORDER if c in seen] + [c for c in seen if c not in CATEGORY_ORDER]


def direction_of(value: Any) -> bool | None:
    """``higher_is_better`` as a Python bool or None (pandas may hand back numpy bools or NaN)."""
    return None if value is None or pd.isna(value) else bool(value)


def arrow(higher_is_better: Any) -> str:
    """`` ↑`` (higher is better), `` ↓`` (lower is better) or nothing."""
    return {True: " ↑", False: " ↓", None: ""}[direction_of(higher_is_better)]


def column_title(label: str, unit: str, exit: Any = None, higher_is_better: Any = None) -> str:
    """``label`` (+ `` @exit k``), the unit in brackets, then the direction's arrow: ``Top-1 @exit 0 [%] ↑``."""
    text = str(label)
    if exit is not None and not pd.isna(exit):
        text += f" @exit {exit}"
    if unit:
        text += f" [{unit}]"
    return text + arrow(higher_is_better)


# ----------------------------------------------------------------------------- the frame


def check_setups(frame: pd.DataFrame) -> None:
    """Refuse to average seeds trained or measured with different settings into one row."""
    if "setup" not in frame:
        return
    setups = frame.dropna(subset=["setup"]).groupby(["dataset", "method"], sort=False)["setup"].unique()
    for (dataset, method), values in setups.items():
        if len(values) > 1:
            raise DataError(
                f"records of method {method!r} on {dataset!r} come from different settings "
                f"(setups {', '.join(sorted(values))}); report those runs separately or give the rows distinct labels"
            )


@dataclass(frozen=True, eq=False)
class Statistics:
    """Records aggregated over seeds; iterating over it yields the records.

    Every report function that takes records also takes a ``Statistics``, which spares it the
    aggregation (:func:`as_statistics`).

    Attributes:
        records: the records, in order.
        cells: one row per (dataset, row, key); see the module docstring.
        values: the last record of every measurement, failed or not, in order.
        mark_masks: whether the methods of mask-trained rows carry :data:`MASK_MARK`.
    """

    records: tuple[Record, ...]
    cells: pd.DataFrame
    values: pd.DataFrame
    mark_masks: bool = True

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def ok(self) -> pd.DataFrame:
        """The successful measurements."""
        return self.values[self.values["status"].eq("ok")]

    @property
    def shown(self) -> pd.DataFrame:
        """The cells with at least one successful seed."""
        return self.cells[self.cells["n_seeds"] > 0]


def statistics(records: Iterable[Record], *, mark_masks: bool = True) -> Statistics:
    """Aggregate ``records`` over seeds (see the module docstring).

    Args:
        records: the records, of any number of datasets and runs.
        mark_masks: append :data:`MASK_MARK` to the methods of rows trained with ground-truth masks.

    Raises:
        DataError: records of one (dataset, method) come from different settings.
    """
    records = tuple(records)
    frame = records_to_frame(records)
    check_setups(frame)
    frame["first"] = np.arange(len(frame), dtype="int64")
    frame["key"] = frame["metric"] + ("@exit" + frame["exit"].astype("string")).fillna("")
    masks = frame["config"].map(lambda c: bool(isinstance(c, dict) and c.get("uses_masks")))
    frame["uses_masks"] = masks.astype(bool)
    if mark_masks:
        frame.loc[frame["uses_masks"], "method"] = frame.loc[frame["uses_masks"], "method"] + MASK_MARK
    frame["explained"] = frame["explainer"].notna()
    # Explanation metrics get their own rows, one per (method, explainer), so a method's
    # native maps, Grad-CAM and the random chance level read side by side.
    frame["row"] = frame["method"].where(~frame["explained"], frame["method"] + " (" + frame["explainer"] + ")")
    values = frame.drop_duplicates(MEASUREMENT, keep="last")
    firsts = frame.drop_duplicates(CELL)
    cells = firsts[[*CELL, *(column for _, column in _FIRST)]].set_axis([*CELL, *(name for name, _ in _FIRST)], axis=1)
    cells = cells.join(_summarize(values, CELL), on=CELL).reset_index(drop=True)
    return Statistics(records, cells[CELL_COLUMNS], values, mark_masks)


def as_statistics(records: Iterable[Record], *, mark_masks: bool = True) -> Statistics:
    """``records`` if it is a :class:`Statistics` built with the same ``mark_masks``, else their statistics."""
    if isinstance(records, Statistics) and records.mark_masks == mark_masks:
        return records
    return statistics(records, mark_masks=mark_masks)
