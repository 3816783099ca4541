"""Regression check of a run against a committed baseline file.

A *baseline* is a JSON file (``results/baselines/NAME.json``) that holds, for
every row of a run, the seed-aggregated value of one (dataset, method,
explainer, metric, exit): ``mean``, ``ci`` (95% Student-t half-width, ``null``
with one seed) and ``n_seeds``, aggregated exactly as the leaderboards do
(:func:`xbench.report.stats.statistics`). :func:`make_baseline` builds
one from records, :func:`compare` checks records against one and
:func:`to_markdown` renders the outcome.

The modules:

* :mod:`~xbench.report.check.baseline`: the baseline file, made, validated, read and written;
* :mod:`~xbench.report.check.tolerances`: how far a row may move from its baseline value;
* :mod:`~xbench.report.check.rows`: a run's records aggregated over seeds, one row per
  (dataset, method, explainer, metric, exit);
* :mod:`~xbench.report.check.comparison`: each row's status against the baseline;
* :mod:`~xbench.report.check.markdown`: the outcome as Markdown.
"""

from xbench.report.check.baseline import (
    FORMAT,
    VERSION,
    dump_baseline,
    load_baseline,
    make_baseline,
    validate_baseline,
    write_baseline,
)
from xbench.report.check.comparison import FAILING, STATUSES, CheckResult, Comparison, compare
from xbench.report.check.markdown import to_markdown, verdict
from xbench.report.check.rows import Aggregate, RowKey, aggregate
from xbench.report.check.tolerances import (
    DEFAULT_CI_FLOOR,
    DEFAULT_KEY,
    DEFAULT_TOLERANCE,
    allowed_deviation,
    check_tolerance,
    describe_tolerance,
    parse_tolerance,
    tolerance_for,
)

__all__ = [
    "DEFAULT_CI_FLOOR",
    "DEFAULT_KEY",
    "DEFAULT_TOLERANCE",
    "FAILING",
    "FORMAT",
    "STATUSES",
    "VERSION",
    "Aggregate",
    "CheckResult",
    "Comparison",
    "RowKey",
    "aggregate",
    "allowed_deviation",
    "check_tolerance",
    "compare",
    "describe_tolerance",
    "dump_baseline",
    "load_baseline",
    "make_baseline",
    "parse_tolerance",
    "to_markdown",
    "tolerance_for",
    "validate_baseline",
    "verdict",
    "write_baseline",
]
