"""Explainers: any model's maps, post hoc. Importing this package registers the built-in ones."""

from xbench.explain.base import Explainer
from xbench.models.maps import normalise

__all__ = ["Explainer", "normalise"]
