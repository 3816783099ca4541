"""The loop the file-surface fuzz tests share: examples of each mutation kind, their outcomes counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
SLOW_FACTOR = 8  # the slow run tries this many times the default run's examples, new ones each time


def fuzz_kinds(
    label: str,
    kinds: Iterable[str],
    strategy: Callable[[str], st.SearchStrategy[Any]],
    check: Callable[[Any, Counter[str]], None],
    per_kind: int,
    derandomize: bool,
) -> Counter[str]:
    """``per_kind`` examples of ``strategy(kind)`` for every kind, each given to ``check``; returns the tally.

    ``check`` asserts the outcome of one case and counts it (``"<kind> refused"``, ``"<kind> accepted"``);
    the tally is printed under ``label`` (the README's "Reliability" counts come from these lines).
    """
    tally: Counter[str] = Counter()
    for kind in kinds:

        @settings(FUZZ, max_examples=per_kind, derandomize=derandomize)
        @given(case=strategy(kind))
        def one(case: Any) -> None:
            tally["examples"] += 1
            check(case, tally)

        one()
    print(f"\n{label}: {dict(sorted(tally.items()))}")
    return tally
