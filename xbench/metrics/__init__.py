"""Metrics. Importing this package registers the built-in ones."""

from xbench.metrics import (
    accuracy,
    background_stability,
    binary,
    branch_energy,
    efficiency,
    exit_agreement,
    exits,
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
    "background_stability",
    "binary",
    "branch_energy",
    "efficiency",
    "exit_agreement",
    "exits",
    "explanation_time",
    "faithfulness",
    "latency",
    "localization",
    "sanity",
]
