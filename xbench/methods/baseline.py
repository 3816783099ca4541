"""Baseline: the backbone, global average pooling and a linear head.

Trained with cross-entropy only; explained post hoc with Grad-CAM (captum) on
the last stage. Every published method is compared against this row.
"""

from __future__ import annotations

from torch import Tensor, nn

from xbench.methods.base import Method, ModelOutput
from xbench.models.base import Backbone
from xbench.params import P
from xbench.registry import METHODS


class Classifier(nn.Module):
    """``backbone -> global average pool -> linear``."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.backbone(x)
        logits = self.fc(self.pool(features).flatten(1))
        return ModelOutput(logits=logits, features=features)


@METHODS.register("baseline")
class Baseline(Method[P]):
    """Plain classifier: cross-entropy training, Grad-CAM explanations.

    It takes no params (``Params`` is ``NoParams``); it stays generic so that a method that reuses
    its model with params of its own types them: ``class LabelSmoothing(Baseline[LabelSmoothingParams])``.
    """

    paper = "— (plain backbone + linear head, cross-entropy)"
    description = "backbone, global average pooling, linear head; Grad-CAM through captum"

    def build(self) -> nn.Module:
        return Classifier(self.ctx.build_backbone(), self.ctx.num_classes)
