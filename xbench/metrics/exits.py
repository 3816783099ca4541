"""Early-exit metrics: accuracy under the exit policy, where samples leave, and the cost.

For a model without exits, the policy is "always the final exit": its policy accuracy
is its top-1, its expected MACs are its MACs and its speedup is 1, so the
early-exit rows compare against complete baseline rows.

Cost convention (multiply-accumulates, fvcore): reaching exit ``i`` costs the
backbone up to that exit plus the heads of exits ``0..i`` (the policy evaluates each
head it passes). Early-exit models (:class:`~xbench.models.contract.EarlyExitModel`) provide
``num_exits`` and ``forward_exit(x, i)``, which returns the logits of exits ``0..i`` and runs
nothing past exit ``i``. The expected cost is Σ_i f_i · cost_i with f_i the fraction of test samples leaving at
exit i. ``flops_speedup`` divides the cost of the network's full
path *without* early-exit heads (backbone + final head, what one would deploy without
exits) by the expected cost, so head overhead counts against the speedup.
"""

from __future__ import annotations

from torch import Tensor, nn

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, LogitsOnly
from xbench.metrics.efficiency import count_macs
from xbench.models.contract import EarlyExitModel
from xbench.models.exits import ExitPolicy, policy_predictions
from xbench.params import NoParams
from xbench.registry import METRICS


def _policy_params(policy: ExitPolicy | None) -> dict[str, object]:
    if policy is None:
        return {"policy": "final exit only"}
    return {
        "thresholds": policy.thresholds,
        "thresholds_from": policy.source,
        "max_accuracy_drop": policy.max_accuracy_drop,
    }


class _ExitForward(nn.Module):
    def __init__(self, model: nn.Module, i: int) -> None:
        super().__init__()
        self.model, self.i = model, i

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.forward_exit(x, self.i))  # type: ignore[operator]


def exit_costs(model: nn.Module, example: Tensor) -> tuple[list[int], int]:
    """MACs to answer at each exit, and of the full path without early-exit heads.

    The full path is what the final logits depend on: fvcore's trace drops the early heads,
    whose outputs the logits do not use.
    """
    full = count_macs(LogitsOnly(model), example)[0]
    n = int(model.num_exits) if isinstance(model, EarlyExitModel) else 1
    if n == 1:
        return [full], full
    return [count_macs(_ExitForward(model, i), example)[0] for i in range(n)], full


class _PolicyMetric(Metric[NoParams]):
    def policy(self, ctx: EvalContext) -> tuple[ExitPolicy | None, Tensor, Tensor]:
        """``(policy, predictions, exit_index)`` on the test split."""
        pred = ctx.predictions()
        policy = ctx.exit_policy()
        if policy is None:
            return None, pred.logits.argmax(dim=1), pred.labels.new_zeros(len(pred.labels))
        preds, idx = policy_predictions(pred.exit_logits, policy.thresholds)
        return policy, preds, idx


@METRICS.register("policy_top1")
class PolicyTop1(_PolicyMetric):
    """Top-1 accuracy when each sample leaves at the exit the policy picks."""

    category = Category.ACCURACY
    direction = Direction.HIGHER
    label = "Top-1 (policy)"
    unit = "%"
    scale = 100.0
    description = "top-1 accuracy under the method's early-exit policy"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        policy, preds, _ = self.policy(ctx)
        labels = ctx.predictions().labels
        correct = int((preds == labels).sum())
        params = _policy_params(policy)
        if policy is not None:
            params["curve"] = tradeoff_curve(ctx)
        return [MetricResult(correct / len(labels), len(labels), params=params)]


#: Shared thresholds of the accuracy/cost curve, from 0 (every sample leaves at the first exit) to
#: 1.0 (every sample reaches the final exit). The low end matters for models whose early exits are
#: rarely confident, e.g. Coded ResNeXt's decoding (its calibrated thresholds: BENCHMARKS.md,
#: "Numbers behind the code").
CURVE_THRESHOLDS = (
    0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0,
)  # fmt: skip


def tradeoff_curve(ctx: EvalContext) -> list[dict[str, float]]:
    """Test accuracy and expected MACs of the policy at each shared threshold in ``CURVE_THRESHOLDS``.

    A description of the trade-off on the test split (for plots), not a calibrated operating point.
    """
    pred = ctx.predictions()
    costs, _ = ctx.memo("exit_costs", lambda: exit_costs(ctx.model, ctx.example_input(1)))
    curve = []
    for t in CURVE_THRESHOLDS:
        preds, idx = policy_predictions(pred.exit_logits, [t] * (len(pred.exit_logits) - 1))
        share = idx.bincount(minlength=len(costs)).double() / len(idx)
        curve.append(
            {
                "threshold": t,
                "top1": float((preds == pred.labels).double().mean()),
                "expected_macs": float(sum(float(s) * c for s, c in zip(share, costs, strict=True))),
            }
        )
    return curve


@METRICS.register("exit_fraction")
class ExitFraction(_PolicyMetric):
    """Fraction of test samples leaving at each exit (one value per exit)."""

    category = Category.EFFICIENCY
    direction = Direction.NONE
    label = "Exit share"
    unit = "%"
    scale = 100.0
    decimals = 1
    description = "fraction of test samples leaving at each exit under the policy"
    requires_exits = True

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        policy, _, idx = self.policy(ctx)
        n_exits = len(ctx.predictions().exit_logits)
        if n_exits == 0:
            return []
        counts = idx.bincount(minlength=n_exits).tolist()
        return [
            MetricResult(c / len(idx), len(idx), exit=i, params=_policy_params(policy)) for i, c in enumerate(counts)
        ]


class _CostMetric(_PolicyMetric):
    category = Category.EFFICIENCY

    def costs(self, ctx: EvalContext) -> tuple[float, int, dict[str, object]]:
        """``(expected MACs, full-path MACs, params)``."""
        policy, _, idx = self.policy(ctx)
        # Tracing every exit is the slow part; expected_flops and flops_speedup share it.
        costs, full = ctx.memo("exit_costs", lambda: exit_costs(ctx.model, ctx.example_input(1)))
        share = idx.bincount(minlength=len(costs)).double() / len(idx)
        expected = float(sum(float(s) * c for s, c in zip(share, costs, strict=True)))
        params = {
            **_policy_params(policy),
            "exit_macs": costs,
            "full_macs": full,
            "convention": "multiply-accumulates (fvcore)",
        }
        return expected, full, params


@METRICS.register("expected_flops")
class ExpectedFlops(_CostMetric):
    """Expected multiply-accumulates per image under the exit policy."""

    direction = Direction.LOWER
    label = "E[MACs]"
    unit = "M"
    scale = 1e-6
    description = "expected multiply-accumulates per image under the exit policy (fvcore)"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        expected, _, params = self.costs(ctx)
        return [MetricResult(expected, len(ctx.data), params=params)]


@METRICS.register("flops_speedup")
class FlopsSpeedup(_CostMetric):
    """Full-path MACs (no exit heads) divided by expected MACs under the policy."""

    direction = Direction.HIGHER
    label = "Speedup (MACs)"
    unit = "×"
    decimals = 2
    description = "MACs of the full network without exits / expected MACs under the exit policy"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        expected, full, params = self.costs(ctx)
        return [MetricResult(full / expected, len(ctx.data), params=params)]
