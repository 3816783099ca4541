"""Explainers: any model's maps, post hoc. Importing this package registers the built-in ones."""

from xbench.explain import cam_explainers, rise  # noqa: F401  (register the explainers)
from xbench.explain import captum_explainers as _captum_explainers  # noqa: F401  (registers them)
from xbench.explain.base import Explainer
from xbench.models.maps import normalise

__all__ = ["Explainer", "normalise"]
