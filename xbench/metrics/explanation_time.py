"""What a map costs: milliseconds per explanation map, measured alone like latency.

TAME's claim is one forward pass per map, against Score-CAM's one pass per channel and RISE's
thousands of masked images; this metric puts the numbers side by side. It times one call of the
explainer on the first ``images`` explained test images (the suite's evaluation batch size by
default: the batch the maps are computed in), after one untimed call on two images that pays
for lazy set-up (library hooks, kernels), and reports the median over ``repeats`` calls divided
by the number of images. Like the latency metrics it ``measures_time``: the driver runs it in the
timing phase, one cell at a time, so no other cell shares the cores, and on CUDA every call is
synchronised before the clock stops.
"""

from __future__ import annotations

import statistics
import time

from pydantic import BaseModel, ConfigDict, Field

from xbench.explain.base import METHOD_DEFAULT
from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.metrics.latency import _sync, timing_setup
from xbench.registry import METRICS


class ExplanationTimeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: int | None = Field(
        None, ge=1, le=100_000, description="images per timed call; null: the suite's evaluation batch size"
    )
    repeats: int = Field(1, ge=1, le=100, description="timed calls (the median is reported)")


@METRICS.register("explanation_time")
class ExplanationTime(Metric[ExplanationTimeParams]):
    """Milliseconds per map of the current explainer at the evaluation batch size."""

    category = Category.EFFICIENCY
    direction = Direction.LOWER
    uses_explanations = True
    measures_time = True
    label = "Time per map"
    unit = "ms"
    decimals = 2
    description = "ms per explanation map at the evaluation batch size, timed alone (one call after a warm-up)"
    Params = ExplanationTimeParams

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        ctx = explained(ctx)  # a context without a suite explainer times the method's default maps
        explainer = ctx.explainers[ctx.explainer or METHOD_DEFAULT]
        data = ctx.explain_data()
        n = min(self.params.images or ctx.batch_size, len(data))
        x = data.images[:n].to(ctx.device)
        targets = ctx.explain_targets()[:n].to(ctx.device)
        model = ctx.model.eval()
        explainer.explain(ctx.method, model, x[:2], targets[:2], ctx.seed)  # lazy set-up, untimed
        _sync(ctx.device)
        times = []
        for _ in range(self.params.repeats):
            start = time.perf_counter()
            maps = explainer.explain(ctx.method, model, x, targets, ctx.seed)
            _sync(ctx.device)
            times.append(time.perf_counter() - start)
            del maps
        ms = 1e3 * statistics.median(times) / n
        setup = timing_setup(ctx.device, n, 1, 0.0, model)
        return [MetricResult(ms, n=n, params={"setup": setup})]
