"""Tensor operations on saliency maps, shared by methods (their native maps), explainers and metrics."""

from __future__ import annotations

from torch import Tensor


def normalise(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max normalise each (H, W) map of a (B, H, W) batch to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1).float()
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)
