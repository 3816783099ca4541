"""Explainers shared by methods and metrics. Importing this package registers the built-in ones."""

from xbench.explain.base import Explainer, normalise

__all__ = ["Explainer", "normalise"]
