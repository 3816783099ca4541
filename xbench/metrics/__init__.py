"""Metrics. Importing this package registers the built-in ones."""

from xbench.metrics import (
    accuracy,
    binary,
    branch_energy,
    consistency,
    efficiency,
    exits,
    explanation_consistency,
    explanation_time,
    faithfulness,
    latency,
    localization,
    sanity,
)
from xbench.metrics.base import Metric, MetricResult

__all__ = [
    "Metric",
    "MetricResult",
    "accuracy",
    "binary",
    "branch_energy",
    "consistency",
    "efficiency",
    "exits",
    "explanation_consistency",
    "explanation_time",
    "faithfulness",
    "latency",
    "localization",
    "sanity",
]
