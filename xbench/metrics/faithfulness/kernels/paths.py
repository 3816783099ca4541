"""Pixel-replacement paths: rank a map's pixels, replace them in that order, score the class.

The kernels of xbench's own metrics that need no imputation or segmentation: the class score of
a batch (:func:`class_scores`), the scores along a path from one image to another that changes
the most relevant pixels first (:func:`perturbation_curves`: RISE's insertion and deletion), the
area under such a curve, TAME's keep mask (AD/IC) and the blurred canvas insertion starts from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


def curve_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under each row of ``curves`` over ``fractions`` (the x-axis), by ``numpy.trapezoid``."""
    return np.asarray(np.trapezoid(np.asarray(curves, dtype=np.float64), x=fractions, axis=-1))


def rank_pixels(maps: Tensor, seed: int = 0) -> Tensor:
    """(N, H·W) pixel indices of each map, most relevant first; ties in a fixed seeded random order.

    Ties (Grad-CAM's zeros, blocky maps) are not broken by position, which would remove the
    top-left corner first.
    """
    flat = maps.flatten(1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed)).to(flat.device)
    order = torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)
    return perm[order]


def ranks_of(order: Tensor) -> Tensor:
    """The inverse permutation of each row: ``ranks[i, order[i, j]] = j``."""
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


@torch.no_grad()
def class_scores(
    model: nn.Module, x: Tensor, target: Tensor, *, softmax: bool, batch_size: int, device: torch.device | str
) -> Tensor:
    """(N,) probability (``softmax``) or logit of class ``target`` for images ``x``, in batches, on CPU."""
    out = []
    for s in range(0, len(x), batch_size):
        logits = model(x[s : s + batch_size].to(device)).float()
        values = logits.softmax(dim=1) if softmax else logits
        out.append(values.gather(1, target[s : s + batch_size, None].to(values.device))[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def perturbation_curves(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    ranks: Tensor,
    counts: Sequence[int],
    start: Tensor,
    end: Tensor,
    *,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    known: dict[int, Tensor] | None = None,
    progress: bool = False,
    desc: str = "",
) -> Tensor:
    """(N, K) class scores along a pixel-replacement path, batched.

    Step k shows ``end`` at the ``counts[k]`` pixels of lowest rank (most relevant first) and
    ``start`` elsewhere, in every channel: deletion goes from the image (start) to a baseline
    (end), insertion from a canvas to the image. ``known[k]`` supplies a column computed
    elsewhere (the unperturbed image, an all-baseline image) instead of a forward pass.
    """
    known = known or {}
    n, _, h, w = x.shape
    curves = torch.zeros(n, len(counts))
    for k, column in known.items():
        curves[:, k] = column
    todo = [k for k in range(len(counts)) if k not in known]
    for s in tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=not progress, unit="batch"):
        e = min(n, s + batch_size)
        xs, ys = start[s:e].to(device), end[s:e].to(device)
        r = ranks[s:e].to(device).view(e - s, 1, h, w)
        t = target[s:e].to(device)
        columns = []
        for k in todo:
            logits = model(torch.where(r < counts[k], ys, xs)).float()
            values = logits.softmax(dim=1) if softmax else logits
            columns.append(values.gather(1, t[:, None])[:, 0])
        if columns:  # one device-to-host copy per batch, not per step
            curves[s:e, todo] = torch.stack(columns, dim=1).cpu()
    return curves


def keep_mask(maps: Tensor, keep: float, mask: Literal["map", "binary"]) -> Tensor:
    """(N, 1, H, W) multiplier of TAME's AD/IC: the map on its top ``keep`` pixels (or 1 there), 0 elsewhere.

    Exactly k = ⌈keep·H·W⌉ pixels are kept (ties broken by :func:`rank_pixels`), as TAME's
    ``drop_Npercent`` keeps ⌈(1 − p)·H·W⌉.
    """
    n, h, w = maps.shape
    k = max(1, math.ceil(keep * h * w - 1e-9))
    top = torch.zeros(n, h * w, dtype=torch.bool, device=maps.device)
    top.scatter_(1, rank_pixels(maps)[:, :k], True)
    m = maps.flatten(1) * top if mask == "map" else top.float()
    return m.view(n, 1, h, w)


def drop_and_increase(original: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image AD term max(0, Y − O)/Y and IC term 1[O > Y] (TAME's ``AD`` and ``IC`` before the mean)."""
    y, o = original.double(), masked.double()
    return (y - o).clamp_min(0) / y, (o > y).double()


def blurred(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with σ = ``sigma`` px (kernel 2·⌈3σ⌉ + 1, reflected borders)."""
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect"),
                                      kernel.view(1, 1, 1, -1))  # fmt: skip
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect"),
                                      kernel.view(1, 1, -1, 1))  # fmt: skip
    return flat.view(n, c, h, w)
