"""The faithfulness metrics xbench implements itself: ROAD, IROF, AD/IC and RISE's insertion and deletion.

``road`` and ``irof`` follow Quantus's definitions with faster kernels (:mod:`.kernels.road`,
:mod:`.kernels.irof`; tested against Quantus where it runs); Quantus 0.6.0 has no AD/IC, insertion
or deletion (PixelFlipping is deletion without the unperturbed point). Forward passes that do
not depend on the map (the unperturbed images, the all-baseline canvas, the segments) are
computed once per cell and shared by every explainer (``ctx.memo``).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from xbench.metadata import Direction
from xbench.metrics.context import EvalContext
from xbench.metrics.faithfulness.base import OWN, FaithfulnessMetric, FaithfulnessParams, originals
from xbench.metrics.faithfulness.kernels.irof import irof_scores, slic_segments
from xbench.metrics.faithfulness.kernels.paths import (
    blurred,
    class_scores,
    curve_auc,
    drop_and_increase,
    keep_mask,
    perturbation_curves,
    rank_pixels,
    ranks_of,
)
from xbench.metrics.faithfulness.kernels.road import road_scores
from xbench.metrics.quantus_compat import QUANTUS_VERSION
from xbench.registry import METRICS


class RoadParams(FaithfulnessParams):
    percentages: list[float] = Field(
        [10, 30, 50, 70, 90], min_length=1, max_length=1000, description="% of pixels removed (MoRF)"
    )
    noise: float = Field(0.01, ge=0, description="std of the Gaussian noise added to imputed pixels (ROAD's 0.01)")

    @field_validator("percentages")
    @classmethod
    def _percent(cls, v: list[float]) -> list[float]:
        if any(not 0 < p < 100 for p in v):
            raise ValueError(f"percentages must lie in (0, 100), got {v}")
        return v


@METRICS.register("road")
class Road(FaithfulnessMetric[RoadParams]):
    """ROAD (MoRF): how often the prediction survives imputing the most relevant pixels."""

    direction = Direction.LOWER
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
    n_segments: int = Field(
        16, ge=2, le=1_000_000, description="SLIC's target number of superpixels (Quantus: slic's 100)"
    )
    compactness: float = Field(10.0, gt=0, description="SLIC compactness (slic's and Quantus's 10)")
    slic_zero: bool = Field(True, description="SLICO: adapt the compactness per segment (see the class doc)")
    baseline: float | Literal["mean"] = Field(
        "mean", description="value removed segments take; 'mean': the evaluated images' mean pixel value"
    )
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


@METRICS.register("irof")
class Irof(FaithfulnessMetric[IrofParams]):
    """IROF: area over the class-probability curve as superpixels are removed, most relevant first.

    Segments come from SLICO (``slic_zero``) by default: with [0, 1] grey images SLIC's fixed
    compactness 10 (Quantus's call) outweighs every intensity difference and cuts a square grid,
    and with colour images (SLIC works in Lab) it can merge a 24-px image into 1–4 segments when 16
    are asked for; SLICO adapts the compactness per segment and gives the requested count in both.
    Images with fewer than two segments have no curve and are counted as undefined.
    """

    direction = Direction.HIGHER
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


class _AdIc(FaithfulnessMetric[AdIcParams]):
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
    direction = Direction.LOWER
    label = "AD"
    description = "average drop (TAME/Grad-CAM++): mean max(0, Y−O)/Y, O on the image × the map's top pixels"


@METRICS.register("increase_in_confidence")
class IncreaseInConfidence(_AdIc):
    """IC = mean 1[O > Y]: how often the map's top pixels alone raise the confidence (higher is better)."""

    column = 1
    direction = Direction.HIGHER
    label = "IC"
    description = "increase in confidence (TAME/Grad-CAM++): fraction of images with O > Y"


class InsertionDeletionParams(FaithfulnessParams):
    steps: int = Field(
        16, ge=2, le=10_000, description="pixels change in this many equal steps (the curve has steps + 1 points)"
    )
    softmax: bool = Field(True, description="probabilities (RISE) or logits")


class InsertionParams(InsertionDeletionParams):
    baseline: Literal["blur", "zero"] = Field("blur", description="the canvas pixels are inserted into")
    blur_sigma: float = Field(1 / 16, gt=0, description="Gaussian σ of the blurred canvas, as a fraction of the side")


class DeletionParams(InsertionDeletionParams):
    baseline: float = Field(0.0, description="value deleted pixels take (0: black)")


#: The params of an insertion or deletion metric.
ID = TypeVar("ID", bound=InsertionDeletionParams)


class _InsertionDeletion(FaithfulnessMetric[ID]):
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
    direction = Direction.HIGHER
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
    direction = Direction.LOWER
    label = "Deletion AUC"
    description = "RISE deletion: AUC of p(class) as pixels, most relevant first, are set to 0 (lower better)"
    Params = DeletionParams

    def canvas(self, images: Tensor) -> Tensor:
        p = self.params
        return torch.full_like(images, p.baseline)
