"""Faithfulness: does removing (or keeping) what a map calls relevant change the model's output?

Every metric here scores the current explainer's maps (``ctx.explanations()``: (H, W) maps
min-max normalised to [0, 1]) of the class each map explains (``ctx.explain_targets()``: the
model's prediction) on the first ``n`` explained test images (a seeded subset), one value per
image, and reports the mean. Images whose map is constant are left out (no ranking exists;
``skipped_constant_map``), and so are images whose score is undefined (a correlation of a
constant series: ``skipped_undefined``); ``n`` in the result counts the images scored.

Hyperparameters are scaled to the image (Quantus's defaults assume 224×224); every resolved
value, ``softmax`` (scores are probabilities or logits) and the implementation (Quantus and its
version, or xbench's own) are recorded in each result's params. Images are raw pixels in [0, 1]
(models normalise inside), so the removal baseline 0.0 is black.

=========================  ============  ==========================================================
metric                     better        definition (defaults at 28 / 64 px)
=========================  ============  ==========================================================
faithfulness_correlation   higher        Quantus FaithfulnessCorrelation (Bhatt et al. 2020): Pearson
                                         r over ``nr_runs`` = 20 random subsets (5 % of the C·H·W
                                         entries) between the map's sum on the subset and the logit
                                         drop when the subset is set to 0; logits (Quantus's default).
pixel_flipping             lower         Quantus PixelFlipping (Bach et al. 2015): delete pixels most
                                         relevant first in 16 steps (C·16 for colour: Quantus flips
                                         channel entries), probability of the class after each step;
                                         AUC over the fraction deleted (1/K … 1). A faithful map makes
                                         the score fall fast, so a small area.
region_perturbation        higher        Quantus RegionPerturbation (Samek et al. 2017), MoRF: delete
                                         the 16 most relevant p×p patches one by one (p = 4 / 9 px);
                                         AOPC = Σ_k (f(x) − f(x_k)) / (L + 1) on probabilities.
selectivity                lower         Quantus Selectivity (Montavon et al. 2018): delete all p×p
                                         patches most relevant first (p = ⌈side/4⌉: 16 patches); AUC of
                                         the probability over the fraction of patches deleted.
monotonicity_correlation   higher        Quantus MonotonicityCorrelation (Nguyen & Martinez 2020):
                                         Spearman ρ between the relevance of 16 groups of pixels
                                         (ascending) and the variance of the probability when a group
                                         is set to a uniform random value (``nr_samples`` = 2).
road                       lower         ROAD (Rong et al. 2022), MoRF, own implementation of Quantus's
                                         definition: remove the top p % (10, 30, 50, 70, 90) with noisy
                                         linear imputation; the fraction of images whose predicted
                                         class survives, averaged over the percentages.
irof                       higher        IROF (Rieger & Hansen 2020), own implementation of Quantus's
                                         definition: SLICO superpixels (16 segments), removed in order
                                         of mean relevance (replaced by the images' mean pixel value);
                                         area over the curve of p(x_k)/p(x), divided by the number of
                                         segments.
average_drop               lower         AD (Chattopadhay et al. 2018; TAME's protocol): keep the top
                                         ``keep`` of the map (0.15), multiply the image by that map; AD
                                         = mean max(0, Y − O)/Y (shown ×100), Y and O the class
                                         probability on the original and the masked image.
increase_in_confidence     higher        IC: mean 1[O > Y] (shown ×100), same masking.
insertion_auc              higher        RISE (Petsiuk et al. 2018): insert pixels most relevant first
                                         into a blurred copy (σ = side/16) in 16 steps; AUC of the
                                         probability over the fraction inserted (0 … 1).
deletion_auc               lower         RISE deletion: set pixels to 0, most relevant first, 16 steps;
                                         AUC over the fraction deleted (0 … 1).
=========================  ============  ==========================================================

The five Quantus metrics take ``backend``: ``torch`` (the default) computes them with
:mod:`xbench.metrics.perturb`, batched on the model's device with Quantus's inputs, random draws
and summaries, bitwise Quantus's values (tests call Quantus directly); ``quantus`` calls Quantus
0.6.0 itself through :func:`~xbench.metrics.quantus_compat.run_quantus` (the reference, slower).

Why some are xbench's own implementations (each tested against Quantus where Quantus runs):

* ``road``: Quantus 0.6.0 solves one sparse system per image and percentage with SciPy's default
  (COLAMD-ordered) SuperLU and builds it through ``lil_matrix``; here the same system is built
  vectorised and factorised with a symmetric minimum-degree ordering (2–3× faster, same
  solution to 1e-7). The noise is drawn in Quantus's order, so with the same seed the scores equal
  Quantus's. Quantus also fails on colour input and keeps only its first batch
  (see :mod:`xbench.metrics.quantus_compat`).
* ``irof``: Quantus calls ``slic`` with its 224-px defaults (100 segments: ~100 forward passes per
  image at any size) and no way to change them, re-segments every image for every explainer, and
  computes the area with padded curves whose length depends on the other images in the batch.
  Here the segments are computed once per cell (shared by every explainer) with a configurable
  segment count and SLICO (see :class:`Irof`); with Quantus's SLIC settings (100 segments,
  compactness 10, no SLICO) the scores equal Quantus's per image.
* ``average_drop``/``increase_in_confidence``/``insertion_auc``/``deletion_auc``: Quantus 0.6.0 has
  none of them (its metric list has no AD/IC, insertion or deletion; PixelFlipping is deletion
  without the unperturbed point).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.explain.base import METHOD_DEFAULT
from xbench.metrics import perturb
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.metrics.quantus_compat import QUANTUS_VERSION, make_metric, run_quantus
from xbench.registry import METRICS

log = logging.getLogger(__name__)

OWN = "own implementation"


# -- helpers ------------------------------------------------------------------------------------------
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


def divisor_near(total: int, target: float) -> int:
    """The divisor of ``total`` closest to ``target`` (Quantus needs step sizes that divide H·W)."""
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


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


# -- ROAD: noisy linear imputation --------------------------------------------------------------------
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


# -- IROF -------------------------------------------------------------------------------------------------
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


# -- the metric base --------------------------------------------------------------------------------------
class FaithfulnessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(256, ge=1, description="score the first n explained images (a seeded subset)")


#: The params of a faithfulness metric.
FP = TypeVar("FP", bound=FaithfulnessParams)


class _Faithfulness(Metric[FP]):
    """Scores the first ``n`` explained images; subclasses define :meth:`scores`."""

    category = "faithfulness"
    uses_explanations = True
    decimals = 3
    Params: ClassVar[type[BaseModel]] = FaithfulnessParams

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        """Per-image values of images ``idx`` (positions among the first n) and the settings to record."""
        raise NotImplementedError

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        ctx = explained(ctx)
        maps = ctx.explanations()
        if maps is None:
            return []
        data, targets = ctx.explain_data(), ctx.explain_targets()
        n = min(self.params.n, len(data))
        flat = maps[:n].flatten(1)
        constant = flat.amax(1) == flat.amin(1)
        idx = torch.nonzero(~constant)[:, 0]
        if len(idx) == 0:
            log.warning("%s: every map is constant; nothing to score", self.name)
            return []
        values, settings = self.scores(ctx, idx, data.images[idx], targets[idx], maps[idx])
        finite = np.isfinite(values)
        params: dict[str, Any] = {
            **self.param_dict(),
            **settings,
            "image_size": list(data.image_size),
            "channels": data.in_channels,
            "target": "predicted class",
            "skipped_constant_map": int(constant.sum()),
            "skipped_undefined": int((~finite).sum()),
        }
        if ctx.explainer == METHOD_DEFAULT:
            params["explainer"] = METHOD_DEFAULT
        if not finite.any():
            log.warning("%s: the score is undefined for every image", self.name)
            return []
        return [MetricResult(float(values[finite].mean()), int(finite.sum()), params=params)]


def originals(ctx: EvalContext, n: int, softmax: bool) -> Tensor:
    """Class scores of the first ``n`` explained images, unperturbed: once per cell, shared by metrics."""
    data, targets = ctx.explain_data(), ctx.explain_targets()
    return ctx.memo(
        f"faithfulness:original:{n}:{softmax}",
        lambda: class_scores(
            ctx.logits_model(), data.images[:n], targets[:n], softmax=softmax, batch_size=ctx.batch_size,
            device=ctx.device,
        ),
    )  # fmt: skip


# -- the Quantus metrics ---------------------------------------------------------------------------------
def _quantus_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for Quantus: a recorded similarity name becomes Quantus's function."""
    out = dict(kwargs)
    if "similarity_func" in out:
        from quantus.functions import similarity_func

        out["similarity_func"] = getattr(similarity_func, f"correlation_{out['similarity_func']}")
    return out


