"""ROAD's kernel: noisy linear imputation of the most relevant pixels (Rong et al. 2022), solved fast.

Quantus 0.6.0 (``quantus.ROAD``) solves one sparse system per image and percentage with SciPy's
default (COLAMD-ordered) SuperLU and builds it through ``lil_matrix``; here the same system is
built vectorised, several images share one block-diagonal factorisation, and the ordering is a
symmetric minimum degree (faster: BENCHMARKS.md, "Faithfulness backends"; the same solution to
1e-7). The noise is drawn in Quantus's order, so with the same seed the results equal Quantus's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

# ROAD's neighbour weights (Rong et al. 2022; Quantus's ``noisy_linear_imputation``): 1/6 for the four
# direct neighbours, 1/12 for the diagonals; they sum to 1.
_ROAD_OFFSETS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                 ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))  # fmt: skip


def linear_imputation(image: np.ndarray, indices: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """ROAD's imputation of one (C, H, W) image at flat pixel ``indices``: Quantus's linear system, solved faster.

    Each removed pixel equals the weighted mean of its in-image neighbours (removed ones
    included, as unknowns): S_i·v_i − Σ_removed w·v_j = Σ_known w·x_j, with S_i the sum of the
    weights of in-image neighbours. One sparse system per image, shared by the channels, solved
    by SuperLU with a symmetric minimum-degree ordering (the matrix is symmetric). ``noise``
    (C, len(indices)) is added to the solution, column j at pixel ``indices[j]``, as Quantus does.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    c, h, w = image.shape
    flat = image.reshape(c, h * w).astype(np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    m = len(indices)
    out = image.reshape(c, h * w).copy()
    if m == 0:
        return out.reshape(image.shape)
    removed = np.zeros(h * w, dtype=bool)
    removed[indices] = True
    var = np.full(h * w, -1, dtype=np.int64)
    var[indices] = np.arange(m)
    row, col = indices // w, indices % w
    diag = np.zeros(m)
    rhs = np.zeros((m, c))
    rows, cols, vals = [], [], []
    for (dr, dc), weight in _ROAD_OFFSETS:
        rr, cc = row + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        diag[inside] += weight
        nb = np.where(inside, rr * w + cc, 0)
        unknown = inside & removed[nb]
        known = inside & ~removed[nb]
        rows.append(np.nonzero(unknown)[0])
        cols.append(var[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        rhs[known] += weight * flat[:, nb[known]].T
    rows.append(np.arange(m))
    cols.append(np.arange(m))
    vals.append(diag)
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    solution = splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(rhs)  # (m, C)
    values = solution.T
    if noise is not None:
        values = values + noise
    out[:, indices] = values
    return out.reshape(image.shape)


#: Unknowns (removed pixels) per sparse factorisation in :func:`road_scores` (see there).
ROAD_UNKNOWNS_PER_SOLVE = 2000


def linear_imputation_many(images: np.ndarray, indices: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """:func:`linear_imputation` of B (C, H, W) images at once, each at its own k flat pixel ``indices`` (B, k).

    The B systems are built in one vectorised pass and solved as one block-diagonal sparse system
    (one SuperLU factorisation instead of B, without B rounds of scipy.sparse's per-matrix Python
    overhead, which cost as much as the factorisations). Blocks do not interact, so each image's
    solution is its own system's, to float64 round-off. ``noise`` (B, C, k) is added like
    :func:`linear_imputation`'s.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    b, c, h, w = images.shape
    indices = np.asarray(indices, dtype=np.int64).reshape(b, -1)
    k = indices.shape[1]
    out = images.reshape(b, c, h * w).copy()
    if k == 0:
        return out.reshape(images.shape)
    flat = images.reshape(b, c, h * w).astype(np.float64)
    image_of = np.arange(b)[:, None].repeat(k, 1)  # (B, k)
    removed = np.zeros((b, h * w), dtype=bool)
    removed[image_of, indices] = True
    var = np.full((b, h * w), -1, dtype=np.int64)
    var[image_of, indices] = np.arange(b * k).reshape(b, k)  # global unknown number
    row, col = indices // w, indices % w
    diag = np.zeros((b, k))
    rhs = np.zeros((b, k, c))
    rows, cols, vals = [], [], []
    own = np.arange(b * k).reshape(b, k)
    for (dr, dc), weight in _ROAD_OFFSETS:
        rr, cc = row + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        diag += weight * inside
        nb = np.where(inside, rr * w + cc, 0)
        nb_removed = removed[image_of, nb]
        unknown = inside & nb_removed
        known = inside & ~nb_removed
        rows.append(own[unknown])
        cols.append(var[image_of[unknown], nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        rhs[known] += weight * flat[image_of[known], :, nb[known]]
    rows.append(own.ravel())
    cols.append(own.ravel())
    vals.append(diag.ravel())
    m = b * k
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    solution = splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(rhs.reshape(m, c))
    values = solution.reshape(b, k, c).transpose(0, 2, 1)  # (B, C, k)
    if noise is not None:
        values = values + noise
    out[image_of[:, None, :].repeat(c, 1), np.arange(c)[None, :, None], indices[:, None, :].repeat(c, 1)] = values
    return out.reshape(images.shape)


@torch.no_grad()
def road_scores(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    maps: Tensor,
    percentages: Sequence[float],
    *,
    noise: float,
    batch_size: int,
    device: torch.device | str,
    seed: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(N, P) ROAD MoRF results: 1 if the predicted class is still ``target`` after imputing the top p %.

    Quantus's definition (``quantus.ROAD``): pixels ranked by ``numpy.argsort`` of the negated map
    (Quantus's order, ties included), k = int(H·W·p/100) removed, noise N(0, ``noise``²) drawn from
    ``numpy.random.RandomState(seed)`` per batch, percentage and image (Quantus's order, so with
    the same seed and batch size the results equal Quantus's). Every channel of a removed pixel
    is imputed, also for colour images.
    """
    n, c, h, w = x.shape
    rng = np.random.RandomState(seed)
    order = np.argsort(-maps.reshape(n, h * w).float().cpu().numpy(), axis=1)
    images = x.float().cpu().numpy()
    results = np.zeros((n, len(percentages)))
    for s in tqdm(range(0, n, batch_size), desc="road", leave=False, disable=not progress, unit="batch"):
        e = min(n, s + batch_size)
        t = target[s:e].to(device)
        kept = []
        for p in percentages:
            k = int(h * w * p / 100)
            draws = np.stack([noise * rng.randn(c, k) for _ in range(s, e)]) if noise else None
            # Groups of about ROAD_UNKNOWNS_PER_SOLVE unknowns: small systems gain most from one shared
            # factorisation; large ones factorise faster apart (SuperLU's fill grows with the block).
            group = max(1, ROAD_UNKNOWNS_PER_SOLVE // max(1, k))
            imputed = np.concatenate([
                linear_imputation_many(images[g : min(e, g + group)], order[g : min(e, g + group), :k],
                                       None if draws is None else draws[g - s : min(e, g + group) - s])
                for g in range(s, e, group)
            ])  # fmt: skip
            kept.append(model(torch.from_numpy(imputed).to(device)).argmax(dim=1) == t)
        if kept:  # one device-to-host copy per batch
            results[s:e] = torch.stack(kept, dim=1).cpu().numpy()
    return results
