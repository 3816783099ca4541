"""Attention consistency: how closely each early exit's map agrees with the final exit's.

For every test image, the maps of all exits are computed for one class, the final
exit's prediction, at the input resolution (see the method's ``exit_maps``). For
exit ``i`` the value is the mean over images of cos(A_i, A_K) = ⟨A_i, A_K⟩ /
(‖A_i‖·‖A_K‖) on the flattened maps. Methods without exits are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xbench.engine.evaluate import EvalContext
from xbench.metrics.base import Metric, MetricResult
from xbench.registry import METRICS


@METRICS.register("attention_consistency")
class AttentionConsistency(Metric):
    """Mean cosine similarity of each early exit's attention map with the final exit's."""

    category = "consistency"
    higher_is_better = True
    requires_exits = True
    label = "Attn. consistency"
    decimals = 3
    description = "cosine similarity of each early exit's attention map to the final exit's (per exit)"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        target_all = ctx.predictions().logits.argmax(dim=1)
        sums: torch.Tensor | None = None
        n = len(ctx.data)
        for s in range(0, n, ctx.batch_size):
            x = ctx.data.images[s : s + ctx.batch_size].to(ctx.device)
            maps = ctx.method.exit_maps(ctx.model, x, target_all[s : s + ctx.batch_size].to(ctx.device))
            if maps is None or len(maps) < 2:
                return []
            final = maps[-1].flatten(1)
            cos = torch.stack([F.cosine_similarity(m.flatten(1), final, dim=1, eps=1e-8).sum() for m in maps[:-1]])
            sums = cos if sums is None else sums + cos
        assert sums is not None
        return [
            MetricResult(float(v) / n, n, exit=i, params={"similarity": "cosine", "target": "final prediction"})
            for i, v in enumerate(sums.cpu())
        ]
