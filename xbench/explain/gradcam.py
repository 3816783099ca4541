"""Grad-CAM (Selvaraju et al., ICCV 2017) through captum's ``LayerGradCam``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _last_stage(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    stages = getattr(backbone, "stages", None)
    if stages is None:
        raise TypeError(f"{type(model).__name__} has no backbone.stages; override Method.explain to explain it")
    return stages[-1]


def grad_cam(model: nn.Module, x: Tensor, target: Tensor, layer: nn.Module | None = None) -> Tensor:
    """(B, H, W) Grad-CAM maps of class ``target``, ReLU'd and upsampled to the input size.

    Args:
        model: a model whose forward returns an object with ``logits``.
        x: (B, C, H, W) images.
        target: (B,) class indices to explain.
        layer: the layer to attribute to; the backbone's last stage by default.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    layer = layer if layer is not None else _last_stage(model)
    gc = LayerGradCam(lambda inp: model(inp).logits, layer)
    with torch.enable_grad():
        attr = gc.attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.squeeze(1).detach()
