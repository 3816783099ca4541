"""Sanity checks: do an explainer's maps depend on the model's parameters?

Cascading model-parameter randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt and
Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018). A deep copy of the model is
randomised from the top down, one step at a time:

1. ``head``: every parameter outside ``model.backbone`` (the classifier's final linear
   layer, exit heads, attention modules, ...);
2. ``stage{S-1}``, ..., ``stage0``: the backbone's stages, last first;
3. ``stem``: the rest of the backbone (its stem convolution and normalisation).

A model without ``backbone.stages`` is randomised in one step, ``all``. Randomising a
module calls its ``reset_parameters()`` (PyTorch's default initialisation; BatchNorm
also resets its running statistics); a parameter of a module without one is redrawn from
a normal distribution with its trained mean and standard deviation. Draws are seeded
(``seed``, then the step) inside ``torch.random.fork_rng``: the global generator is left
as it was, and the original model is never modified.

After each step the current explainer explains the first ``n`` images of
``ctx.explain_data()`` for the same target classes and with the same explainer seeds as
the original maps (``ctx.explanations()``), and the maps are compared to the originals,
per image, by Spearman's rank correlation (ties get average ranks; default) or SSIM.

Two metrics share this computation (``ctx.memo``):

- ``parameter_randomisation``: the mean similarity after the last step, with the whole
  model random (lower is better: the maps should change); the curve over the steps is
  in ``params["steps"]``.
- ``randomisation_check``: 1 if that similarity is below ``threshold`` (0.5), else 0
  (higher is better). A map that does not depend on the model fails: the ``random``
  explainer, seeded as for the original maps, gives identical maps and similarity 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext, explained
from xbench.metrics.exit_agreement import ssim
from xbench.models.maps import average_ranks as average_ranks  # re-exported
from xbench.models.maps import normalise, spearman
from xbench.registry import METRICS


class RandomisationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(
        128, ge=1, le=10_000_000, description="images explained after each step: the first n of explain_data"
    )
    similarity: Literal["spearman", "ssim"] = Field("spearman", description="per-image similarity to the original")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the re-initialisation")


class CheckParams(RandomisationParams):
    threshold: float = Field(0.5, description="the check passes when the final similarity is below this")


# -- similarities ----------------------------------------------------------------------------------------
SIMILARITIES = {"spearman": spearman, "ssim": ssim}


# -- randomisation -----------------------------------------------------------------------------------------
def cascade(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``[(step, modules)]`` from the top of the model down: head, stages last first, stem."""
    backbone = getattr(model, "backbone", None)
    stages = getattr(backbone, "stages", None)
    if not isinstance(backbone, nn.Module) or not isinstance(stages, nn.ModuleList):
        return [("all", list(model.modules()))]
    inside = {id(m) for m in backbone.modules()}
    head = [m for m in model.modules() if id(m) not in inside]
    in_stages = {id(m) for stage in stages for m in stage.modules()}
    stem = [m for m in backbone.modules() if id(m) not in in_stages]
    steps = [("head", head)]
    steps += [(f"stage{i}", list(stages[i].modules())) for i in reversed(range(len(stages)))]
    steps.append(("stem", stem))
    return steps


@torch.no_grad()
def reinitialise(modules: list[nn.Module], seed: int) -> int:
    """Re-draw the parameters each module owns directly; returns how many values were drawn."""
    devices = sorted({p.device.index or 0 for m in modules for p in m.parameters(recurse=False) if p.is_cuda})
    count = 0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in modules:
            own = list(m.parameters(recurse=False))
            if not own:
                continue
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for p in own:
                    std = float(p.std()) if p.numel() > 1 else 1.0
                    p.normal_(float(p.mean()), std if std > 0 else 1.0)
            count += sum(p.numel() for p in own)
    return count


