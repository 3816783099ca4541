"""Evaluation: one pass of the model over the test split, shared by every metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.data.base import ImageSplit
from xbench.methods.base import Method


@dataclass
class Predictions:
    """Logits of the final exit (and of every exit, final last) and the labels, on CPU."""

    logits: Tensor
    labels: Tensor
    exit_logits: list[Tensor] = field(default_factory=list)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: ImageSplit,
    device: torch.device,
    batch_size: int,
    desc: str = "eval",
    progress: bool = True,
) -> Predictions:
    """Run ``model`` in eval mode over ``data`` in batches."""
    model.to(device).eval()
    logits, exits = [], []
    starts = range(0, len(data), batch_size)
    for s in tqdm(starts, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True):
        out = model(data.images[s : s + batch_size].to(device, non_blocking=True))
        logits.append(out.logits.float().cpu())
        if out.exit_logits:
            exits.append([e.float().cpu() for e in out.exit_logits])
    exit_logits = [torch.cat(per_exit) for per_exit in zip(*exits, strict=True)] if exits else []
    return Predictions(torch.cat(logits), data.labels.clone(), exit_logits)


@dataclass
class EvalContext:
    """Everything a metric may use; expensive shared results are computed once.

    Attributes:
        model: the trained model, in eval mode on ``device``.
        method: the method instance that built it.
        data: the (possibly limited) test split.
        device: where to compute.
        batch_size: evaluation batch size from the suite.
        desc: a label for progress bars.
        progress: whether to show progress bars.
    """

    model: nn.Module
    method: Method
    data: ImageSplit
    device: torch.device
    batch_size: int
    desc: str = "eval"
    progress: bool = True
    _memo: dict[str, Any] = field(default_factory=dict)

    def predictions(self) -> Predictions:
        if "predictions" not in self._memo:
            self._memo["predictions"] = predict(
                self.model, self.data, self.device, self.batch_size, f"{self.desc} predict", self.progress
            )
        out: Predictions = self._memo["predictions"]
        return out

    def example_input(self, batch: int = 1) -> Tensor:
        """A batch of real test images on the device (for FLOP counting and timing)."""
        return self.data.images[:batch].to(self.device)
