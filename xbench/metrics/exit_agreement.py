"""Attention consistency: how closely each early exit's map agrees with the final exit's.

The maps of all exits are computed once per cell (``ctx.memo("exit_maps")``, shared by
the four metrics below) for the images explanation metrics use, ``ctx.explain_data()``
(the first ``explain_limit`` images of a seeded permutation of the test split, 1,000 by
default), and for one class per image, the final exit's prediction
(``ctx.explain_targets()``), at the input resolution (see the method's ``exit_maps``).
Each map is min-max normalised to [0, 1] (:func:`xbench.models.maps.normalise`). For
early exit ``i`` and final exit ``K`` every metric reports the mean over images of a
similarity s(A_i, A_K), one result per early exit:

- ``attention_consistency``: cosine, ⟨A_i, A_K⟩ / (‖A_i‖·‖A_K‖) on the flattened maps;
- ``attention_consistency_pearson``: Pearson's r, the cosine of the mean-centred maps;
- ``attention_consistency_ssim``: SSIM (``skimage.metrics.structural_similarity``,
  ``data_range=1``, a uniform ``win_size`` window, 7 or the largest odd side that fits);
- ``attention_consistency_iou``: IoU of the two maps' top-q regions (q = 0.1 of the pixels).

Methods without exits get no values. Formulas and defaults: ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.metrics.localization import top_k, top_region
from xbench.models.maps import cosine, normalise, pearson
from xbench.params import NoParams, P
from xbench.registry import METRICS


def exit_maps(ctx: EvalContext) -> list[Tensor] | None:
    """(N, H, W) normalised map of every exit, final last, for ``ctx.explain_data()``; None without exits.

    Computed once per cell and shared by every consistency metric.
    """

    def compute() -> list[Tensor] | None:
        data, targets = ctx.explain_data(), ctx.explain_targets()
        batches: list[list[Tensor]] = []
        for s in range(0, len(data), ctx.batch_size):
            x = data.images[s : s + ctx.batch_size].to(ctx.device)
            maps = ctx.method.exit_maps(ctx.model, x, targets[s : s + ctx.batch_size].to(ctx.device))
            if maps is None or len(maps) < 2:
                return None
            batches.append([normalise(m.detach()).cpu() for m in maps])
        return [torch.cat(per_exit) for per_exit in zip(*batches, strict=True)] if batches else None

    return ctx.memo("exit_maps", compute)


# -- similarities of two batches of (N, H, W) maps in [0, 1], one value per pair -----------------------
#: skimage's SSIM constants (``K1``, ``K2``)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_window(size: tuple[int, int] | torch.Size, win_size: int | None = None) -> int:
    """The SSIM window: ``win_size`` if given, else skimage's 7, shrunk to the largest odd side that fits."""
    side = min(int(size[0]), int(size[1]))
    if win_size is not None:
        if win_size % 2 == 0 or win_size > side:
            raise ValueError(f"SSIM win_size must be odd and at most the map side {side}, got {win_size}")
        return win_size
    if side < 3:
        raise ValueError(f"SSIM needs maps of at least 3×3 pixels, got {tuple(size)}")
    return min(7, side if side % 2 else side - 1)


def ssim(a: Tensor, b: Tensor, win_size: int | None = None) -> Tensor:
    """SSIM per pair, batched: ``skimage.metrics.structural_similarity`` (``data_range=1``, uniform window).

    skimage filters each image with ``scipy.ndimage.uniform_filter`` and then averages S over the
    image cropped by the window's radius, so only windows that lie wholly inside the image count and
    the filter's border mode never matters: those are exactly the windows of a stride-1
    box sum without padding. Written here so the whole batch is a few tensor operations on the
    maps' device instead of a host copy and a skimage call per pair: on one CPU thread no faster
    than skimage (BENCHMARKS.md, "Map-only metrics and host copies"), but on a GPU the maps stay
    there. Equal to skimage to float64 round-off (its running-sum filter against these window
    sums), which ``tests/metrics/test_exit_agreement.py`` checks against skimage itself.
    """
    win = ssim_window(a.shape[-2:], win_size)
    x, y = a.double(), b.double()

    def mean(t: Tensor) -> Tensor:  # the mean of every whole window: a separable sum, unfold per axis
        return t.unfold(-1, win, 1).sum(-1).unfold(-2, win, 1).sum(-1) / (win * win)

    ux, uy, uxx, uyy, uxy = mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y)
    cov_norm = win * win / (win * win - 1)  # skimage's sample covariance
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K·data_range)², data_range 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def top_iou(a: Tensor, b: Tensor, q: float) -> Tensor:
    """IoU of the two maps' top-q regions (k = max(1, round(q·H·W)) pixels each) per pair."""
    k = top_k(q, a.shape[-2:])
    ra, rb = top_region(a, k), top_region(b, k)
    inter = (ra & rb).flatten(1).sum(1).double()
    return inter / (2 * k - inter)


