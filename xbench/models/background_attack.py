"""Explanation consistency under a background-only adversarial perturbation.

The construction of ECR (H. Wu et al., "Improving Network Interpretability via
Explanation Consistency Evaluation", IEEE TMM 2024, arXiv 2408.04600), shared by
the ECR method (which reweights training samples with it) and the
``explanation_consistency`` metric (which scores any method and explainer):

1. Explain x: a map A(x) in [0, 1] at the input size (min-max normalised).
2. Background: B = 1[A(x) < τ] (τ = 0.5 by default); no ground-truth mask is used.
3. x̂ = PGD-L∞ on the cross-entropy of class y, with every step multiplied by B so that
   only background pixels move:

       δ_0 = 0,  δ_{t+1} = clip_[−ε, ε](δ_t + α · sign(∇_δ CE(f(x + B⊙δ_t), y))),
       x̂ = clip_[0, 1](x + B⊙δ_T)

   (paper scale: ε = 8/255, α = 2/255, T = 10). The paper gives no attack details; this is
   the standard PGD of Madry et al. (2018) without random start, restricted to B.
4. Consistency E = cos(A(x), A(x̂)) on the flattened maps; ECR's weights are v = 1 − E.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.models.maps import normalise, spearman

#: ``explain(x, target) -> (B, H, W)`` maps.
ExplainFn = Callable[[Tensor, Tensor], Tensor]


class AttackParams(BaseModel):
    """The background-only attack; the defaults are the usual CIFAR-scale PGD budget."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.5, gt=0, lt=1, description="τ: pixels whose normalised map is below it are background")
    epsilon: float = Field(8 / 255, ge=0, description="ε, L∞ budget in [0, 1] pixel units")
    step_size: float = Field(2 / 255, ge=0, description="α, PGD step")
    steps: int = Field(10, ge=0, le=10_000, description="T, PGD steps (0: no attack, E = 1)")


def class_activation_map(features: Tensor, weights: Tensor, target: Tensor, size: tuple[int, int]) -> Tensor:
    """CAM (Zhou et al., CVPR 2016) of class ``target``: Σ_c W[k, c]·F_c, upsampled and min-max normalised.

    Args:
        features: (B, C, h, w) last feature map before global average pooling.
        weights: (K, C) weights of the linear classifier.
        target: (B,) classes.
        size: output (H, W).
    """
    cam = torch.einsum("bchw,bc->bhw", features, weights[target])
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalise(cam)


def background_mask(maps: Tensor, threshold: float) -> Tensor:
    """(B, 1, H, W) float mask, 1 where the normalised map is below ``threshold``."""
    return (maps < threshold).float()[:, None]


def background_pgd(
    logits_fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, background: Tensor, params: AttackParams
) -> Tensor:
    """PGD-L∞ on cross-entropy that moves only pixels where ``background`` is 1; see the module docstring.

    Gradients are taken with respect to the perturbation only (``torch.autograd.grad``), so the
    model's parameter gradients are left untouched, whatever mode the model is in. The valid-image
    constraint is a projection after each step (``x + δ`` clipped to [0, 1]), not a clamp inside the
    graph: a clamp has zero gradient at its bounds, so every pixel at exactly 0 or 1 (most of a black
    canvas) would never move. Until this was fixed, that attack left three quarters of the cluttered
    data's background untouched and the consistency metric saturated near 1 for every method.
    """
    delta = torch.zeros_like(x)
    for _ in range(params.steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(logits_fn(x + background * delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + params.step_size * grad.sign()).clamp(-params.epsilon, params.epsilon)
        delta = (x + delta).clamp(0, 1) - x
    return (x + background * delta).clamp(0, 1)


def map_cosine(a: Tensor, b: Tensor) -> Tensor:
    """(B,) cosine similarity of two batches of maps, flattened."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


def map_spearman(a: Tensor, b: Tensor) -> Tensor:
    """(B,) Spearman's ρ of two batches of maps, in their dtype (:func:`xbench.models.maps.spearman`)."""
    return spearman(a, b).to(a.dtype)


#: E's similarity of the clean and the attacked map, by name (ECR's ``similarity``, the metric's too)
SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"cosine": map_cosine, "spearman": map_spearman}


def weight_concentration(weights: Tensor) -> dict[str, float]:
    """How concentrated non-negative sample weights are: ``ess_fraction`` and ``top_decile_share``.

    ``ess_fraction`` is Kish's effective sample size over N, (Σv)² / (N·Σv²): 1 for uniform weights,
    1/N when one sample carries all the weight. ``top_decile_share`` is the share of the total weight
    on the 10% most weighted samples (0.1 for uniform weights).
    """
    w = weights.double()
    total, n = w.sum(), len(w)
    if n == 0 or float(total) <= 0:
        return {"ess_fraction": float("nan"), "top_decile_share": float("nan")}
    top = w.sort(descending=True).values[: max(1, n // 10)].sum()
    return {"ess_fraction": float(total**2 / (n * (w**2).sum())), "top_decile_share": float(top / total)}


def explanation_consistency(
    explain: ExplainFn,
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    params: AttackParams,
    maps: Tensor | None = None,
    explain_perturbed: ExplainFn | None = None,
    similarity: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(E, x̂)``: per-sample consistency of the explanation of ``y`` under a background-only attack.

    Args:
        explain: maps of the clean images (already min-max normalised or not; they are normalised here).
        logits_fn: the model, ``x -> logits``, attacked by PGD.
        x: (B, C, H, W) images in [0, 1].
        y: (B,) the class that is attacked and explained.
        params: threshold and PGD budget.
        maps: the clean maps, if already computed.
        explain_perturbed: explains x̂ (default ``explain``), e.g. with another seed for random maps.
        similarity: (B,) similarity of two batches of maps; :func:`map_cosine` (ECR's) by default.
    """
    clean = normalise(maps if maps is not None else explain(x, y))
    x_hat = background_pgd(logits_fn, x, y, background_mask(clean, params.threshold), params)
    perturbed = normalise((explain_perturbed or explain)(x_hat, y))
    return (similarity or map_cosine)(clean, perturbed), x_hat


def consistency_weights(consistency: Tensor) -> Tensor:
    """ECR's sample weights: v = 1 − E, rescaled to mean 1 (uniform if every E is 1)."""
    v = (1 - consistency).clamp_min(0)
    mean = v.mean()
    return v / mean if float(mean) > 0 else torch.ones_like(v)
