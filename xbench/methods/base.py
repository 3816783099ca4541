"""The method contract.

A method is a class registered by name in :data:`xbench.registry.METHODS`. It

* builds its model (:meth:`Method.build`), whose forward pass returns a
  :class:`ModelOutput`;
* defines its training objective (:meth:`Method.loss`), how a batch becomes a
  loss (:meth:`Method.training_step`: forward pass and loss by default; a method
  may change its inputs there) and optional hooks (:meth:`Method.on_epoch_start`),
  which the one training loop in :mod:`xbench.engine.train` calls; a method never
  writes its own loop;
* may produce its own explanation maps (:meth:`Method.native_maps`); every
  model can also be explained post hoc (:mod:`xbench.explain`: Grad-CAM through
  captum, random maps as the chance level);
* may need another cell's trained model (``requires``, e.g. TAME explains a
  frozen baseline): the engine trains or loads that cell first and hands its
  weights to :meth:`Method.load_required` after :meth:`Method.build`.

Metadata lives in class attributes (``name``, ``paper``, ``Params``) so the CLI
can list methods and the suite validator can check parameters before any
training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from xbench.claims import Claim
from xbench.data.base import ImageSplit
from xbench.models.base import Backbone
from xbench.models.exits import ExitSettings
from xbench.models.output import Batch, ModelOutput, OutputField  # re-exported for plugins written against 0.1
from xbench.params import NoParams, P


@dataclass(frozen=True)
class MethodContext:
    """What a method needs to know about the data and backbone to build its model."""

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    backbone: str
    backbone_params: dict[str, Any]
    seed: int = 0
    #: The dumped params of the ``requires`` cell's method row, for a method whose model must match it
    #: (TAME builds the baseline's head: ``head: original`` or not); None without ``requires``.
    required_params: dict[str, Any] | None = None

    def build_backbone(self) -> Backbone:
        """Instantiate the suite's backbone for this data."""
        from xbench.registry import BACKBONES

        cls = BACKBONES.get(self.backbone)
        params = cls.Params.model_validate(self.backbone_params)
        backbone: Backbone = cls(params, self.in_channels, self.mean, self.std)
        return backbone


class Method(Generic[P]):
    """Base class of every method, generic over its parameters: ``class EGT(Method[EGTParams])``.

    The defaults make a plain classifier. ``Params`` is the same model at run time (the suite
    validates a row's params with it).

    Args:
        params: this method's validated ``Params`` from the suite.
        ctx: data and backbone description.
    """

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    requires: ClassVar[str | None] = None
    #: True when the model's logits and gradients are exactly those of the ``requires`` cell's
    #: model (TAME: a frozen baseline plus an attention module that only explains it). Explainers
    #: that read only logits and gradients (Grad-CAM, random) would then repeat that cell's
    #: values, so the engine scores only ``native`` maps for such a method when the suite has that cell.
    classifies_as_required: ClassVar[bool] = False
    #: Method-specific outputs the evaluation pass over the test split keeps for metrics.
    output_fields: ClassVar[tuple[OutputField[Any], ...]] = ()
    #: The paper's checkable claims (:class:`xbench.claims.Claim`); records carry them and every
    #: report gives each a verdict (supported / not supported / inconclusive) over the run's seeds.
    claims: ClassVar[tuple[Claim, ...]] = ()

    def __init__(self, params: BaseModel, ctx: MethodContext) -> None:
        self.params = cast(P, params)  # an instance of ``Params``, the model the subclass declares as ``P``
        self.ctx = ctx

    def build(self) -> nn.Module:
        """Return a fresh model whose ``forward(x)`` returns :class:`ModelOutput`."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: Batch) -> Tensor:
        """The loss of one training batch: ``loss(model(batch.x), batch)`` by default.

        The training loop calls this, never ``model`` itself, so a method may change its inputs
        (mixup, a second pass over masked images) without writing its own loop.
        """
        return self.loss(model(batch.x), batch)

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Training objective of one forward pass; cross-entropy on the final logits by default."""
        return F.cross_entropy(output.logits, batch.y)

    def on_epoch_start(self, model: nn.Module, epoch: int, data: ImageSplit, device: torch.device) -> None:
        """Hook called by the training loop before each epoch (e.g. to reweight samples)."""

    def state_dict(self) -> dict[str, Tensor]:
        """Training state the method keeps between epochs (tensors only), saved in epoch checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` when a killed training resumes from an epoch checkpoint."""

    def load_required(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Load the trained weights of the ``requires`` cell (same dataset, backbone, seed) into ``model``."""
        required = self.required_method(self.params)
        raise NotImplementedError(f"{self.name} declares requires={required!r} but does not load it")

    def uses_masks(self, data: ImageSplit) -> bool:
        """Whether training on ``data`` uses its ground-truth masks (weak supervision); such rows are marked."""
        return False

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the optimiser updates; all of them by default."""
        return [p for p in model.parameters() if p.requires_grad]

    @classmethod
    def required_method(cls, params: BaseModel) -> str | None:
        """``requires`` for a row's validated params (LAP: only with ``from_pretrained``)."""
        return cls.requires

    @classmethod
    def classifies_like_required(cls, params: BaseModel) -> bool:
        """``classifies_as_required`` for a row's validated params (a method may depend on them)."""
        return cls.classifies_as_required

    def exit_settings(self) -> ExitSettings:
        """How the early-exit policy is set for this method's model (used only if it has exits)."""
        return ExitSettings()

    def exit_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> list[Tensor] | None:
        """(B, H, W) attention map of every exit for ``target``, final last; None without exits."""
        return None

    def native_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor | None:
        """(B, H, W) maps the model produces itself for ``target`` (EGT exits, LAP, TAME); None if it has none.

        These are what the ``native`` explainer evaluates; post-hoc explainers (Grad-CAM,
        random) work on any model and live in :mod:`xbench.explain`.
        """
        return None
