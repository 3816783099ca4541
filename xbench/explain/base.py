"""The explainer contract and the built-in explainers.

An explainer turns ``(model, images, target classes)`` into one saliency map per
image, shape (B, H, W) at the input resolution. The suite lists which explainers
to evaluate (``explainers:``); every explanation metric is reported per
explainer, so a method's native maps, Grad-CAM on the same model and a random
map (the chance level of every metric) sit side by side.

Maps are min-max normalised per image to [0, 1] by :func:`normalise` before any
metric sees them: ranks and therefore top-k regions are unchanged, and metrics
that sum relevance (mass accuracy) get a common scale across explainers.
"""

from __future__ import annotations

from typing import ClassVar, Generic, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.methods.base import Method
from xbench.params import NoParams, P
from xbench.registry import EXPLAINERS

#: The explainer name metrics report when no suite explainer was selected (hand-built contexts).
METHOD_DEFAULT = "(method default)"


class Explainer(Generic[P]):
    """Base class of every explainer, generic over its parameters: ``class RandomMaps(Explainer[RandomParams])``.

    ``explain`` returns None when it does not apply. ``Params`` is the same model at run time.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: False for maps that depend on neither the model nor the image's pixels (random maps): metrics
    #: may then skip work that only changes the pixels (explanation consistency's attack).
    reads_input: ClassVar[bool] = True

    def __init__(self, params: BaseModel | None = None) -> None:
        # An instance of ``Params``, the model the subclass declares as ``P``.
        self.params = cast(P, params if params is not None else self.Params())

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        """(B, H, W) maps of class ``target`` for images ``x``; None if this model has none."""
        raise NotImplementedError

    def param_dict(self) -> dict[str, object]:
        return self.params.model_dump(mode="json")


@EXPLAINERS.register("native")
class Native(Explainer[NoParams]):
    """The maps a method produces itself (EGT's final exit, ECR's CAM, LAP's scores, TAME's attention)."""

    description = "the method's own maps (Method.native_maps); skipped for methods without any"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        with torch.no_grad():
            return method.native_maps(model, x, target)


@EXPLAINERS.register("gradcam")
class GradCam(Explainer[NoParams]):
    """Grad-CAM (Selvaraju et al., ICCV 2017) through captum, on the backbone's last stage."""

    description = "Grad-CAM through captum's LayerGradCam on the backbone's last stage"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        from xbench.explain.gradcam import grad_cam

        return grad_cam(model, x, target)


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell: int = Field(1, ge=1, le=4096, description="side of the constant blocks, in pixels (1: i.i.d. pixel noise)")


@EXPLAINERS.register("random")
class RandomMaps(Explainer[RandomParams]):
    """Uniform random maps, seeded by the cell's seed: the chance level of every explanation metric."""

    description = "i.i.d. uniform maps (optionally blocky); the row every explainer must beat"
    Params = RandomParams
    reads_input = False  # the maps depend on the image's shape and the seed only

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        b, _, h, w = x.shape
        c = self.params.cell
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(b, 1, -(-h // c), -(-w // c), generator=g)
        maps = nn.functional.interpolate(coarse, scale_factor=c, mode="nearest")[:, 0, :h, :w]
        return maps.to(x.device)


class MethodDefault(Explainer[NoParams]):
    """The method's own explanation (native maps, else Grad-CAM): the fallback without a suite explainer."""

    name = "method_default"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        return default_explanation(method, model, x, target)


def default_explanation(method: Method, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """(B, H, W) explanation of ``target`` for ``x``: the method's native maps, else Grad-CAM on the last stage."""
    native = method.native_maps(model, x, target)
    if native is not None:
        return native
    from xbench.explain.gradcam import grad_cam

    return grad_cam(model, x, target)
