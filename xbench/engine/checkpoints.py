"""Epoch checkpoints: the training state after each finished epoch, so a killed training resumes there.

The training loop sees two things: :class:`TrainingState`, which gathers what its next epoch
depends on into one dict and puts it back, and an :class:`EpochCheckpoint`, where that dict is
kept (:class:`CachedEpochs`: in the cache next to the cell's model). A resumed training is
bitwise the uninterrupted one (same device and thread count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from xbench.engine.cache import Cache
from xbench.methods.base import Method


class EpochCheckpoint(Protocol):
    """Where :func:`xbench.engine.train.train` keeps its state after an epoch."""

    def restore(self) -> dict[str, Any] | None:
        """The last saved state, or None."""
        ...

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """Keep ``state``, the state after ``epoch`` finished epochs (replacing an earlier one)."""
        ...


@dataclass
class CachedEpochs:
    """A cell's epoch checkpoint in the cache, under its model's key; discarded once the model is saved."""

    cache: Cache
    key: str
    cell: str
    kind: str = "train-state"

    def restore(self) -> dict[str, Any] | None:
        return self.cache.load_model(self.key, kind=self.kind)

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        self.cache.save_model(self.key, state, {"cell": self.cell, "epoch": epoch}, kind=self.kind)

    def discard(self) -> None:
        self.cache.discard(self.key, kind=self.kind)


@dataclass
class TrainingState:
    """Everything the training's next epoch depends on: the model, the optimiser, the schedule, the
    method's own state, the loop's and torch's generators and the fp16 gradient scaler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    method: Method
    generator: torch.Generator
    device: torch.device
    scaler: torch.amp.GradScaler | None = None

    def capture(self, epoch: int, step: int) -> dict[str, Any]:
        """The state after ``epoch`` finished epochs and ``step`` steps (tensors reference the live ones)."""
        state = {
            "epoch": epoch,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load(self, saved: dict[str, Any]) -> tuple[int, int]:
        """Put back a :meth:`capture`d state; returns its ``(epoch, step)``."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.method.load_state_dict(saved["method"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        if self.scaler is not None and "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        return int(saved["epoch"]), int(saved["step"])
