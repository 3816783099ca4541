"""Top-k accuracy, overall and at each early exit."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.params import NoParams
from xbench.registry import METRICS


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (k capped at K)."""
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return int(hit.sum()) / len(labels)  # exact in float64, no float32 mean


class _TopK(Metric[NoParams]):
    k: ClassVar[int]
    per_exit: ClassVar[bool] = True
    category = Category.ACCURACY
    direction = Direction.HIGHER
    unit = "%"
    scale = 100.0

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        pred = ctx.predictions()
        k = min(self.k, pred.logits.shape[1])
        n = len(pred.labels)
        results = [MetricResult(topk_accuracy(pred.logits, pred.labels, k), n, params={"k": k})]
        # Early-exit models also report each exit's accuracy (the final exit is the model's logits).
        for i, logits in enumerate(pred.exit_logits if self.per_exit else []):
            results.append(MetricResult(topk_accuracy(logits, pred.labels, k), n, exit=i, params={"k": k}))
        return results


@METRICS.register("top1")
class Top1(_TopK):
    """Top-1 accuracy on the test split."""

    k = 1
    label = "Top-1"
    description = "top-1 accuracy (per exit too, for early-exit models)"


@METRICS.register("top5")
class Top5(_TopK):
    """Top-5 accuracy (top-K when there are fewer than 5 classes)."""

    k = 5
    per_exit = False
    label = "Top-5"
    description = "top-5 accuracy, final exit (k capped at the number of classes)"
