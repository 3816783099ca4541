"""Per-class binary sub-networks: their size, and their precision and recall.

A method whose model has binary sub-networks (Coded ResNeXt: class k's classifier keeps
only the branches its codeword activates, and the score z_k) exposes
:class:`~xbench.models.contract.BinarySubnetworks`; for every other model these metrics return no values.

Protocol of the paper (Avranas & Kountouris, NeurIPS 2022, Sec. 5), for each class k:

* the threshold τ_k maximises F1 of "score ≥ τ" on training images: the positives of class
  k and 9 negatives per positive drawn from the other classes (seeded). Among the training
  scores sorted in decreasing order, τ_k is the midpoint below the cut with the best F1;
* precision and recall at τ_k are measured on the test split, again with 9 negatives per
  positive. Negatives are drawn without replacement when there are enough of them, with
  replacement otherwise (fewer than 10 classes), so the class ratio is always 1:9.

Values are means over the classes; per-class values and thresholds travel in ``params``.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.data.base import ImageSplit
from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.metrics.efficiency import count_parameters
from xbench.metrics.latency import LatencyParams, spin_up, time_calls, timing_setup
from xbench.models.contract import BinarySubnetworks, SharedBinaryFront
from xbench.params import NoParams
from xbench.registry import METRICS


def sample_pairs(labels: Tensor, num_classes: int, negatives_per_positive: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(image_index, class)`` pairs: every positive of each class and ``r`` negatives per positive.

    Returns (index, cls, positive) as three aligned 1-D tensors, grouped by class.
    """
    g = torch.Generator().manual_seed(seed)
    index, cls = [], []
    for k in range(num_classes):  # a loop over classes; everything per sample is batched
        pos = (labels == k).nonzero().flatten()
        neg = (labels != k).nonzero().flatten()
        want = negatives_per_positive * len(pos)
        if len(pos) == 0 or len(neg) == 0:
            continue
        if want <= len(neg):
            picked = neg[torch.randperm(len(neg), generator=g)[:want]]
        else:
            picked = neg[torch.randint(len(neg), (want,), generator=g)]
        both = torch.cat([pos, picked])
        index.append(both)
        cls.append(torch.full_like(both, k))
    if not index:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(index), torch.cat(cls)


@torch.no_grad()
def binary_scores(
    model: BinarySubnetworks, data: ImageSplit, index: Tensor, cls: Tensor, device: torch.device, batch_size: int
) -> Tensor:
    """Score of class ``cls[i]``'s extracted binary classifier on image ``index[i]``.

    Each class's sub-network is extracted once and run on that class's pairs in batches, so
    the cost is that of the sub-networks, not of the full model. A model whose classifiers all
    start with the same modules (``binary_front``: Coded ResNeXt's stem and plain first stage)
    runs those once per image, not once per pair (each image is in about 10 pairs).
    """
    if isinstance(model, SharedBinaryFront):
        return _scores_from_front(model, data, index, cls, device, batch_size)
    scores = torch.zeros(len(index))
    for k in cls.unique().tolist():  # a loop over classes; images are batched
        rows = (cls == k).nonzero().flatten()
        net = model.binary_classifier(int(k)).to(device).eval()
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            scores[part] = net(data.images[index[part]].to(device)).float().cpu()
    return scores


def best_f1_threshold(scores: Tensor, positive: Tensor) -> float:
    """Threshold τ maximising F1 of ``scores ≥ τ``; the midpoint between the last kept and the next score.

    With the scores sorted in decreasing order, keeping the top j gives TP_j positives and
    F1_j = 2·TP_j / (P + j); only cuts between distinct scores are allowed.
    """
    order = scores.argsort(descending=True)
    s, pos = scores[order], positive[order].double()
    tp = pos.cumsum(0)
    j = torch.arange(1, len(s) + 1, dtype=torch.double)
    f1 = 2 * tp / (pos.sum() + j)
    distinct = torch.ones(len(s), dtype=torch.bool)
    distinct[:-1] = s[:-1] != s[1:]
    f1[~distinct] = -1
    best = int(f1.argmax())
    return float(s[best]) if best == len(s) - 1 else float((s[best] + s[best + 1]) / 2)


def precision_recall(scores: Tensor, positive: Tensor, threshold: float) -> tuple[float, float]:
    """Precision and recall of ``scores ≥ threshold`` (precision 0 when nothing is predicted positive)."""
    predicted = scores >= threshold
    tp = float((predicted & positive).sum())
    return tp / max(float(predicted.sum()), 1.0), tp / max(float(positive.sum()), 1.0)


class BinaryEvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_limit: int = Field(
        2000, gt=0, le=10_000_000, description="training images (seeded subset) that set the thresholds"
    )
    # Every (image, class) pair runs a class-restricted network: K x 10 passes per positive,
    # so the full 10,000-image test set costs as much as ten epochs of inference on CPU.
    test_limit: int | None = Field(2000, gt=0, le=10_000_000, description="test images (seeded subset); null = all")
    negatives_per_positive: int = Field(9, gt=0, le=1000)
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the training subset and the negative sampling")


def _scores_from_front(
    model: SharedBinaryFront, data: ImageSplit, index: Tensor, cls: Tensor, device: torch.device, batch_size: int
) -> Tensor:
    """:func:`binary_scores` with the shared front run once per image, in chunks of ``batch_size`` images."""
    front, stages = model.binary_front()
    front = copy.deepcopy(front).to(device).eval()  # eval mode without switching the model's own modules
    nets: dict[int, Any] = {k: model.binary_classifier(k).to(device).eval() for k in cls.unique().tolist()}
    scores = torch.zeros(len(index))
    images = index.unique()
    row_of = torch.full((len(data),), -1, dtype=torch.long)
    for s in range(0, len(images), batch_size):
        chunk = images[s : s + batch_size]
        h = front(data.images[chunk].to(device))
        row_of[chunk] = torch.arange(len(chunk))
        pairs = torch.isin(index, chunk)
        for k, net in nets.items():
            rows = (pairs & (cls == k)).nonzero().flatten()
            if len(rows):
                scores[rows] = net.forward_from(h[row_of[index[rows]].to(device)], stages).float().cpu()
    return scores


def evaluate_binary(ctx: EvalContext, params: BinaryEvalParams) -> dict[str, Any] | None:
    """Per-class thresholds (train) and precision/recall (test); memoised per context and params."""
    model = ctx.model
    if not isinstance(model, BinarySubnetworks):
        return None
    # binary_precision and binary_recall share one evaluation.
    return ctx.memo(f"binary:{params.model_dump_json()}", lambda: _evaluate_binary(ctx, model, params))


def _evaluate_binary(ctx: EvalContext, model: BinarySubnetworks, params: BinaryEvalParams) -> dict[str, Any]:
    if ctx.train is None:
        raise ValueError("binary classifiers need the training split to set their thresholds")
    ctx.model.eval()
    train = ctx.train.subset(params.train_limit, seed=params.seed)
    r, k = params.negatives_per_positive, model.num_classes
    splits = {}
    test = ctx.data.subset(params.test_limit, seed=params.seed)
    for name, data in (("train", train), ("test", test)):
        index, cls = sample_pairs(data.labels, k, r, params.seed)
        scores = binary_scores(model, data, index, cls, ctx.device, ctx.batch_size)
        splits[name] = (scores, cls, data.labels[index] == cls)
    classes, thresholds, precision, recall = [], [], [], []
    for c in range(k):  # per class: vectorised inside
        tr, te = splits["train"][1] == c, splits["test"][1] == c
        if not (splits["train"][2][tr].any() and splits["test"][2][te].any()):
            continue
        tau = best_f1_threshold(splits["train"][0][tr], splits["train"][2][tr])
        p, rec = precision_recall(splits["test"][0][te], splits["test"][2][te], tau)
        classes.append(c)
        thresholds.append(tau)
        precision.append(p)
        recall.append(rec)
    result = {
        "classes": classes,
        "thresholds": thresholds,
        "precision": precision,
        "recall": recall,
        "n_test_pairs": len(splits["test"][0]),
        "n_train_pairs": len(splits["train"][0]),
    }
    return result


class _BinaryMetric(Metric[BinaryEvalParams]):
    requires_exits = True  # no values for models without binary sub-networks
    Params = BinaryEvalParams
    field: ClassVar[str]

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        res = evaluate_binary(ctx, self.params)
        if res is None or not res["classes"]:
            return []
        values = res[self.field]
        params = {
            **self.params.model_dump(),
            "threshold": "max F1 on training pairs",
            "classes": res["classes"],
            "per_class": values,
            "thresholds": res["thresholds"],
        }
        return [MetricResult(sum(values) / len(values), res["n_test_pairs"], params=params)]


