"""What a model's forward pass returns, and the batches it trains and evaluates on.

:class:`ModelOutput` is every model's output; :class:`OutputField` names a typed, method-specific
part of it that the evaluation pass keeps for metrics; :class:`Batch` is one batch of a split.
They sit below :mod:`xbench.methods` so that metrics, the engine and the models can name them
without importing any method (``xbench.methods.base`` re-exports them for plugins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from torch import Tensor, nn


@dataclass
class ModelOutput:
    """What every model's forward pass returns.

    Attributes:
        logits: (B, K) final logits.
        features: (B, C, h, w) last feature map before pooling, where there is one.
        exit_logits: logits of each early exit, final exit last, for early-exit models.
        maps: attention/explanation maps the model produces itself, one per exit.
        extras: anything else a method's loss needs (e.g. branch energies).
    """

    logits: Tensor
    features: Tensor | None = None
    exit_logits: list[Tensor] = field(default_factory=list)
    maps: list[Tensor] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


T = TypeVar("T")


@dataclass(frozen=True)
class OutputField(Generic[T]):
    """A typed, method-specific result of the forward pass that the evaluation pass keeps for metrics.

    A method lists its fields in ``Method.output_fields``; the cell's one pass over the test split
    calls ``read`` on every batch's :class:`ModelOutput` (None: this model has none) and ``merge``
    on the batches' values, and metrics ask ``ctx.predictions().get(FIELD)`` for the typed result
    (Coded ResNeXt's branch energies and codewords, :data:`xbench.models.fields.BRANCH_ENERGIES`).
    So the engine carries no method's fields by name.
    """

    name: str
    read: Callable[[ModelOutput], T | None]
    merge: Callable[[list[T]], T]


@dataclass
class Batch:
    """A training or evaluation batch; ``index`` is each sample's position in its split."""

    x: Tensor
    y: Tensor
    index: Tensor
    mask: Tensor | None = None


class LogitsOnly(nn.Module):
    """``model(x).logits`` as a module returning a tensor: what tracers (fvcore), captum, pytorch-grad-cam
    and Quantus call, since xbench models return a :class:`ModelOutput`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.model(x).logits
        return logits
