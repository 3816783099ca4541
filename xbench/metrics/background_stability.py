"""Explanation consistency: does an explanation survive a background-only adversarial attack?

The ``explanation_consistency`` metric: how stable a map stays when only the background changes.
For every evaluated image x, with the current explainer's map A(x) of the predicted class
y: background B = 1[A(x) < τ], x̂ = PGD-L∞ on the cross-entropy of y moving only background
pixels, and the score is sim(A(x), A(x̂)) (the ECR construction; see
:mod:`xbench.models.background_attack`, shared with the ECR method). Averaged over images;
higher is better. A map that follows the object stays put when only the background
changes.

``similarity``: Spearman's rank correlation by default, or ECR's cosine. The cosine of two
non-negative maps is high by construction (0.75 for two independent uniform maps:
E[u]² / E[u²] = (1/4)/(1/3)), so on trained models it hardly separates methods; Spearman puts
unrelated maps at 0, separated the quick suite's rows better and did not penalise well-localised
maps as the cosine did (BENCHMARKS.md, "Numbers behind the code").

The perturbed image is explained with another seed than the clean one, so the random
explainer's two maps are independent and its score is the chance level of two unrelated
maps, not a perfect 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field
from torch import Tensor

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.models.background_attack import SIMILARITIES, AttackParams, explanation_consistency
from xbench.models.maps import normalise
from xbench.models.output import LogitsOnly
from xbench.registry import METRICS


class ExplanationConsistencyParams(AttackParams):
    model_config = ConfigDict(extra="forbid")
    n: int | None = Field(None, ge=1, le=10_000_000, description="score this many of the explained images (null: all)")
    similarity: Literal["spearman", "cosine"] = Field(
        "spearman", description="of the clean and attacked maps: Spearman's ρ (unrelated maps: 0) or ECR's cosine"
    )


@METRICS.register("explanation_consistency")
class ExplanationConsistency(Metric[ExplanationConsistencyParams]):
    """Mean similarity of A(x) and A(x̂), x̂ a background-only PGD copy of x (Spearman's ρ, or cosine)."""

    category = Category.CONSISTENCY
    direction = Direction.HIGHER
    uses_explanations = True
    label = "Expl. consistency"
    decimals = 3
    description = "Spearman ρ (or cosine) of the maps of x and of a background-only adversarial copy x̂ (ECR's)"
    Params = ExplanationConsistencyParams

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        ctx = explained(ctx)
        assert ctx.explainer is not None
        maps = ctx.explanations()
        if maps is None:
            return []
        data, targets = ctx.explain_data(), ctx.explain_targets()
        n = len(data) if self.params.n is None else min(self.params.n, len(data))
        explainer = ctx.explainers[ctx.explainer]
        logits = LogitsOnly(ctx.model)
        similarity = SIMILARITIES[self.params.similarity]
        scores = []
        for s in range(0, n, ctx.batch_size):
            e = min(n, s + ctx.batch_size)
            x = data.images[s:e].to(ctx.device)
            y = targets[s:e].to(ctx.device)
            seed = ctx.seed * 1_000_003 + s + 7_919  # not the clean maps' seed: see the module docstring

            def explain_hat(xb: Tensor, yb: Tensor, seed: int = seed) -> Tensor:
                m = explainer.explain(ctx.method, ctx.model, xb, yb, seed)
                assert m is not None
                return normalise(m.detach())

            if explainer.reads_input:
                score, _ = explanation_consistency(
                    explain_hat, logits, x, y, self.params, maps=maps[s:e].to(ctx.device),
                    explain_perturbed=explain_hat, similarity=similarity,
                )  # fmt: skip
            else:  # maps that ignore the pixels are the same for x̂ as for x: the attack would change nothing
                score = similarity(normalise(maps[s:e].to(ctx.device)), explain_hat(x, y))
            scores.append(score.detach().cpu())
        values = torch.cat(scores)
        params = {"target": "predicted class", "similarity": self.params.similarity}
        if not explainer.reads_input:
            params["attack"] = "skipped: the explainer's maps do not depend on the pixels"
        return [MetricResult(float(values.mean()), n, params=params)]