class QuantusParams(FaithfulnessParams):
    backend: Literal["torch", "quantus"] = Field(
        "torch",
        description="'torch': xbench.metrics.perturb, batched on the model's device, Quantus's inputs, draws and"
        " values; 'quantus': Quantus 0.6.0 itself (the reference, slower)",
    )


#: The params of a Quantus faithfulness metric: each declares ``softmax`` itself, with its own default.
QP = TypeVar(
    "QP",
    bound="FaithfulnessCorrelationParams | PixelFlippingParams | RegionPerturbationParams | SelectivityParams"
    " | MonotonicityCorrelationParams",
)


class _QuantusFaithfulness(_Faithfulness[QP]):
    """A Quantus 0.6.0 faithfulness metric run through :func:`run_quantus`."""

    quantus_class: ClassVar[str]

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        """The metric's constructor arguments for images of ``shape`` (N, C, H, W), all recorded."""
        raise NotImplementedError

    def summarise(self, raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
        """Per-image values from Quantus's per-image output."""
        return raw

    def raw_scores(self, ctx: EvalContext, x: Tensor, y: Tensor, maps: Tensor, kwargs: dict[str, Any]) -> np.ndarray:
        """What ``quantus.<quantus_class>`` returns per image, from the backend the params select."""
        softmax = bool(self.params.softmax)
        model = ctx.logits_model()
        if self.params.backend == "quantus":
            metric = make_metric(self.quantus_class, **_quantus_kwargs(kwargs))
            return run_quantus(
                metric, model, x, y, maps, softmax=softmax, batch_size=ctx.batch_size, device=ctx.device,
                seed=ctx.seed,
            )  # fmt: skip
        function = perturb.BACKENDS[self.quantus_class]
        seeded = {"seed": ctx.seed} if "seed" in inspect.signature(function).parameters else {}
        return function(
            model, x, y, maps, softmax=softmax, batch_size=ctx.batch_size, device=ctx.device, **seeded, **kwargs
        )

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        kwargs = self.quantus_kwargs(x.shape)
        raw = self.raw_scores(ctx, x, y, maps, kwargs)
        torch_backend = self.params.backend == "torch"
        settings = {
            "implementation": (
                f"xbench.metrics.perturb (torch, batched) of quantus.{self.quantus_class}: Quantus's inputs and draws"
                if torch_backend
                else f"quantus.{self.quantus_class}"
            ),
            "quantus_version": QUANTUS_VERSION,
            "softmax": bool(self.params.softmax),
            "seed": ctx.seed,
            **kwargs,
        }
        return self.summarise(raw, kwargs, x.shape), settings


def quantus_backed() -> list[str]:
    """Registry names of the metrics with a Quantus and a torch backend (``backend``), in registry order."""
    from xbench.registry import METRICS

    return [n for n in METRICS.names() if issubclass(METRICS.get(n), _QuantusFaithfulness)]


class FaithfulnessCorrelationParams(QuantusParams):
    nr_runs: int = Field(20, ge=2, description="random subsets per image (Quantus: 100)")
    subset_fraction: float = Field(0.05, gt=0, lt=1, description="subset size as a fraction of the C·H·W entries")
    perturb_baseline: float = Field(0.0, description="value the subset is set to (0: black)")
    softmax: bool = Field(False, description="correlate logits (Quantus's default) or probabilities")


@METRICS.register("faithfulness_correlation")
class FaithfulnessCorrelation(_QuantusFaithfulness[FaithfulnessCorrelationParams]):
    """Pearson correlation of the map's mass on random subsets with the output drop they cause."""

    quantus_class = "FaithfulnessCorrelation"
    higher_is_better = True
    label = "Faith. corr."
    description = "Quantus FaithfulnessCorrelation: Pearson r of subset relevance vs. output drop (random subsets)"
    Params = FaithfulnessCorrelationParams

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        p = self.params
        features = int(shape[1] * shape[2] * shape[3])
        return {
            "nr_runs": p.nr_runs,
            "subset_size": max(1, round(p.subset_fraction * features)),
            "perturb_baseline": p.perturb_baseline,
            "similarity_func": "pearson",
            "normalise": True,
            "abs": False,
        }


class PixelFlippingParams(QuantusParams):
    steps: int = Field(16, ge=2, description="deletion steps for grey images (features_in_step ≈ H·W/steps)")
    perturb_baseline: float = Field(0.0, description="value deleted pixels take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("pixel_flipping")
class PixelFlipping(_QuantusFaithfulness[PixelFlippingParams]):
    """Area under the probability curve while the most relevant pixels are deleted first."""

    quantus_class = "PixelFlipping"
    higher_is_better = False
    label = "Pixel flipping AUC"
    description = "Quantus PixelFlipping: AUC of p(class) as the most relevant pixels are set to 0 (lower better)"
    Params = PixelFlippingParams

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        p = self.params
        hw = int(shape[2] * shape[3])
        return {
            "features_in_step": divisor_near(hw, hw / p.steps),
            "perturb_baseline": p.perturb_baseline,
            "return_auc_per_sample": True,
            "normalise": True,
            "abs": False,
        }

    def summarise(self, raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
        # Quantus's AUC is trapezoid(curve, dx=1) over K = C·H·W/features_in_step points at the
        # fractions 1/K … 1; dividing by K puts it on the fraction axis (scale-free across sizes).
        k = math.ceil(int(shape[1] * shape[2] * shape[3]) / kwargs["features_in_step"])
        return raw / k


class RegionPerturbationParams(QuantusParams):
    patch_size: int | None = Field(None, ge=1, description="patch side in px; null: round(side/7) (4 at 28, 9 at 64)")
    regions: int = Field(16, ge=1, description="patches deleted (most relevant first)")
    perturb_baseline: float = Field(0.0, description="value deleted patches take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("region_perturbation")
class RegionPerturbation(_QuantusFaithfulness[RegionPerturbationParams]):
    """AOPC: the mean drop of the class probability as the most relevant patches are deleted.

    Quantus 0.6.0 marks RegionPerturbation's score direction "lower", but its output is the drop
    f(x) − f(x_k), which a faithful map makes large as the most relevant patches go first: the
    AOPC of Samek et al. is higher-is-better.
    """

    quantus_class = "RegionPerturbation"
    higher_is_better = True
    label = "Region pert. AOPC"
    description = "Quantus RegionPerturbation (MoRF): AOPC of the most relevant patches set to 0 (higher better)"
    Params = RegionPerturbationParams

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        p = self.params
        side = min(int(shape[2]), int(shape[3]))
        patch = p.patch_size or max(2, round(side / 7))
        patches = math.ceil(int(shape[2]) / patch) * math.ceil(int(shape[3]) / patch)
        return {
            "patch_size": patch,
            "regions_evaluation": min(p.regions, patches),
            "order": "morf",
            "perturb_baseline": p.perturb_baseline,
            "normalise": True,
            "abs": False,
        }

    def summarise(self, raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
        # Quantus returns the curve f(x) − f(x_k), k = 1…L; Samek et al.'s AOPC averages it over
        # k = 0…L, where the k = 0 term is 0.
        return raw.sum(axis=1) / (raw.shape[1] + 1)


class SelectivityParams(QuantusParams):
    patch_size: int | None = Field(None, ge=1, description="patch side in px; null: ⌈side/4⌉ (16 patches)")
    perturb_baseline: float = Field(0.0, description="value deleted patches take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("selectivity")
class Selectivity(_QuantusFaithfulness[SelectivityParams]):
    """Area under the probability curve as every patch is deleted, most relevant first."""

    quantus_class = "Selectivity"
    higher_is_better = False
    label = "Selectivity AUC"
    description = "Quantus Selectivity: AUC of p(class) as patches are set to 0, most relevant first (lower better)"
    Params = SelectivityParams

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        p = self.params
        side = min(int(shape[2]), int(shape[3]))
        return {
            "patch_size": p.patch_size or max(1, math.ceil(side / 4)),
            "perturb_baseline": p.perturb_baseline,
            "normalise": True,
            "abs": False,
        }

    def summarise(self, raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
        # Quantus's AUC is trapezoid(curve, dx=1) over the P patches deleted (points 1/P … 1).
        return curve_auc(raw, np.arange(1, raw.shape[1] + 1) / raw.shape[1])


class MonotonicityCorrelationParams(QuantusParams):
    steps: int = Field(16, ge=3, description="groups of pixels (features_in_step ≈ H·W/steps)")
    nr_samples: int = Field(2, ge=1, description="random values per group (Quantus: 100)")
    eps: float = Field(1e-5, gt=0, description="Quantus's guard against dividing by a zero prediction")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("monotonicity_correlation")
class MonotonicityCorrelation(_QuantusFaithfulness[MonotonicityCorrelationParams]):
    """Spearman correlation of group relevance with the output variance its perturbation causes."""

    quantus_class = "MonotonicityCorrelation"
    higher_is_better = True
    label = "Monotonicity corr."
    description = "Quantus MonotonicityCorrelation: Spearman ρ of group relevance vs. output variance"
    Params = MonotonicityCorrelationParams

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        p = self.params
        hw = int(shape[2] * shape[3])
        return {
            "features_in_step": divisor_near(hw, hw / p.steps),
            "nr_samples": p.nr_samples,
            "eps": p.eps,
            "perturb_baseline": "uniform",
            "similarity_func": "spearman",
            "normalise": True,
            "abs": True,
        }


# -- xbench's own implementations ------------------------------------------------------------------------
class RoadParams(FaithfulnessParams):
    percentages: list[float] = Field([10, 30, 50, 70, 90], min_length=1, description="% of pixels removed (MoRF)")
    noise: float = Field(0.01, ge=0, description="std of the Gaussian noise added to imputed pixels (ROAD's 0.01)")

    @field_validator("percentages")
    @classmethod
    def _percent(cls, v: list[float]) -> list[float]:
        if any(not 0 < p < 100 for p in v):
            raise ValueError(f"percentages must lie in (0, 100), got {v}")
        return v


@METRICS.register("road")
class Road(_Faithfulness[RoadParams]):
    """ROAD (MoRF): how often the prediction survives imputing the most relevant pixels."""

    higher_is_better = False
    label = "ROAD MoRF"
    description = "ROAD MoRF: fraction of predictions kept after noisy linear imputation of the top p % (lower better)"
    Params = RoadParams

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        p = self.params
        results = road_scores(
            ctx.logits_model(), x, y, maps, p.percentages, noise=p.noise, batch_size=ctx.batch_size,
            device=ctx.device, seed=ctx.seed, progress=ctx.progress,
        )  # fmt: skip
        settings = {
            "implementation": f"{OWN} of quantus.ROAD (faster solver)",
            "quantus_version": QUANTUS_VERSION,
            "softmax": True,  # the decision is an argmax: the same with or without softmax
            "order": "morf",
            "imputation": "noisy linear (ROAD)",
            "seed": ctx.seed,
            "curve": [float(v) for v in results.mean(axis=0)],
        }
        return results.mean(axis=1), settings


class IrofParams(FaithfulnessParams):
    n_segments: int = Field(16, ge=2, description="SLIC's target number of superpixels (Quantus: slic's 100)")
    compactness: float = Field(10.0, gt=0, description="SLIC compactness (slic's and Quantus's 10)")
    slic_zero: bool = Field(True, description="SLICO: adapt the compactness per segment (see the class doc)")
    baseline: float | Literal["mean"] = Field(
        "mean", description="value removed segments take; 'mean': the evaluated images' mean pixel value"
    )
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("irof")
class Irof(_Faithfulness[IrofParams]):
    """IROF: area over the class-probability curve as superpixels are removed, most relevant first.

    Segments come from SLICO (``slic_zero``) by default: with [0, 1] grey images SLIC's fixed
    compactness 10 (Quantus's call) outweighs every intensity difference and cuts a square grid,
    and with colour images (SLIC works in Lab) it can merge a 24-px image into 1–4 segments when 16
    are asked for; SLICO adapts the compactness per segment and gives the requested count in both.
    Images with fewer than two segments have no curve and are counted as undefined.
    """

    higher_is_better = True
    label = "IROF"
    description = "IROF: area over p(x_k)/p(x) as SLIC segments are removed by mean relevance (per segment; higher)"
    Params = IrofParams

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        p = self.params
        n = p.n
        images = ctx.explain_data().images[:n]
        # Segments depend on the images only: computed once per cell, shared by every explainer.
        segments = ctx.memo(
            f"faithfulness:slic:{n}:{p.n_segments}:{p.compactness}:{p.slic_zero}",
            lambda: slic_segments(images, p.n_segments, p.compactness, p.slic_zero),
        )[idx.numpy()]
        baseline = float(images.mean()) if p.baseline == "mean" else float(p.baseline)
        aoc, counts = irof_scores(
            ctx.logits_model(), x, y, maps, segments, baseline=baseline, softmax=p.softmax,
            batch_size=ctx.batch_size, device=ctx.device, original=originals(ctx, n, p.softmax)[idx],
        )  # fmt: skip
        settings = {
            "implementation": f"{OWN} of quantus.IROF (configurable SLIC, segments shared across explainers)",
            "quantus_version": QUANTUS_VERSION,
            "softmax": p.softmax,
            "segmentation": "skimage slic",
            "baseline_value": baseline,
            "mean_segments": float(counts.mean()),
            "normalisation": "AOC divided by the image's number of segments",
        }
        return np.where(counts > 1, aoc / counts, np.nan), settings


class AdIcParams(FaithfulnessParams):
    keep: float = Field(0.15, gt=0, le=1, description="fraction of the map's pixels kept (TAME: 1.0, 0.5, 0.15)")
    mask: Literal["map", "binary"] = Field(
        "map", description="'map': image × map on the kept pixels (TAME's code); 'binary': image on the kept pixels"
    )
    softmax: bool = Field(True, description="probabilities (the definition) or logits")


class _AdIc(_Faithfulness[AdIcParams]):
    """Average drop / increase in confidence on the image masked by the map's top pixels (TAME's protocol)."""

    Params = AdIcParams
    unit = "%"
    scale = 100.0
    decimals = 2
    column: ClassVar[int]

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        p = self.params

        def compute() -> tuple[Tensor, Tensor]:
            original = originals(ctx, p.n, p.softmax)[idx]
            masked = torch.cat(
                [
                    x[s : s + ctx.batch_size] * keep_mask(maps[s : s + ctx.batch_size], p.keep, p.mask)
                    for s in range(0, len(x), ctx.batch_size)
                ]
            )
            o = class_scores(
                ctx.logits_model(), masked, y, softmax=p.softmax, batch_size=ctx.batch_size, device=ctx.device
            )
            return drop_and_increase(original, o)

        # Average drop and increase in confidence share their forward passes.
        key = f"faithfulness:adic:{ctx.explainer}:{p.n}:{p.keep}:{p.mask}:{p.softmax}"
        terms = ctx.memo(key, compute)
        settings = {
            "implementation": f"{OWN} (Quantus has no AD/IC)",
            "quantus_version": None,
            "softmax": p.softmax,
            "kept_pixels": max(1, math.ceil(p.keep * maps.shape[1] * maps.shape[2] - 1e-9)),
            "protocol": "TAME (Ntrougkas et al. 2022): image × top-keep map, class = prediction",
        }
        return terms[self.column].numpy(), settings


@METRICS.register("average_drop")
class AverageDrop(_AdIc):
    """AD = mean max(0, Y − O)/Y: how much confidence the map's top pixels lose (lower is better)."""

    column = 0
    higher_is_better = False
    label = "AD"
    description = "average drop (TAME/Grad-CAM++): mean max(0, Y−O)/Y, O on the image × the map's top pixels"


@METRICS.register("increase_in_confidence")
class IncreaseInConfidence(_AdIc):
    """IC = mean 1[O > Y]: how often the map's top pixels alone raise the confidence (higher is better)."""

    column = 1
    higher_is_better = True
    label = "IC"
    description = "increase in confidence (TAME/Grad-CAM++): fraction of images with O > Y"


class InsertionDeletionParams(FaithfulnessParams):
    steps: int = Field(16, ge=2, description="pixels change in this many equal steps (the curve has steps + 1 points)")
    softmax: bool = Field(True, description="probabilities (RISE) or logits")


class InsertionParams(InsertionDeletionParams):
    baseline: Literal["blur", "zero"] = Field("blur", description="the canvas pixels are inserted into")
    blur_sigma: float = Field(1 / 16, gt=0, description="Gaussian σ of the blurred canvas, as a fraction of the side")


class DeletionParams(InsertionDeletionParams):
    baseline: float = Field(0.0, description="value deleted pixels take (0: black)")


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


#: The params of an insertion or deletion metric.
ID = TypeVar("ID", bound=InsertionDeletionParams)


class _InsertionDeletion(_Faithfulness[ID]):
    """RISE's causal metrics: the class score along a path that changes pixels most relevant first."""

    insertion: ClassVar[bool]

    def canvas(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        p = self.params
        n, hw = p.n, maps.shape[1] * maps.shape[2]
        counts = [round(k * hw / p.steps) for k in range(p.steps + 1)]
        images, targets = ctx.explain_data().images[:n], ctx.explain_targets()[:n]
        model = ctx.logits_model()

        def canvas_scores() -> Tensor:  # the path's map-independent end: once per cell
            return class_scores(
                model, self.canvas(images), targets, softmax=p.softmax, batch_size=ctx.batch_size, device=ctx.device
            )

        key = f"faithfulness:canvas:{self.name}:{self.param_dict()}"
        canvas_end = ctx.memo(key, canvas_scores)[idx]
        original = originals(ctx, n, p.softmax)[idx]
        canvas = self.canvas(x)
        if self.insertion:  # from the canvas (k = 0) to the image (k = steps)
            start, end, known = canvas, x, {0: canvas_end, p.steps: original}
        else:  # from the image to the canvas
            start, end, known = x, canvas, {0: original, p.steps: canvas_end}
        curves = perturbation_curves(
            model, x, y, ranks_of(rank_pixels(maps)), counts, start, end, softmax=p.softmax,
            batch_size=ctx.batch_size, device=ctx.device, known=known, progress=ctx.progress, desc=self.name,
        )  # fmt: skip
        fractions = np.array(counts) / hw
        settings = {
            "implementation": f"{OWN} (Quantus 0.6.0 has no insertion/deletion metric)",
            "quantus_version": None,
            "softmax": p.softmax,
            "fractions": [float(f) for f in fractions],
            "curve": curves.double().mean(dim=0).tolist(),
            "order": "most relevant first, ties in a fixed random order",
        }
        return curve_auc(curves.double().numpy(), fractions), settings


@METRICS.register("insertion_auc")
class InsertionAuc(_InsertionDeletion[InsertionParams]):
    """RISE insertion: AUC of the class probability as the most relevant pixels are inserted into a blurred copy."""

    insertion = True
    higher_is_better = True
    label = "Insertion AUC"
    description = "RISE insertion: AUC of p(class) as pixels, most relevant first, enter a blurred copy (higher)"
    Params = InsertionParams

    def canvas(self, images: Tensor) -> Tensor:
        p = self.params
        if p.baseline == "zero":
            return torch.zeros_like(images)
        return blurred(images, p.blur_sigma * min(images.shape[-2:]))


@METRICS.register("deletion_auc")
class DeletionAuc(_InsertionDeletion[DeletionParams]):
    """RISE deletion: AUC of the class probability as the most relevant pixels are set to the baseline."""

    insertion = False
    higher_is_better = False
    label = "Deletion AUC"
    description = "RISE deletion: AUC of p(class) as pixels, most relevant first, are set to 0 (lower better)"
    Params = DeletionParams

    def canvas(self, images: Tensor) -> Tensor:
        p = self.params
        return torch.full_like(images, p.baseline)
