"""Localisation: does an explainer's map fall on the object's ground-truth mask?

Every metric here scores the current explainer's maps (``ctx.explanations()``: one
(H, W) map per explained test image, min-max normalised to [0, 1]) against the
image's object mask S, per image, and reports the mean over images; higher is better.
Six come from Quantus 0.6.0 (``pointing_game``, ``attribution_localisation``,
``top_k_intersection``, ``relevance_rank_accuracy``, ``relevance_mass_accuracy``,
``localisation_auc``), called on numpy arrays through :func:`quantus_scores`;
``top_q_iou`` is xbench's own (Quantus has no IoU metric). Formulas, chance levels
and defaults are in ``docs/metrics.md``.

Samples on which a score is undefined are left out and counted in the result's
params: images whose mask is empty (``skipped_empty_mask``: nothing to localise;
Quantus would return NaN, or, for the pointing game, a miss), maps that are constant
(``skipped_constant_map``: no maximum, no ranking and, after normalisation, no mass;
Quantus would call every pixel the maximum and score a hit), and, for the AUC only,
masks that cover the whole image (``skipped_full_mask``: no negative pixels, so no
ROC curve). ``n`` is the number of images scored.

Quantus is called with ``normalise=False`` and ``abs=False`` (the maps already are
non-negative and in [0, 1]), ``softmax=False`` and no model: none of these metrics
runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.explain.base import METHOD_DEFAULT
from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.models.maps import average_ranks
from xbench.params import NoParams, P
from xbench.registry import METRICS

log = logging.getLogger(__name__)

#: the explainer name a metric falls back to when the context selects none (see :func:`explained`)


def quantus_version() -> str:
    try:
        return version("quantus")
    except PackageNotFoundError:  # pragma: no cover - quantus is a dependency
        return "unknown"


def quantus_scores(metric: Any, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-sample scores of a Quantus localisation ``metric`` on (N, H, W) ``maps`` and bool ``masks``.

    Calls the metric's ``evaluate_batch``, the scoring step of Quantus's ``__call__``, on all
    samples at once. ``__call__`` first runs ``general_preprocess``, whose
    ``assert_attributions`` builds a Python set of every attribution value, which takes far
    longer than the scores (BENCHMARKS.md, "Numbers behind the code"). Everything that
    preprocessing does for these metrics is a check xbench makes itself (shapes, binary non-empty
    masks, non-constant maps) or a step switched off (``normalise=False``; ``abs`` only on
    non-negative maps).
    :func:`quantus_call` runs the full ``__call__``; the tests check that both agree.
    """
    n = len(maps)
    scores = metric.evaluate_batch(
        x_batch=np.zeros((n, 1, *maps.shape[-2:]), dtype=np.float32),
        a_batch=np.ascontiguousarray(maps[:, None], dtype=np.float32),
        s_batch=np.ascontiguousarray(masks[:, None], dtype=bool),
    )
    return np.asarray(scores, dtype=np.float64)


