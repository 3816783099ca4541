"""Tensor operations on saliency maps, shared by methods (their native maps), explainers and metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalise(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max normalise each (H, W) map of a (B, H, W) batch to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1).float()
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)


# -- similarities of two batches of (N, H, W) maps, one value per pair ------------------------------------
def cosine(a: Tensor, b: Tensor) -> Tensor:
    """⟨a, b⟩ / (‖a‖·‖b‖) per pair; 0 when either map is all zeros."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1, eps=1e-8)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson's r per pair: the cosine of the mean-centred maps; 0 when either map is constant."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return cosine(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks along dim 1, ties sharing their average rank (``scipy.stats.rankdata(method="average")``).

    In torch rather than scipy so that the ranks stay on the maps' device (explanation consistency
    ranks every attacked batch); tested against scipy.
    """
    order = x.argsort(dim=1, stable=True)
    ordered = x.gather(1, order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(dim=1) - 1  # the tie group of each sorted position
    position = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.double).expand_as(ordered)
    total = torch.zeros_like(position).scatter_add_(1, group, position)
    count = torch.zeros_like(position).scatter_add_(1, group, torch.ones_like(position))
    mean = (total / count.clamp_min(1)).gather(1, group)
    return torch.empty_like(mean).scatter_(1, order, mean)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of (N, H, W) maps (average ranks for ties), on their device.

    Two constant maps score 1 if equal, else 0; one constant map scores 0 (its ranks carry nothing).
    """
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    rho = pearson(average_ranks(fa), average_ranks(fb))
    const_a = fa.amax(1) == fa.amin(1)
    const_b = fb.amax(1) == fb.amin(1)
    both = const_a & const_b
    rho[both] = (fa[both] == fb[both]).all(1).double()
    return rho
