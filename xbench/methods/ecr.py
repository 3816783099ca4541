"""ECR: explanation-consistency reweighting.

Paper: H. Wu, H. Jiang, K. Wang, Z. Tang, X. He, L. Lin, "Improving Network
Interpretability via Explanation Consistency Evaluation", IEEE Transactions on
Multimedia, 2024, arXiv 2408.04600. No public code.

What the paper states: the explanation consistency E of a training sample x compares
the model's visual explanation of x with its explanation of x̂, a semantics-preserving
adversarial copy of x in which only the background is perturbed; samples whose
explanation changes more get larger weights, v = 1 − E, and the loss is Σ_i v_i·L_i.
Training alternates between training and re-evaluating E; no extra supervision is used.

What it leaves open, and xbench's configurable defaults:

* explanation: the CAM of the ground-truth class, min-max normalised, at the input size;
* background: pixels whose CAM is below τ = 0.5 (no ground-truth mask);
* attack: PGD-L∞ on the cross-entropy, each step multiplied by the background mask,
  ε = 8/255, α = 2/255, T = 10 steps at paper scale (quick suites use fewer steps);
* consistency: E = cos(CAM(x), CAM(x̂)); ``similarity: spearman`` uses Spearman's ρ instead;
* weights: v_i = 1 − E_i rescaled so that the mean over the training set is 1,
  recomputed in eval mode at the start of every epoch from ``warmup_epochs`` on
  (v = 1 before that; ``interval: k`` re-evaluates every k epochs instead, which long
  schedules need: a 10-step attack costs about ten training epochs' worth of passes);
  the loss of a batch is (1/B) Σ_i v_i·CE_i. Every reweighting logs how concentrated the weights
  are (``history``: Kish's effective sample size over N, the top decile's share of the weight).
  With the cosine E is close to 1, so 1 − E is small and uneven and the rescaled weights are
  concentrated on few images (how much on the claims suite's data: README, "Paper claims").

The attack and the consistency score live in :mod:`xbench.models.background_attack`, shared
with the ``explanation_consistency`` metric. The model is the baseline's classifier
(backbone, global average pooling, linear head), so ECR's rows differ from the
baseline's only by the reweighting; its native maps are its CAM.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.claims import Claim, Rows
from xbench.data.base import ImageSplit
from xbench.methods.base import Method, MethodContext
from xbench.methods.baseline import Classifier
from xbench.models.background_attack import (
    SIMILARITIES,
    AttackParams,
    class_activation_map,
    consistency_weights,
    explanation_consistency,
    weight_concentration,
)
from xbench.models.output import Batch, LogitsOnly, ModelOutput
from xbench.registry import METHODS

log = logging.getLogger(__name__)


class ECRParams(AttackParams):
    model_config = ConfigDict(extra="forbid")
    warmup_epochs: int = Field(
        1, ge=0, le=10_000, description="epochs trained with uniform weights before the first reweighting"
    )
    interval: int = Field(
        1, ge=1, le=10_000, description="recompute the weights every this many epochs (1: every epoch)"
    )
    batch_size: int = Field(
        512, ge=1, le=65_536, description="batch size of the consistency pass over the training set"
    )
    similarity: Literal["cosine", "spearman"] = Field(
        "cosine", description="E of the clean and attacked CAMs: cosine, or Spearman's ρ (the paper names neither)"
    )


def cam(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """(B, H, W) CAM of ``target`` for a :class:`Classifier`."""
    out = model(x)
    fc = model.fc
    assert isinstance(fc, nn.Linear)
    weight = fc.weight
    return class_activation_map(out.features, weight, target, (int(x.shape[-2]), int(x.shape[-1])))


@METHODS.register("ecr")
class ECR(Method[ECRParams]):
    """Cross-entropy reweighted by 1 − explanation consistency under background-only attacks."""

    paper = (
        "H. Wu et al., Improving Network Interpretability via Explanation Consistency Evaluation, "
        "IEEE TMM 2024, arXiv 2408.04600"
    )
    description = "sample weights 1 − cos(CAM(x), CAM(x̂)), x̂ a background-only PGD copy; CAM explanations"
    Params = ECRParams
    claims = (
        Claim(
            id="ecr.localisation",
            statement="ECR training localises the object better than the baseline's (Grad-CAM of each)",
            paper="better box localisation on CUB (no figure here)",
            metric="pointing_game",
            subject=Rows(method="ecr", explainer="gradcam"),
            reference=Rows(method="baseline", explainer="gradcam"),
            relation=">",
        ),
        Claim(
            id="ecr.consistency",
            statement="ECR training makes explanations more consistent under background attacks",
            paper="higher explanation consistency (no figure here)",
            metric="explanation_consistency",
            subject=Rows(method="ecr", explainer="gradcam"),
            reference=Rows(method="baseline", explainer="gradcam"),
            relation=">",
        ),
    )

    def __init__(self, params: ECRParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.weights: Tensor | None = None
        self.history: list[dict[str, float]] = []

    def build(self) -> nn.Module:
        return Classifier(self.ctx.build_backbone(), self.ctx.num_classes)

    def consistency(self, model: nn.Module, data: ImageSplit, device: torch.device, progress: bool = False) -> Tensor:
        """E of every item of ``data`` (ground-truth class), computed in eval mode."""
        was_training = model.training
        model.eval()
        logits = LogitsOnly(model)
        scores = []
        bs = self.params.batch_size
        for s in tqdm(range(0, len(data), bs), desc="ecr consistency", leave=False, disable=not progress):
            x = data.images[s : s + bs].to(device)
            y = data.labels[s : s + bs].to(device)
            with torch.no_grad():
                maps = cam(model, x, y)

            def explain(xb: Tensor, yb: Tensor) -> Tensor:
                with torch.no_grad():
                    return cam(model, xb, yb)

            similarity = SIMILARITIES[self.params.similarity]
            e, _ = explanation_consistency(explain, logits, x, y, self.params, maps=maps, similarity=similarity)
            scores.append(e.detach().cpu())
        model.train(was_training)
        return torch.cat(scores)

    def on_epoch_start(self, model: nn.Module, epoch: int, data: ImageSplit, device: torch.device) -> None:
        if epoch < self.params.warmup_epochs:
            self.weights = None
            return
        if (epoch - self.params.warmup_epochs) % self.params.interval and self.weights is not None:
            return  # keep the last weights until the next re-evaluation
        e = self.consistency(model, data, device)
        self.weights = consistency_weights(e).to(device)
        stats = {
            "epoch": epoch,
            "mean_consistency": float(e.mean()),
            "max_weight": float(self.weights.max()),
            **weight_concentration(self.weights),
        }
        self.history.append(stats)
        log.info(
            "ecr: epoch %d, mean consistency %.4f, max weight %.1f, effective sample size %.0f%% of %d",
            epoch,
            stats["mean_consistency"],
            stats["max_weight"],
            100 * stats["ess_fraction"],
            len(e),
        )

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.weights is None else {"weights": self.weights.detach().cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.weights = state.get("weights")

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        ce = F.cross_entropy(output.logits, batch.y, reduction="none")
        if self.weights is None:
            return ce.mean()
        return (self.weights[batch.index.to(self.weights.device)] * ce).mean()

    def native_maps(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        """Its CAM of ``target``, the explanation ECR trains to be consistent."""
        with torch.no_grad():
            return cam(model, x, target)
