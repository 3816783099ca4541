"""What every faithfulness metric shares: the images it scores, the maps it skips, what it records.

A metric scores the first ``n`` explained images (``ctx.explain_data()``, a seeded subset) with
the current explainer's maps of the class each map explains (``ctx.explain_targets()``: the
model's prediction); :class:`FaithfulnessMetric` leaves out constant maps and undefined scores,
averages the rest and records the resolved settings. Subclasses define only
:meth:`FaithfulnessMetric.scores`.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.explain.base import METHOD_DEFAULT
from xbench.metadata import Category
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.metrics.faithfulness.kernels.paths import class_scores

log = logging.getLogger(__name__)

#: The ``implementation`` recorded by the metrics xbench implements itself.
OWN = "own implementation"


class FaithfulnessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(256, ge=1, le=10_000_000, description="score the first n explained images (a seeded subset)")


#: The params of a faithfulness metric.
FP = TypeVar("FP", bound=FaithfulnessParams)


class FaithfulnessMetric(Metric[FP]):
    """Scores the first ``n`` explained images; subclasses define :meth:`scores`."""

    category = Category.FAITHFULNESS
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
