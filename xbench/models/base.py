"""The backbone contract: a stem and a list of stages whose outputs are taps.

Methods attach heads to stage outputs (early exits, attention modules), so a
backbone exposes its ``stages`` and their channel counts rather than only a
final feature vector. Images arrive in [0, 1]; the backbone normalises them
itself, which keeps every explanation and perturbation in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn


def memory_format_of(model: nn.Module) -> str:
    """``"channels_last"`` if the model's spatial conv weights are stored channels-last, else ``"contiguous"``.

    A weight whose layout is ambiguous (a 1×1 kernel over one channel fits both) does not count.
    """
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return "channels_last"
    return "contiguous"


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a module so it is part of the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    mean: Tensor
    std: Tensor

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """A CNN as ``stem`` followed by ``stages``; subclasses build both.

    Attributes:
        stage_channels: output channels of each stage.
        stage_strides: cumulative stride of each stage's output w.r.t. the input.
    """

    Params: ClassVar[type[BaseModel]]
    description: ClassVar[str] = ""
    stem: nn.Module
    stages: nn.ModuleList
    stage_channels: list[int]
    stage_strides: list[int]

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    @classmethod
    def weights_identity(cls, params: BaseModel) -> dict[str, Any] | None:
        """The name and file sha256 of the weights ``params`` load (cache keys and records carry it); None: none."""
        return None

    def original_head(self, num_classes: int) -> nn.Module:
        """The classifier the model came with (pooling and linear layers) for ``num_classes`` classes.

        Zoo backbones keep theirs (:mod:`xbench.models.zoo`); a backbone built here has none.
        """
        from xbench.errors import ConfigError

        raise ConfigError(f"backbone {getattr(self, 'name', type(self).__name__)} has no original head; use head: gap")

    def forward_stages(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Outputs of stages ``0..upto`` (all stages by default)."""
        last = len(self.stages) - 1 if upto is None else upto
        outs = []
        h = self.stem(x)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            outs.append(h)
            if i == last:
                break
        return outs

    def forward(self, x: Tensor) -> Tensor:
        """The last stage's feature map."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return h