def quantus_call(metric: Any, maps: np.ndarray, masks: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
    """Per-sample scores from Quantus's full ``metric(...)`` call: no model, ``softmax=False``."""
    n = len(maps)
    x = images if images is not None else np.zeros((n, 1, *maps.shape[-2:]), dtype=np.float32)
    scores = metric(
        model=None,
        x_batch=np.ascontiguousarray(x, dtype=np.float32),
        y_batch=np.zeros(n, dtype=np.int64),
        a_batch=np.ascontiguousarray(maps[:, None], dtype=np.float32),
        s_batch=np.ascontiguousarray(masks[:, None], dtype=bool),
        channel_first=True,
        explain_func=None,
        explain_func_kwargs=None,
        model_predict_kwargs=None,
        softmax=False,
        batch_size=max(n, 1),
    )
    return np.asarray(scores, dtype=np.float64)


def top_region(maps: Tensor, k: int, seed: int = 0) -> Tensor:
    """Bool (N, H, W): the ``k`` highest pixels of each map, ties broken by a fixed seeded permutation.

    Exactly ``k`` pixels per map, so the region's size never depends on ties (Grad-CAM's
    zeros, blocky random maps), and tied pixels are not taken by position (top-left first)
    but in the order of one random permutation of the pixels, the same for every map.
    """
    n, h, w = maps.shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(maps.device)
    flat = maps.reshape(n, h * w)[:, perm]
    kth = flat.topk(k, dim=1).values[:, -1:]
    above = flat > kth
    tied = flat == kth
    region = above | (tied & (tied.cumsum(1) <= k - above.sum(1, keepdim=True)))
    out = torch.empty_like(region)
    out[:, perm] = region
    return out.view(n, h, w)


def top_q_iou(maps: Tensor, masks: Tensor, q: float, seed: int = 0) -> Tensor:
    """(N,) IoU of each map's top-``q`` region (k = max(1, round(q·H·W)) pixels) with its bool mask."""
    k = top_k(q, maps.shape[-2:])
    region = top_region(maps, k, seed)
    masks = masks.reshape(region.shape)
    inter = (region & masks).flatten(1).sum(1).double()
    union = (region | masks).flatten(1).sum(1).double()
    return inter / union.clamp_min(1)


def top_k(fraction: float, size: tuple[int, int] | torch.Size) -> int:
    """The pixel count ``max(1, round(fraction · H · W))`` of a top-fraction region."""
    return max(1, round(fraction * int(size[0]) * int(size[1])))


# -- the metrics --------------------------------------------------------------------------------------
class _Localisation(Metric[P]):
    """Scores ``ctx.explanations()`` against the masks; subclasses define :meth:`scores`."""

    category = Category.LOCALIZATION
    direction = Direction.HIGHER
    requires_masks = True
    uses_explanations = True
    decimals = 3
    skip_full_masks: ClassVar[bool] = False

    def scores(self, maps: Tensor, masks: Tensor) -> np.ndarray:
        """Per-sample scores of (N, H, W) maps and bool masks (every mask non-empty, every map non-constant)."""
        raise NotImplementedError

    def record(self, maps: Tensor) -> dict[str, Any]:
        """Settings written into the result's params besides the metric's own."""
        return {}

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        ctx = explained(ctx)
        data = ctx.explain_data()
        maps = ctx.explanations()
        if maps is None or data.masks is None:
            return []
        masks = data.masks[:, 0].bool()
        flat_maps, flat_masks = maps.flatten(1), masks.flatten(1)
        empty = ~flat_masks.any(1)
        constant = flat_maps.amax(1) == flat_maps.amin(1)
        full = flat_masks.all(1) if self.skip_full_masks else torch.zeros_like(empty)
        keep = ~(empty | constant | full)
        params: dict[str, Any] = {
            **self.param_dict(),
            **self.record(maps),
            "skipped_empty_mask": int(empty.sum()),
            "skipped_constant_map": int((constant & ~empty).sum()),
        }
        if self.skip_full_masks:
            params["skipped_full_mask"] = int((full & ~empty & ~constant).sum())
        if ctx.explainer == METHOD_DEFAULT:
            params["explainer"] = METHOD_DEFAULT
        n = int(keep.sum())
        if n == 0:
            log.warning("%s: no image with a non-empty mask and a non-constant map; nothing to score", self.name)
            return []
        values = self.scores(maps[keep], masks[keep])
        if not np.isfinite(values).all():  # pragma: no cover - the filters above exclude every NaN case
            raise FloatingPointError(f"{self.name}: non-finite scores for {int((~np.isfinite(values)).sum())} images")
        return [MetricResult(float(values.mean()), n, params=params)]


class _QuantusLocalisation(_Localisation[P]):
    """A Quantus 0.6.0 localisation metric on precomputed maps."""

    quantus_class: ClassVar[str]

    def quantus_kwargs(self, maps: Tensor) -> dict[str, Any]:
        """The Quantus constructor's arguments (recorded in every result)."""
        return {"normalise": False, "abs": False}

    def build(self, maps: Tensor) -> Any:
        import quantus

        return getattr(quantus, self.quantus_class)(disable_warnings=True, **self.quantus_kwargs(maps))

    def record(self, maps: Tensor) -> dict[str, Any]:
        return {
            "implementation": f"quantus.{self.quantus_class}",
            "quantus_version": quantus_version(),
            "quantus_kwargs": self.quantus_kwargs(maps),
        }

    def scores(self, maps: Tensor, masks: Tensor) -> np.ndarray:
        return quantus_scores(self.build(maps), maps.numpy(), masks.numpy())


@METRICS.register("pointing_game")
class PointingGame(_QuantusLocalisation[NoParams]):
    """Fraction of images whose maximum lies on the object (Zhang et al., IJCV 2018)."""

    quantus_class = "PointingGame"
    label = "Pointing game"
    description = "fraction of images whose map maximum lies in the object mask (Quantus PointingGame)"

    def quantus_kwargs(self, maps: Tensor) -> dict[str, Any]:
        return {**super().quantus_kwargs(maps), "weighted": False}


@METRICS.register("attribution_localisation")
class AttributionLocalisation(_QuantusLocalisation[NoParams]):
    """Share of the map's mass inside the mask (Kohlbrenner et al., IJCNN 2020), unweighted."""

    quantus_class = "AttributionLocalisation"
    label = "Attribution loc."
    description = "relevance inside the mask / total relevance (Quantus AttributionLocalisation, unweighted)"

    def quantus_kwargs(self, maps: Tensor) -> dict[str, Any]:
        # abs=True is Quantus's default here (it prints a warning otherwise); a no-op on maps in [0, 1].
        return {"normalise": False, "abs": True, "weighted": False, "positive_attributions": False}


class TopKParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k_fraction: float = Field(
        0.05, gt=0, lt=1, description="k as a fraction of the image's pixels: k = max(1, round(k_fraction·H·W))"
    )


@METRICS.register("top_k_intersection")
class TopKIntersection(_QuantusLocalisation[TopKParams]):
    """Fraction of the map's k highest pixels inside the mask (Theiner et al., 2021)."""

    quantus_class = "TopKIntersection"
    label = "Top-k intersection"
    description = "fraction of the k = k_fraction·H·W highest pixels inside the mask (Quantus TopKIntersection)"
    Params = TopKParams

    def quantus_kwargs(self, maps: Tensor) -> dict[str, Any]:
        k = top_k(self.params.k_fraction, maps.shape[-2:])
        # Quantus asserts k < H·W.
        return {
            **super().quantus_kwargs(maps),
            "k": min(k, maps.shape[-2] * maps.shape[-1] - 1),
            "concept_influence": False,
        }


@METRICS.register("relevance_rank_accuracy")
class RelevanceRankAccuracy(_QuantusLocalisation[NoParams]):
    """Fraction of the |S| highest pixels inside the mask S (Arras et al., 2022)."""

    quantus_class = "RelevanceRankAccuracy"
    label = "Rel. rank acc."
    description = "fraction of the |S| highest pixels inside the mask S (Quantus RelevanceRankAccuracy)"


@METRICS.register("relevance_mass_accuracy")
class RelevanceMassAccuracy(_QuantusLocalisation[NoParams]):
    """Share of the map's mass inside the mask (Arras et al., 2022)."""

    quantus_class = "RelevanceMassAccuracy"
    label = "Rel. mass acc."
    description = "relevance inside the mask / total relevance (Quantus RelevanceMassAccuracy)"


def roc_auc(maps: Tensor, masks: Tensor) -> Tensor:
    """(N,) float64 ROC AUC of each flattened map as a score of its mask's pixels, batched (no per-image loop).

    The Mann–Whitney form of the area ``sklearn.metrics.roc_curve`` + ``auc`` compute (Quantus's
    ``AUC``): P(A_p > A_q) + ½·P(A_p = A_q) for p in S, q outside, i.e. (R_S − |S|(|S| + 1)/2) /
    (|S|·|S̄|) with R_S the sum of the mask pixels' ranks, tied values sharing their average rank
    (the trapezoid over a tied ROC segment is that half credit). Equal to scikit-learn's up to
    float64 round-off (its sum of trapezoids against one division here). Every mask must have pixels
    in and outside it.
    """
    values = maps.flatten(1).double()
    positive = masks.flatten(1).to(values.device).double()
    p = values.shape[1]
    ranks = average_ranks(values)  # 1-based, tied values sharing their average rank
    in_mask = positive.sum(1)
    rank_sum = (ranks * positive).sum(1)
    return (rank_sum - in_mask * (in_mask + 1) / 2) / (in_mask * (p - in_mask))


class LocalisationAUCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["torch", "quantus"] = Field(
        "torch", description="'torch': batched rank form (roc_auc), same value; 'quantus': quantus.AUC, per image"
    )


@METRICS.register("localisation_auc")
class LocalisationAUC(_QuantusLocalisation[LocalisationAUCParams]):
    """Area under the ROC curve of the map as a pixel classifier of the mask (Fawcett, 2006)."""

    quantus_class = "AUC"
    label = "Loc. AUC"
    description = "ROC AUC of the map's values separating mask from background pixels (Quantus AUC)"
    skip_full_masks = True
    Params = LocalisationAUCParams

    def record(self, maps: Tensor) -> dict[str, Any]:
        settings = super().record(maps)
        if self.params.backend == "torch":
            settings["implementation"] = "xbench.metrics.localization.roc_auc (torch, batched) = quantus.AUC"
        return settings

    def scores(self, maps: Tensor, masks: Tensor) -> np.ndarray:
        if self.params.backend == "torch":
            return roc_auc(maps, masks).cpu().numpy()
        # Quantus's AUC integrates with sklearn.metrics.auc, which uses np.trapezoid in the
        # installed scikit-learn (1.9) and so runs on numpy 2.4 as it is; older scikit-learn
        # releases call np.trapz, removed in numpy 2.4: the shim covers them.
        from xbench.metrics.quantus_compat import numpy_trapz_shim

        with numpy_trapz_shim():
            return super().scores(maps, masks)


class TopQParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: float = Field(0.1, gt=0, le=1, description="the region is the top q of pixels: k = max(1, round(q·H·W))")


@METRICS.register("top_q_iou")
class TopQIoU(_Localisation[TopQParams]):
    """IoU of the map's top-q region with the mask; xbench's own (Quantus has no IoU metric)."""

    label = "Top-q IoU"
    description = "IoU of the map's top q·H·W pixels with the object mask (own implementation)"
    Params = TopQParams

    def record(self, maps: Tensor) -> dict[str, Any]:
        return {
            "implementation": "xbench",
            "k": top_k(self.params.q, maps.shape[-2:]),
            "tie_break": "seeded permutation (seed 0)",
        }

    def scores(self, maps: Tensor, masks: Tensor) -> np.ndarray:
        return top_q_iou(maps, masks, self.params.q).numpy()


#: every localisation metric by name (tests and docs)
LOCALISATION_METRICS: dict[str, Callable[..., _Localisation]] = {
    "pointing_game": PointingGame,
    "attribution_localisation": AttributionLocalisation,
    "top_k_intersection": TopKIntersection,
    "relevance_rank_accuracy": RelevanceRankAccuracy,
    "relevance_mass_accuracy": RelevanceMassAccuracy,
    "localisation_auc": LocalisationAUC,
    "top_q_iou": TopQIoU,
}
