"""Backbones. Importing this package registers the built-in ones: xbench's CIFAR ResNet, torchvision's
CNNs under their own names, and timm's as ``timm:<model name>``."""

from xbench.models.base import Backbone, Normalize
from xbench.models.resnet import ResNetCifar
from xbench.models.zoo import TimmBackbone, TorchvisionBackbone, timm_backbone
from xbench.registry import BACKBONES

BACKBONES.register_family("timm", timm_backbone, "any timm CNN through its feature_info (pip install 'xbench[timm]')")

__all__ = ["Backbone", "Normalize", "ResNetCifar", "TimmBackbone", "TorchvisionBackbone"]
