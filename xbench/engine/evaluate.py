"""Evaluation: one pass of the model over the test split, shared by every metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.data.base import ImageSplit
from xbench.engine.exits import ExitPolicy, calibrate_thresholds
from xbench.methods.base import Method

T = TypeVar("T")


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
    train: ImageSplit | None = None
    holdout: ImageSplit | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    # At most this many training images calibrate exit thresholds when there is no holdout.
    calibration_limit = 5000

    def predictions(self) -> Predictions:
        """The model's outputs on the test split: one forward pass per cell, shared by every metric."""
        return self.memo(
            "predictions",
            lambda: predict(self.model, self.data, self.device, self.batch_size, f"{self.desc} predict", self.progress),
        )

    def exit_policy(self) -> ExitPolicy | None:
        """The method's early-exit policy, calibrated once per cell; None without exits.

        Thresholds given in the method's params are used as they are. Otherwise one shared
        threshold is calibrated on the held-out split (``training.holdout``), or, without one,
        on training images, which are over-confident; the source is recorded either way.
        """
        return self.memo("policy", self._exit_policy)

    def _exit_policy(self) -> ExitPolicy | None:
        if not self.predictions().exit_logits:
            return None
        given = getattr(self.method.params, "thresholds", None)
        if given is not None:
            return ExitPolicy([float(t) for t in given], "given")
        drop = float(getattr(self.method.params, "max_accuracy_drop", 0.5))
        source, calib = ("holdout", self.holdout) if self.holdout is not None else ("train", self.train)
        if calib is None:
            raise ValueError("exit thresholds need a holdout or training split to calibrate on")
        calib = calib.subset(self.calibration_limit, seed=0)
        pred = predict(self.model, calib, self.device, self.batch_size, f"{self.desc} calibrate", self.progress)
        return ExitPolicy(calibrate_thresholds(pred.exit_logits, pred.labels, drop), source, drop)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per cell; metrics share the result under ``key``."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    def example_input(self, batch: int = 1) -> Tensor:
        """A batch of real test images on the device (for FLOP counting and timing)."""
        return self.data.images[:batch].to(self.device)
