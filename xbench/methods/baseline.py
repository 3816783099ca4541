"""Baseline: the backbone, global average pooling and a linear head (or a zoo model's own classifier).

Trained with cross-entropy only; explained post hoc with Grad-CAM (captum) on
the last stage. Every published method is compared against this row.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field
from torch import Tensor, nn

from xbench.methods.base import Method
from xbench.models.base import Backbone
from xbench.models.output import ModelOutput
from xbench.params import OmitDefaults, P
from xbench.registry import METHODS


class BaselineParams(OmitDefaults):
    model_config = ConfigDict(extra="forbid")
    omit_at_default: ClassVar[frozenset[str]] = frozenset({"head"})  # records from before it stay the same
    head: Literal["gap", "original"] = Field(
        "gap",
        description="gap: global average pooling and a new linear layer; original: the zoo model's own classifier "
        "(e.g. VGG's fully connected layers and 1,000-class head; its last layer is replaced for another class count)",
    )


class Classifier(nn.Module):
    """``backbone -> global average pool -> linear``, or ``backbone -> the backbone's original head``."""

    def __init__(self, backbone: Backbone, num_classes: int, head: Literal["gap", "original"] = "gap") -> None:
        super().__init__()
        self.backbone = backbone
        self.head: nn.Module | None = None
        if head == "original":
            self.head = backbone.original_head(num_classes)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(backbone.out_channels, num_classes)

    def logits_of(self, features: Tensor) -> Tensor:
        """The logits of the last stage's feature map."""
        if self.head is not None:
            logits: Tensor = self.head(features)
            return logits
        return self.fc(self.pool(features).flatten(1))

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.backbone(x)
        return ModelOutput(logits=self.logits_of(features), features=features)


@METHODS.register("baseline")
class Baseline(Method[P]):
    """Plain classifier: cross-entropy training, Grad-CAM explanations.

    Its params choose the head (``head: gap`` by default); it stays generic so that a method that
    reuses its model with params of its own types them:
    ``class LabelSmoothing(Baseline[LabelSmoothingParams])`` (a GAP head unless those params have ``head``).
    """

    paper = "— (plain backbone + linear head, cross-entropy)"
    description = "backbone, global average pooling (or the model's own head), linear head; Grad-CAM through captum"
    Params = BaselineParams

    def build(self) -> nn.Module:
        return Classifier(self.ctx.build_backbone(), self.ctx.num_classes, getattr(self.params, "head", "gap"))
