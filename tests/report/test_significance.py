"""Paired significance tests: p-values against scipy, pairing by seed, degenerate cases and marks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xbench.report.significance import (
    BETTER,
    TIED,
    WORSE,
    check_test,
    compare_rows,
    describe,
    paired_test,
    reference_marks,
    tied_with_best,
)


def test_t_test_matches_scipy_and_a_hand_computed_value() -> None:
    a = {0: 0.80, 1: 0.83, 2: 0.84}
    b = {0: 0.70, 1: 0.72, 2: 0.78}
    result = paired_test(a, b)
    expected = stats.ttest_rel([0.80, 0.83, 0.84], [0.70, 0.72, 0.78]).pvalue
    assert result.p == pytest.approx(expected)
    # By hand: differences 0.10, 0.11, 0.06; mean 0.09, sd 0.0264575, t = 0.09 / (sd / sqrt 3) = 5.8918.
    assert result.p == pytest.approx(2 * stats.t.sf(5.8918, 2), rel=1e-3)
    assert result.n == 3 and result.diff == pytest.approx(0.09) and result.tested


def test_wilcoxon_matches_scipy() -> None:
    a = [0.81, 0.83, 0.84, 0.80, 0.86, 0.82]
    b = [0.70, 0.72, 0.78, 0.79, 0.75, 0.83]
    result = paired_test(dict(enumerate(a)), dict(enumerate(b)), test="wilcoxon")
    assert result.p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert result.p != pytest.approx(stats.ttest_rel(a, b).pvalue)  # a different test indeed


def test_pairs_by_seed_not_by_position() -> None:
    """Seeds missing on one side are dropped; the rest are matched by seed number."""
    a = pd.Series({3: 0.9, 1: 0.7, 2: 0.8, 7: 0.1})
    b = pd.Series({1: 0.6, 2: 0.75, 3: 0.81, 5: 0.5})
    result = paired_test(a, b)
    assert result.n == 3
    assert result.p == pytest.approx(stats.ttest_rel([0.7, 0.8, 0.9], [0.6, 0.75, 0.81]).pvalue)
    assert result.diff == pytest.approx(np.mean([0.1, 0.05, 0.09]))


def test_nan_values_are_not_paired() -> None:
    result = paired_test({0: 1.0, 1: float("nan"), 2: 3.0}, {0: 0.5, 1: 2.0, 2: 2.0})
    assert result.n == 2


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_fewer_than_two_pairs_is_not_tested(test: str) -> None:
    result = paired_test({0: 0.9, 1: 0.8}, {1: 0.7, 2: 0.6}, test)
    assert result.n == 1 and math.isnan(result.p) and not result.tested
    empty = paired_test({}, {0: 1.0}, test)
    assert empty.n == 0 and math.isnan(empty.p) and math.isnan(empty.diff)


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_identical_rows_have_p_one(test: str) -> None:
    assert paired_test({0: 5.0, 1: 5.0, 2: 5.0}, {0: 5.0, 1: 5.0, 2: 5.0}, test).p == 1.0


def test_constant_non_zero_differences_are_significant_for_the_t_test() -> None:
    """A deterministic metric (e.g. parameter count) that differs between rows: no variance, p = 0."""
    assert paired_test({0: 3.0, 1: 3.0, 2: 3.0}, {0: 2.0, 1: 2.0, 2: 2.0}).p == 0.0
    wilcoxon = paired_test({0: 3.0, 1: 3.0, 2: 3.0}, {0: 2.0, 1: 2.0, 2: 2.0}, "wilcoxon")
    assert wilcoxon.p == pytest.approx(stats.wilcoxon([3.0] * 3, [2.0] * 3).pvalue)
    assert wilcoxon.p == pytest.approx(2 / 2**3)  # the smallest two-sided exact p-value with 3 pairs


def test_unknown_test_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown significance test"):
        paired_test({0: 1.0}, {0: 1.0}, "anova")
    with pytest.raises(ValueError):
        check_test("t")


def _values() -> pd.DataFrame:
    return pd.DataFrame(
        {
            0: [0.70, 0.80, 0.79, 0.60, np.nan],
            1: [0.72, 0.83, 0.80, 0.61, 0.9],
            2: [0.74, 0.84, 0.86, 0.65, np.nan],
        },
        index=["baseline", "a", "b", "c", "one_seed"],
    )


def test_compare_rows_against_a_reference_row() -> None:
    values = _values()
    out = compare_rows(values, "baseline")
    assert math.isnan(out.loc["baseline", "p"]) and out.loc["baseline", "n"] == 0
    for row in ("a", "b", "c"):
        expected = stats.ttest_rel(values.loc[row], values.loc["baseline"]).pvalue
        assert out.loc[row, "p"] == pytest.approx(expected), row
        assert out.loc[row, "n"] == 3
    assert math.isnan(out.loc["one_seed", "p"]) and out.loc["one_seed", "n"] == 1
    assert out.loc["c", "diff"] == pytest.approx(np.mean([-0.10, -0.11, -0.09]))


def test_compare_rows_without_the_reference_row_tests_nothing() -> None:
    out = compare_rows(_values(), "missing")
    assert out["p"].isna().all() and (out["n"] == 0).all()


def test_reference_marks_follow_the_direction() -> None:
    compared = pd.DataFrame(
        {"p": [np.nan, 0.01, 0.01, 0.2, np.nan], "n": [0, 3, 3, 3, 1], "diff": [np.nan, 0.1, -0.1, 0.1, 0.5]},
        index=["ref", "up", "down", "ns", "few"],
    )
    higher = reference_marks(compared, higher_is_better=True)
    assert higher.to_dict() == {"ref": "", "up": BETTER, "down": WORSE, "ns": "", "few": ""}
    lower = reference_marks(compared, higher_is_better=False)
    assert lower.to_dict() == {"ref": "", "up": WORSE, "down": BETTER, "ns": "", "few": ""}
    assert (reference_marks(compared, higher_is_better=None) == "").all()
    # The level is a parameter: p = 0.01 is not significant at 0.005.
    assert (reference_marks(compared, True, alpha=0.005) == "").all()


def test_tied_with_best_needs_a_test_and_p_at_least_alpha() -> None:
    compared = pd.DataFrame(
        {"p": [np.nan, 0.05, 0.049, 0.9, np.nan], "n": [0, 3, 3, 3, 1], "diff": 0.0},
        index=["best", "at_alpha", "below", "far_above", "few"],
    )
    assert tied_with_best(compared).to_dict() == {
        "best": False,
        "at_alpha": True,
        "below": False,
        "far_above": True,
        "few": False,
    }
    assert TIED == "*"


def test_describe_names_test_and_level() -> None:
    assert describe("ttest") == "paired t-test across seeds, two-sided, α = 0.05"
    assert describe("wilcoxon", 0.01) == "Wilcoxon signed-rank test across seeds, two-sided, α = 0.01"