@dataclass
class RandomisationCurve:
    """Mean similarity to the original maps after each step, and the parameters drawn in it."""

    steps: list[str]
    similarity: list[float]
    parameters: list[int]
    n: int

    @property
    def final(self) -> float:
        return self.similarity[-1]

    def as_params(self) -> list[dict[str, Any]]:
        return [
            {"step": s, "similarity": v, "parameters": p}
            for s, v, p in zip(self.steps, self.similarity, self.parameters, strict=True)
        ]


def randomisation_curve(ctx: EvalContext, p: RandomisationParams) -> RandomisationCurve | None:
    """The cascade for ``ctx``'s current explainer (memoised per cell, explainer and parameters)."""
    key = f"parameter_randomisation:{ctx.explainer}:{p.n}:{p.similarity}:{p.seed}"
    return ctx.memo(key, lambda: _curve(ctx, p))


def _curve(ctx: EvalContext, p: RandomisationParams) -> RandomisationCurve | None:
    original = ctx.explanations()
    if original is None:
        return None
    assert ctx.explainer is not None
    explainer = ctx.explainers[ctx.explainer]
    n = min(p.n, len(original))
    original = original[:n]
    x_all = ctx.explain_data().images[:n]
    targets = ctx.explain_targets()[:n]
    compare = SIMILARITIES[p.similarity]
    model = copy.deepcopy(ctx.model).to(ctx.device).eval()
    steps, values, counts = [], [], []
    for i, (step, modules) in enumerate(cascade(model)):
        counts.append(reinitialise(modules, p.seed * 1_000 + i))
        maps = []
        for s in range(0, n, ctx.batch_size):
            x = x_all[s : s + ctx.batch_size].to(ctx.device)
            t = targets[s : s + ctx.batch_size].to(ctx.device)
            # The seed EvalContext gives the batch starting at s: a model-independent explainer repeats itself.
            m = explainer.explain(ctx.method, model, x, t, ctx.seed * 1_000_003 + s)
            if m is None:
                raise ValueError(f"explainer {ctx.explainer!r} gave no maps for the randomised model")
            maps.append(normalise(m.detach()).cpu())
        steps.append(step)
        values.append(float(compare(original, torch.cat(maps)).mean()))
    return RandomisationCurve(steps, values, counts, n)


# -- the metrics ---------------------------------------------------------------------------------------------
#: The params of a randomisation metric.
R = TypeVar("R", bound=RandomisationParams)


class _Randomisation(Metric[R]):
    category = Category.SANITY
    uses_explanations = True
    Params = RandomisationParams

    def curve(self, ctx: EvalContext) -> RandomisationCurve | None:
        return randomisation_curve(explained(ctx), self.params)

    def base_params(self, curve: RandomisationCurve) -> dict[str, Any]:
        return {
            **self.param_dict(),
            "steps": curve.as_params(),
            "reinit": "reset_parameters() per module; other parameters N(trained mean, trained std)",
            "explainer_seed": "as for the original maps",
        }


@METRICS.register("parameter_randomisation")
class ParameterRandomisation(_Randomisation[RandomisationParams]):
    """Similarity of the maps of the fully randomised model to the original maps (Adebayo et al., 2018)."""

    direction = Direction.LOWER
    label = "Param. randomisation"
    decimals = 3
    description = (
        "similarity (Spearman) of the explainer's maps after cascading randomisation of every parameter "
        "to the original maps; lower is better"
    )

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        curve = self.curve(ctx)
        if curve is None:
            return []
        return [MetricResult(curve.final, curve.n, params=self.base_params(curve))]


@METRICS.register("randomisation_check")
class RandomisationCheck(_Randomisation[CheckParams]):
    """1 when the maps of the fully randomised model differ enough from the originals, else 0."""

    direction = Direction.HIGHER
    label = "Randomisation check"
    decimals = 2
    description = "1 if the similarity after randomising every parameter is below threshold (explainer passes)"
    Params = CheckParams

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        curve = self.curve(ctx)
        if curve is None:
            return []
        passed = curve.final < self.params.threshold
        return [MetricResult(float(passed), curve.n, params={**self.base_params(curve), "final": curve.final})]
