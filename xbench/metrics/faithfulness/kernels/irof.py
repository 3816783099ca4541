"""IROF's kernels: SLIC superpixels and the area over the curve as they are removed (Rieger & Hansen 2020).

Quantus's definition (``quantus.IROF``) with two differences that do not change a single image's
score: the segmentation is a separate step (computed once per cell and shared by every explainer,
with a configurable segment count), and each image's curve has its own length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from xbench.metrics.faithfulness.kernels.paths import class_scores


def slic_segments(images: Tensor, n_segments: int, compactness: float, slic_zero: bool = False) -> np.ndarray:
    """(N, H, W) SLIC superpixel labels 0…S−1 per image; Quantus's call with ``n_segments=100, compactness=10``."""
    from skimage.segmentation import slic

    out = []
    for img in images.float().cpu().numpy():
        seg = slic(np.moveaxis(img, 0, -1).astype(np.float64), n_segments=n_segments, compactness=compactness,
                   slic_zero=slic_zero, start_label=0)  # fmt: skip
        out.append(np.unique(seg, return_inverse=True)[1].reshape(seg.shape))
    return np.stack(out)


@torch.no_grad()
def irof_scores(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    maps: Tensor,
    segments: np.ndarray,
    *,
    baseline: float,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    original: Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image IROF area over the curve and segment count, as ``quantus.IROF`` defines them.

    Segments are ordered by their mean relevance (``numpy.argsort`` of the negated means, as
    Quantus) and replaced by ``baseline`` cumulatively; q_k = f(x_k)/f(x) for k = 1…S, and
    AOC = S − trapezoid(q, dx=1). Unlike Quantus's batched version, each image's curve has its
    own length (Quantus pads shorter curves with zeros, which changes their area depending on the
    other images in the batch).
    """
    n = len(x)
    if original is None:
        original = class_scores(model, x, target, softmax=softmax, batch_size=batch_size, device=device)
    a = maps.float().cpu().numpy()
    counts = segments.reshape(n, -1).max(axis=1) + 1
    seg_rank = np.zeros_like(segments)
    for i in range(n):
        means = np.bincount(segments[i].ravel(), a[i].ravel(), counts[i]) / np.bincount(segments[i].ravel())
        order = np.argsort(-means)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        seg_rank[i] = rank[segments[i]]
    ranks = torch.from_numpy(seg_rank).view(n, 1, *segments.shape[1:])
    curves = np.zeros((n, int(counts.max())))
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        xs, r, t = x[s:e].to(device), ranks[s:e].to(device), target[s:e].to(device)
        columns = []
        for k in range(1, int(counts[s:e].max()) + 1):
            logits = model(torch.where(r < k, torch.full_like(xs, baseline), xs)).float()
            values = logits.softmax(dim=1) if softmax else logits
            columns.append(values.gather(1, t[:, None])[:, 0])
        curves[s:e, : len(columns)] = torch.stack(columns, dim=1).cpu().numpy()  # one copy per batch
    q = curves / original.double().numpy()[:, None]
    aoc = np.array([counts[i] - np.trapezoid(q[i, : counts[i]], dx=1) for i in range(n)])
    return aoc, counts