@METRICS.register("binary_precision")
class BinaryPrecision(_BinaryMetric):
    """Mean over classes of the binary classifiers' test precision at 9 negatives per positive."""

    category = Category.ACCURACY
    direction = Direction.HIGHER
    label = "Binary precision"
    unit = "%"
    scale = 100.0
    description = "per-class binary sub-network precision (1 positive : 9 negatives, max-F1 train threshold)"
    field = "precision"


@METRICS.register("binary_recall")
class BinaryRecall(_BinaryMetric):
    """Mean over classes of the binary classifiers' test recall at their training max-F1 thresholds."""

    category = Category.ACCURACY
    direction = Direction.HIGHER
    label = "Binary recall"
    unit = "%"
    scale = 100.0
    description = "per-class binary sub-network recall (max-F1 train threshold)"
    field = "recall"


@METRICS.register("binary_param_fraction")
class BinaryParamFraction(Metric[NoParams]):
    """Fraction of the model's parameters that class k's binary sub-network keeps (mean over k)."""

    category = Category.EFFICIENCY
    direction = Direction.LOWER
    requires_exits = True  # no values for models without binary sub-networks
    label = "Binary params"
    unit = "%"
    scale = 100.0
    decimals = 1
    description = "parameters of a class's binary sub-network / the full model's, counted on the extracted network"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        model = ctx.model
        if not isinstance(model, BinarySubnetworks):
            return []
        total = count_parameters(ctx.model)
        kept = [count_parameters(model.binary_classifier(k)) for k in range(model.num_classes)]
        fractions = [n / total for n in kept]
        params = {
            "per_class": fractions,
            "parameters_kept": kept,
            "parameters_total": total,
            "convention": "all parameters of the extracted sub-network / all parameters of the model",
        }
        return [MetricResult(sum(fractions) / len(fractions), model.num_classes, params=params)]


def binary_timings(ctx: EvalContext, params: LatencyParams) -> dict[str, Any]:
    """Batch-1 timings of the full model and of every class's extracted binary sub-network.

    Same protocol as :mod:`xbench.metrics.latency`: the same ``repeats`` test images in the
    same order for every network, ``warmup`` untimed calls first, CUDA synchronised around
    each call, one process. Memoised: both binary latency metrics share one measurement.
    """
    model = ctx.model

    def measure() -> dict[str, Any]:
        assert isinstance(model, BinarySubnetworks)
        device = ctx.device
        n = min(params.repeats, len(ctx.data))
        singles = [ctx.data.images[i : i + 1].to(device) for i in range(n)]
        spin_up(lambda x: model(x).logits, singles[0], params.spin_up_s, device)
        full = time_calls(lambda x: model(x).logits, singles, params.warmup, device)
        per_class = []
        for k in range(model.num_classes):
            sub = model.binary_classifier(k).to(device).eval()
            per_class.append(1e3 * statistics.median(time_calls(sub, singles, params.warmup, device)))
        return {
            "full_p50_ms": 1e3 * statistics.median(full),
            "per_class_p50_ms": per_class,
            **timing_setup(device, n, params.warmup, params.spin_up_s, model),
        }

    return ctx.memo("binary_latency:" + params.model_dump_json(), measure)


class _BinaryLatency(Metric[LatencyParams]):
    category = Category.EFFICIENCY
    requires_exits = True  # no values for models without binary sub-networks
    measures_time = True
    Params = LatencyParams


@METRICS.register("binary_latency")
class BinaryLatency(_BinaryLatency):
    """Median ms per image at batch 1 of a class's extracted binary sub-network (mean over classes)."""

    direction = Direction.LOWER
    label = "Binary latency"
    unit = "ms"
    decimals = 3
    description = "measured ms per image at batch 1 (p50) of class k's extracted sub-network, mean over k"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        if not isinstance(ctx.model, BinarySubnetworks):
            return []
        t = binary_timings(ctx, self.params)
        per_class = t["per_class_p50_ms"]
        return [MetricResult(sum(per_class) / len(per_class), t["images"], params=t)]


@METRICS.register("binary_speedup")
class BinarySpeedup(_BinaryLatency):
    """The full model's batch-1 time / a binary sub-network's (mean over classes), same images, same process."""

    direction = Direction.HIGHER
    label = "Binary speedup"
    unit = "×"
    decimals = 2
    description = "full-model p50 ms / mean over classes of the binary sub-network's p50 ms, batch 1"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        if not isinstance(ctx.model, BinarySubnetworks):
            return []
        t = binary_timings(ctx, self.params)
        per_class = t["per_class_p50_ms"]
        return [MetricResult(t["full_p50_ms"] / (sum(per_class) / len(per_class)), t["images"], params=t)]