# -- the metrics --------------------------------------------------------------------------------------
class _Consistency(Metric[P]):
    """Mean similarity of each early exit's map with the final exit's; subclasses define :meth:`similarity`."""

    category = Category.CONSISTENCY
    direction = Direction.HIGHER
    requires_exits = True
    decimals = 3
    kind: ClassVar[str]

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def record(self, maps: list[Tensor]) -> dict[str, Any]:
        return {}

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        maps = exit_maps(ctx)
        if maps is None:
            return []
        final, n = maps[-1], len(maps[-1])
        params = {
            **self.param_dict(),
            "similarity": self.kind,
            "target": "final prediction",
            "images": "explain_data",
            **self.record(maps),
        }
        return [
            MetricResult(float(self.similarity(m, final).mean()), n, exit=i, params=params)
            for i, m in enumerate(maps[:-1])
        ]


@METRICS.register("attention_consistency")
class AttentionConsistency(_Consistency[NoParams]):
    """Mean cosine similarity of each early exit's attention map with the final exit's."""

    kind = "cosine"
    label = "Attn. consistency"
    description = "cosine similarity of each early exit's attention map to the final exit's (per exit)"

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return cosine(a, b)


@METRICS.register("attention_consistency_pearson")
class AttentionConsistencyPearson(_Consistency[NoParams]):
    """Mean Pearson correlation of each early exit's attention map with the final exit's."""

    kind = "pearson"
    label = "Attn. consistency (Pearson)"
    description = "Pearson correlation of each early exit's attention map with the final exit's (per exit)"

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return pearson(a, b)


class SSIMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    win_size: int | None = Field(
        None,
        ge=3,
        le=4095,
        description="odd SSIM window side; default 7, or the largest odd side that fits smaller maps",
    )


@METRICS.register("attention_consistency_ssim")
class AttentionConsistencySSIM(_Consistency[SSIMParams]):
    """Mean SSIM of each early exit's attention map with the final exit's."""

    kind = "ssim"
    label = "Attn. consistency (SSIM)"
    description = "SSIM (skimage, data_range 1) of each early exit's attention map with the final exit's (per exit)"
    Params = SSIMParams

    def record(self, maps: list[Tensor]) -> dict[str, Any]:
        win = ssim_window(maps[-1].shape[-2:], self.params.win_size)
        return {
            "win_size_used": win,
            "data_range": 1.0,
            "gaussian_weights": False,
            # Recorded text: the module's name before it was exit_agreement, kept so records stay the same.
            "implementation": "xbench.metrics.consistency.ssim (torch, batched) = skimage structural_similarity",
        }

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return ssim(a, b, self.params.win_size)


class IoUParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: float = Field(0.1, gt=0, le=1, description="each map's region is its top q of pixels: k = max(1, round(q·H·W))")


@METRICS.register("attention_consistency_iou")
class AttentionConsistencyIoU(_Consistency[IoUParams]):
    """Mean IoU of the top-q regions of each early exit's map and the final exit's."""

    kind = "top_q_iou"
    label = "Attn. consistency (top-q IoU)"
    description = "IoU of the top-q pixel regions of each early exit's map and the final exit's (per exit)"
    Params = IoUParams

    def record(self, maps: list[Tensor]) -> dict[str, Any]:
        k = top_k(self.params.q, maps[-1].shape[-2:])
        return {"k": k, "tie_break": "seeded permutation (seed 0)"}

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return top_iou(a, b, self.params.q)
