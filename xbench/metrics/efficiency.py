"""Model size and counted operations.

Convention: ``flops`` counts **multiply-accumulates** (MACs), as fvcore does
(fvcore calls one fused multiply-add one "flop"); torch's ``FlopCounterMode``
counts two per MAC. The leaderboard's label says "MACs" to keep that explicit.
Operators fvcore does not count are listed in each record's ``params``.

fvcore traces the model and counts only what the final logits depend on, so for an
early-exit model ``flops`` is the full path without the early-exit heads (what one
would deploy without exits); :mod:`xbench.metrics.exits` counts the cost of each exit.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, nn

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, LogitsOnly
from xbench.params import NoParams
from xbench.registry import METRICS


def count_parameters(model: nn.Module) -> int:
    """All parameters of the model, trainable or frozen (what inference needs)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(module: nn.Module, example: Tensor) -> tuple[int, dict[str, int]]:
    """Multiply-accumulates of ``module(example)`` with fvcore, and the operators it skipped.

    ``module`` must return a tensor; wrap xbench models in :class:`LogitsOnly`.
    """
    with warnings.catch_warnings():
        # fvcore uses torch.jit, which torch now marks deprecated; its counts are unaffected.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module.eval(), example)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        # fvcore logs each skipped op at WARNING; they are recorded in params instead.
        logger = logging.getLogger("fvcore.nn.jit_analysis")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            total = int(analysis.total())
        finally:
            logger.setLevel(level)
    return total, dict(analysis.unsupported_ops())


def count_torch_flops(module: nn.Module, example: Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of ``module(example)`` by ``torch.utils.flop_counter.FlopCounterMode``, and per operator.

    Torch counts a multiply-add as two FLOPs, so this is about twice :func:`count_macs`; it
    counts only operators it has formulas for (convolutions, matrix products, attention), so
    batch norm, activations and pooling, which fvcore skips too, are absent from both.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module.eval()(example)
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


@METRICS.register("params")
class Params(Metric[NoParams]):
    """Number of parameters."""

    category = Category.EFFICIENCY
    direction = Direction.LOWER
    label = "Params"
    unit = "M"
    scale = 1e-6
    decimals = 3
    description = "number of parameters (millions)"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        return [MetricResult(float(count_parameters(ctx.model)))]


@METRICS.register("flops")
class Flops(Metric[NoParams]):
    """Multiply-accumulates of one full forward pass of one image (fvcore)."""

    category = Category.EFFICIENCY
    direction = Direction.LOWER
    label = "MACs"
    unit = "M"
    scale = 1e-6
    decimals = 2
    description = "multiply-accumulates per image, full network (fvcore; 1 MAC = 1 'flop')"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        x = ctx.example_input(1)
        total, skipped = count_macs(LogitsOnly(ctx.model), x)
        torch_flops, torch_ops = count_torch_flops(LogitsOnly(ctx.model), x)
        params = {
            "convention": "multiply-accumulates (fvcore)",
            "input_shape": list(x.shape),
            "skipped_ops": skipped,
            # Cross-check: torch's counter, which counts 2 FLOPs per multiply-add.
            "torch_flop_counter": {"flops": torch_flops, "macs": torch_flops / 2, "ops": torch_ops},
        }
        return [MetricResult(float(total), 1, params=params)]
