"""Early-exit policies: where each sample leaves, and how thresholds are calibrated.

A model with exits returns the logits of every exit, final exit last. The policy
is the usual confidence rule: a sample leaves at the first exit ``i`` whose top
softmax probability is at least ``τ_i``; samples that never qualify leave at the
final exit. Everything here is batched over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

#: A threshold on a top softmax probability (a method's ``thresholds`` items): 0 always exits,
#: anything above 1 never does.
Confidence = Annotated[float, Field(ge=0)]


def exit_confidences(exit_logits: Sequence[Tensor]) -> Tensor:
    """(E, N) top softmax probability of each exit."""
    return torch.stack([logits.softmax(dim=1).amax(dim=1) for logits in exit_logits])


def exit_indices(confidences: Tensor, thresholds: Sequence[float]) -> Tensor:
    """(N,) index of the exit each sample leaves at.

    Args:
        confidences: (E, N) confidence of each exit.
        thresholds: ``E - 1`` thresholds, one per early exit (the final exit takes the rest).
    """
    e = confidences.shape[0]
    if len(thresholds) != e - 1:
        raise ValueError(f"need {e - 1} thresholds for {e} exits, got {len(thresholds)}")
    if e == 1:
        return torch.zeros(confidences.shape[1], dtype=torch.long)
    tau = torch.tensor(list(thresholds), dtype=confidences.dtype)[:, None]
    leaves = torch.cat([confidences[:-1] >= tau, torch.ones_like(confidences[:1], dtype=torch.bool)])
    # argmax over a bool tensor returns the first True: the first exit that qualifies.
    return leaves.to(torch.uint8).argmax(dim=0)


def policy_predictions(exit_logits: Sequence[Tensor], thresholds: Sequence[float]) -> tuple[Tensor, Tensor]:
    """``(predictions, exit_index)`` of every sample under the policy."""
    idx = exit_indices(exit_confidences(exit_logits), thresholds)
    preds = torch.stack([logits.argmax(dim=1) for logits in exit_logits])  # (E, N)
    return preds.gather(0, idx[None]).squeeze(0), idx


@dataclass(frozen=True)
class ExitSettings:
    """How a method's exit policy is set: given thresholds, or calibrated within an accuracy drop."""

    thresholds: list[float] | None = None  # one per early exit; None: calibrate
    max_accuracy_drop: float = 0.5  # calibration target, in accuracy points


@dataclass
class ExitPolicy:
    """Thresholds and where they came from ("given", "holdout" or "train")."""

    thresholds: list[float]
    source: str
    max_accuracy_drop: float | None = None


def calibrate_thresholds(
    exit_logits: Sequence[Tensor], labels: Tensor, max_accuracy_drop: float, grid: int = 400
) -> list[float]:
    """One shared threshold: the lowest whose accuracy is within the allowed drop of the final exit's.

    ``max_accuracy_drop`` is in percentage points. The candidates are quantiles of the early
    exits' confidences (plus 1.0 and above, which exits nothing early), so the search costs
    ``grid`` batched policy evaluations whatever the number of samples. A lower threshold
    exits more samples early, so the lowest admissible one is the fastest policy.
    """
    e = len(exit_logits)
    if e == 1:
        return []
    conf = exit_confidences(exit_logits)  # (E, N)
    correct = torch.stack([logits.argmax(dim=1) == labels for logits in exit_logits])  # (E, N)
    target = correct[-1].float().mean() - max_accuracy_drop / 100.0
    levels = torch.linspace(0, 1, grid, dtype=conf.dtype)
    candidates = torch.cat([torch.quantile(conf[:-1].flatten(), levels), torch.tensor([1.0, 1.0 + 1e-6])])
    candidates = candidates.unique()  # sorted ascending
    leaves = conf[:-1][None] >= candidates[:, None, None]  # (M, E-1, N)
    leaves = torch.cat([leaves, torch.ones_like(leaves[:, :1])], dim=1)  # final exit always qualifies
    idx = leaves.to(torch.uint8).argmax(dim=1)  # (M, N)
    acc = correct[idx, torch.arange(idx.shape[1])[None]].float().mean(dim=1)  # (M,) accuracy per candidate
    ok = (acc >= target - 1e-9).nonzero()
    tau = float(candidates[ok[0, 0]]) if len(ok) else float(candidates[-1])
    return [tau] * (e - 1)


def early_exit(model: torch.nn.Module, x: Tensor, thresholds: Sequence[float]) -> tuple[Tensor, int]:
    """Real early-exit inference: ``(logits, exit index)`` of the first exit confident for the whole batch.

    Consumes ``model.exit_stream(x)`` (lazy logits of exit 0, 1, ...) and stops at the first
    exit whose top softmax probability reaches its threshold for every sample, so later stages
    are never computed. Meant for batch 1, where it is the policy above; for larger batches it
    waits for the least confident sample.
    """
    last = len(thresholds)
    for i, logits in enumerate(model.exit_stream(x)):  # type: ignore[operator]
        if i == last or bool(logits.softmax(dim=1).amax(dim=1).min() >= thresholds[i]):
            return logits, i
    raise ValueError(f"{type(model).__name__}.exit_stream yielded fewer than {last + 1} exits")
