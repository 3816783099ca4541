"""Backbones. Importing this package registers the built-in ones."""

from xbench.models.base import Backbone, Normalize
from xbench.models.resnet import ResNetCifar

__all__ = ["Backbone", "Normalize", "ResNetCifar"]
