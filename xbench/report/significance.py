"""Paired significance tests between leaderboard rows, across seeds.

Every row of a leaderboard (a method, or a method with an explainer) is trained and
evaluated with the same seeds, so two rows are compared *paired by seed*: the value of
seed ``s`` in one row against the value of seed ``s`` in the other, over the seeds
both rows have. Two two-sided tests are offered:

* ``"ttest"`` (default): the paired t-test, :func:`scipy.stats.ttest_rel`;
* ``"wilcoxon"``: the Wilcoxon signed-rank test, :func:`scipy.stats.wilcoxon`, which
  does not assume normal differences but cannot reach p < 0.05 with fewer than six
  pairs (its smallest two-sided p-value is ``2 / 2**n``).

Conventions, the same for both tests:

* Fewer than two paired seeds: no test is run; the p-value is NaN.
* All paired differences zero (e.g. a parameter count two rows share): p = 1, the
  rows are identical on these seeds. Without this rule the t-test returns NaN.
* Constant non-zero differences (a deterministic metric that differs): the t-test
  gives p = 0, the Wilcoxon test its exact p-value.

Two questions are asked of each leaderboard column (one metric):

* every row against a *reference* row (the baseline), marked ``+`` when the row is
  significantly better and ``-`` when significantly worse, by the metric's direction;
* every row against the *best* row, marked ``*`` when it is not significantly
  different from it (p >= alpha): the set of rows one cannot tell apart from the best.

All functions are pure: they take seed values and return p-values and marks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import pandas as pd
from scipy import stats

Test = Literal["ttest", "wilcoxon"]
TESTS: dict[str, str] = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
DEFAULT_ALPHA = 0.05
MIN_PAIRS = 2
BETTER, WORSE, TIED = "+", "-", "*"


@dataclass(frozen=True)
class PairedResult:
    """Outcome of one paired test of row ``a`` against row ``b``.

    Attributes:
        p: two-sided p-value, NaN when no test was run (fewer than two pairs).
        n: number of seeds both rows have a value for.
        diff: mean of ``a - b`` over those seeds (NaN without pairs).
    """

    p: float
    n: int
    diff: float

    @property
    def tested(self) -> bool:
        return not np.isnan(self.p)


def check_test(test: str) -> Test:
    """Return ``test`` if it names a supported test, else raise ValueError."""
    if test not in TESTS:
        raise ValueError(f"unknown significance test {test!r}; choose one of {', '.join(TESTS)}")
    return cast(Test, test)


def _series(values: Mapping[int, float] | pd.Series) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values, dtype="float64")


def _degenerate(d: np.ndarray, test: str) -> float | None:
    """The p-value the conventions fix for differences ``d`` (at least two), or None to run the test."""
    if np.all(d == 0):
        return 1.0
    if test == "ttest" and np.all(d == d[0]):
        return 0.0
    return None


def _pvalues(x: np.ndarray, y: np.ndarray, test: str) -> np.ndarray:
    """Two-sided p-values of paired tests along the last axis of equally shaped 2-D arrays."""
    with warnings.catch_warnings():
        # Nearly constant differences make scipy warn about precision; the p-value stays usable.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = stats.ttest_rel(x, y, axis=-1) if test == "ttest" else stats.wilcoxon(x, y, axis=-1)
    return np.atleast_1d(np.asarray(result.pvalue, dtype="float64"))


def paired_test(
    a: Mapping[int, float] | pd.Series, b: Mapping[int, float] | pd.Series, test: str = "ttest"
) -> PairedResult:
    """Two-sided paired test of ``a`` against ``b``, both indexed by seed.

    Seeds missing (or NaN) in either are left out; see the module docstring for
    the conventions on too few pairs and zero differences.
    """
    check_test(test)
    pairs = pd.concat([_series(a), _series(b)], axis=1, join="inner").astype("float64").dropna()
    x, y = pairs.iloc[:, 0].to_numpy(), pairs.iloc[:, 1].to_numpy()
    n = len(x)
    diff = float(np.mean(x - y)) if n else float("nan")
    if n < MIN_PAIRS:
        return PairedResult(float("nan"), n, diff)
    fixed = _degenerate(x - y, test)
    p = fixed if fixed is not None else float(_pvalues(x[None], y[None], test)[0])
    return PairedResult(p, n, diff)


def compare_rows(values: pd.DataFrame, against: str, test: str = "ttest") -> pd.DataFrame:
    """Paired test of every row of ``values`` against the row ``against``.

    The same as :func:`paired_test` for each row, with the rows that share their
    paired seeds tested in one vectorised call.

    Args:
        values: one row per leaderboard row, one column per seed, NaN where a row
            has no value for a seed.
        against: label of the row to compare with; its own entry is untested.
        test: ``"ttest"`` or ``"wilcoxon"``.

    Returns:
        Indexed like ``values`` with columns ``p`` (NaN when untested), ``n``
        (paired seeds) and ``diff`` (mean of row minus ``against``).
    """
    check_test(test)
    size = len(values.index)
    p, n, diff = np.full(size, np.nan), np.zeros(size, dtype="int64"), np.full(size, np.nan)
    if against in values.index:
        matrix = values.to_numpy(dtype="float64", na_value=np.nan)
        reference = values.loc[against].to_numpy(dtype="float64", na_value=np.nan)
        pending: dict[bytes, list[int]] = {}  # rows to test, grouped by their paired seeds
        for i, label in enumerate(values.index):
            if label == against:
                continue
            mask = ~np.isnan(matrix[i]) & ~np.isnan(reference)
            d = matrix[i, mask] - reference[mask]
            n[i] = d.size
            if d.size:
                diff[i] = d.mean()
            if d.size >= MIN_PAIRS:
                fixed = _degenerate(d, test)
                if fixed is None:
                    pending.setdefault(mask.tobytes(), []).append(i)
                else:
                    p[i] = fixed
        for rows in pending.values():
            mask = ~np.isnan(matrix[rows[0]]) & ~np.isnan(reference)
            x = matrix[rows][:, mask]
            p[rows] = _pvalues(x, np.broadcast_to(reference[mask], x.shape), test)
    return pd.DataFrame({"p": p, "n": n, "diff": diff}, index=values.index)


def reference_marks(compared: pd.DataFrame, higher_is_better: bool | None, alpha: float = DEFAULT_ALPHA) -> pd.Series:
    """``+`` (significantly better than the reference), ``-`` (significantly worse) or ``""``.

    ``compared`` is the result of :func:`compare_rows` against the reference row.
    Columns without a direction get no marks: better and worse are undefined.
    """
    marks = pd.Series("", index=compared.index, dtype=object)
    if higher_is_better is None:
        return marks
    significant = compared["p"].lt(alpha)  # NaN (untested) compares False
    better = compared["diff"].gt(0) if higher_is_better else compared["diff"].lt(0)
    worse = compared["diff"].lt(0) if higher_is_better else compared["diff"].gt(0)
    marks[significant & better] = BETTER
    marks[significant & worse] = WORSE
    return marks


def tied_with_best(compared: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> pd.Series:
    """True for rows tested against the best row and not significantly different (p >= alpha)."""
    return compared["p"].ge(alpha)


def describe(test: str, alpha: float = DEFAULT_ALPHA) -> str:
    """Name of the test and its level, for a caption: ``"paired t-test across seeds, two-sided, α = 0.05"``."""
    return f"{TESTS[check_test(test)]} across seeds, two-sided, α = {alpha:g}"
