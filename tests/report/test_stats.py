"""The aggregation layer: cells of hand-made records, and the same numbers in every report."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers import make_record as rec
from helpers import make_seeds as seeds

from xbench.errors import DataError
from xbench.report.check import aggregate
from xbench.report.stats import (
    CELL_COLUMNS,
    MASK_MARK,
    Statistics,
    as_statistics,
    category_order,
    ci_half_width,
    column_title,
    mean_ci,
    statistics,
)
from xbench.report.tables import leaderboard_frame

#: Student's t quantile t_{0.975, 2} (two seeds of freedom: three seeds), from a t table.
T_975_2 = 4.302652729911275


def one_cell(stats: Statistics, **where: object) -> pd.Series:
    """The one cell whose columns have the values ``where``."""
    cells = stats.cells
    for column, value in where.items():
        cells = cells[cells[column] == value]
    assert len(cells) == 1, cells
    return cells.iloc[0]


def test_three_seeds_give_the_mean_and_the_t_interval() -> None:
    # Values 1, 2, 3: mean 2, sample std sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1, CI t * 1 / sqrt(3).
    stats = statistics(seeds("egt", "loss", [1.0, 2.0, 3.0]))
    cell = one_cell(stats)
    assert list(stats.cells.columns) == CELL_COLUMNS
    assert cell["mean"] == pytest.approx(2.0)
    assert cell["ci"] == pytest.approx(T_975_2 / math.sqrt(3))  # 2.4841...
    assert cell["ci"] == pytest.approx(2.484138, abs=1e-6)
    assert (cell["n_seeds"], cell["n_failed"]) == (3, 0)
    assert (cell["row"], cell["key"], cell["explained"]) == ("egt", "loss", False)
    assert mean_ci([1.0, 2.0, 3.0]) == (cell["mean"], cell["ci"])
    assert ci_half_width([1.0], [3])[0] == pytest.approx(T_975_2 / math.sqrt(3))


def test_one_seed_has_no_interval_and_failures_are_counted_not_averaged() -> None:
    stats = statistics([*seeds("a", "top1", [0.5, None]), *seeds("b", "top1", [None])])
    a, b = one_cell(stats, row="a"), one_cell(stats, row="b")
    assert a["mean"] == 0.5 and pd.isna(a["ci"]) and (a["n_seeds"], a["n_failed"]) == (1, 1)
    assert pd.isna(b["mean"]) and pd.isna(b["ci"]) and (b["n_seeds"], b["n_failed"]) == (0, 1)
    assert list(stats.shown["row"]) == ["a"]
    assert math.isnan(mean_ci([0.5])[1]) and all(math.isnan(x) for x in mean_ci([]))


def test_the_last_record_of_a_measurement_wins() -> None:
    records = [rec("a", 0, "top1", None), rec("a", 1, "top1", 0.2), rec("a", 0, "top1", 0.6)]
    cell = one_cell(statistics(records))
    assert cell["mean"] == pytest.approx(0.4) and (cell["n_seeds"], cell["n_failed"]) == (2, 0)
    assert cell["first"] == 0  # the metadata of the cell's first record


def test_rows_keys_and_the_mask_dagger() -> None:
    masks = {"config": {"uses_masks": True}}
    records = [
        rec("lap", 0, "top1", 0.9, **masks),
        rec("lap", 0, "pointing_game", 0.7, explainer="native", **masks),
        rec("lap", 0, "top1", 0.8, exit=1, **masks),
    ]
    cells = statistics(records).cells
    assert list(cells["row"]) == ["lap" + MASK_MARK, f"lap{MASK_MARK} (native)", "lap" + MASK_MARK]
    assert list(cells["key"]) == ["top1", "pointing_game", "top1@exit1"]
    assert list(cells["explained"]) == [False, True, False] and cells["uses_masks"].all()
    assert list(statistics(records, mark_masks=False).cells["method"]) == ["lap"] * 3


def test_seeds_of_different_settings_are_refused() -> None:
    records = [rec("a", 0, "top1", 0.5, setup="s1"), rec("a", 1, "top1", 0.6, setup="s2")]
    with pytest.raises(DataError, match="records of method 'a' on 'fmnist' come from different settings"):
        statistics(records)


def test_every_report_reads_the_same_cell() -> None:
    records = [*seeds("egt", "top1", [0.80, 0.82, 0.87]), *seeds("egt", "top1", [0.5, 0.6], exit=0)]
    stats = statistics(records)
    assert list(stats) == records and as_statistics(stats) is stats
    assert as_statistics(stats, mark_masks=False) is not stats
    cell = one_cell(stats, key="top1")
    frame = leaderboard_frame(stats)["fmnist"]
    assert frame.loc["egt", ("top1", "mean")] == cell["mean"] and frame.loc["egt", ("top1", "ci")] == cell["ci"]
    row = aggregate(records)[("fmnist", "egt", None, "top1", None)]
    assert (row.mean, row.ci, row.n_seeds) == (cell["mean"], cell["ci"], 3)


def test_category_order_and_column_titles() -> None:
    assert category_order(["sanity", "other", "accuracy", "other"]) == ["accuracy", "sanity", "other"]
    assert column_title("Top-1", "%", 0, True) == "Top-1 @exit 0 [%] ↑"
    assert column_title("Params", "M", None, False) == "Params [M] ↓"
    assert column_title("Time", "", higher_is_better=None) == "Time"


def test_a_metric_declaring_the_median_is_aggregated_by_the_median() -> None:
    # Seeds 1, 2 and 10: the median is the middle value, 2 (the mean would be 13 / 3 = 4.33).
    median = {"label": "Latency", "unit": "ms", "scale": 1.0, "decimals": 2, "aggregation": "median"}
    records = [*seeds("egt", "latency", [10.0, 1.0, 2.0], display=median), *seeds("egt", "top1", [0.7, 0.8, 0.9])]
    stats = statistics(records)
    cell = one_cell(stats, key="latency")
    assert cell["aggregation"] == "median" and cell["mean"] == 2.0 and (cell["n_seeds"], cell["n_failed"]) == (3, 0)
    assert pd.isna(cell["ci"])  # the t interval is of a mean
    top1 = one_cell(stats, key="top1")  # the default is the mean, with its interval
    assert top1["aggregation"] == "mean" and top1["mean"] == pytest.approx(0.8)
    assert top1["ci"] == pytest.approx(T_975_2 * 0.1 / math.sqrt(3))
    row = aggregate(records)[("fmnist", "egt", None, "latency", None)]
    assert (row.mean, row.ci) == (2.0, None)  # the baseline check reads the same cell
    assert leaderboard_frame(stats)["fmnist"].loc["egt", ("latency", "mean")] == 2.0
    # An even number of seeds: the median is the mean of the middle two, (1 + 2) / 2.
    assert one_cell(statistics(seeds("a", "latency", [1.0, 5.0, 2.0, 0.5], display=median)))["mean"] == 1.5
