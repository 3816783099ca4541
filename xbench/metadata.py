"""Typed metric metadata: what a metric measures, which way is better, how seeds are summarised.

Metrics declare these as class attributes (:class:`xbench.metrics.base.Metric`); records carry
their values as plain strings and booleans, and reports read them back from the records, so this
module sits in the foundation where both can import it. The enums are ``str`` enums whose values
are the strings records always held: ``Category.ACCURACY == "accuracy"``.

The convention is Quantus's (``quantus.helpers.enums``: ``EvaluationCategory``,
``ScoreDirection``) for category and direction, and lm-evaluation-harness's for aggregation
(declared per metric).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar


class _Value(str, Enum):
    """A ``str`` enum that prints and formats as its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Category(_Value):
    """What a metric measures; leaderboards have one table per category, in this order."""

    ACCURACY = "accuracy"
    EFFICIENCY = "efficiency"
    LOCALIZATION = "localization"
    FAITHFULNESS = "faithfulness"
    CONSISTENCY = "consistency"
    SANITY = "sanity"


class Direction(_Value):
    """Which way a metric's score is better; ``NONE`` for scores without one (a time, an exit share)."""

    HIGHER = "higher"
    LOWER = "lower"
    NONE = "none"

    @property
    def higher_is_better(self) -> bool | None:
        """The direction as records hold it: True, False or None."""
        return {Direction.HIGHER: True, Direction.LOWER: False, Direction.NONE: None}[self]

    @classmethod
    def of(cls, higher_is_better: bool | None) -> Direction:
        """The direction of a record's (or an older plugin's) ``higher_is_better``."""
        return {True: cls.HIGHER, False: cls.LOWER, None: cls.NONE}[higher_is_better]


class Aggregation(_Value):
    """How a leaderboard cell summarises a metric's seeds.

    ``MEAN``: the mean, with the 95% CI of the mean (Student's t). ``MEDIAN``: the median, for
    scores a few runs can throw far off; it has no CI.
    """

    MEAN = "mean"
    MEDIAN = "median"


E = TypeVar("E", bound=_Value)


def member(enum: type[E], value: Any) -> E:
    """``value`` as a member of ``enum`` (a member or its string value).

    Raises:
        ValueError: ``value`` is neither; the message lists the valid values.
    """
    try:
        return enum(value)
    except ValueError:
        kind = enum.__name__.lower()
        valid = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{value!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} (valid: {valid})") from None
