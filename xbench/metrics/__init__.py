"""Metrics. Importing this package registers the built-in ones."""

from xbench.metrics import accuracy, efficiency
from xbench.metrics.base import Metric, MetricResult

__all__ = ["Metric", "MetricResult", "accuracy", "efficiency"]
