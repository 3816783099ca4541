"""The one training loop. Methods change the training step, the loss and the hooks, never the loop.

Data are in-memory tensors (see :mod:`xbench.data.base`); each epoch draws a
seeded permutation and slices batches from it, with batched augmentation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.data.base import ImageSplit
from xbench.errors import XBenchError
from xbench.methods.base import Method
from xbench.models.output import Batch
from xbench.suite import RandAugmentConfig, TrainingConfig

log = logging.getLogger(__name__)


class TrainingError(XBenchError):
    """Training diverged (a non-finite loss); the message gives the step."""

    exit_code = 1


@dataclass
class TrainStats:
    epochs: int
    steps: int
    final_loss: float
    images_per_s: float
    time_s: float
    resumed_from: int = 0  # epochs restored from an epoch checkpoint


class EpochCheckpoint(Protocol):
    """Where :func:`train` keeps its state after each epoch, so a killed training resumes there."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...


def random_crop(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per sample (batched gather)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def augment(x: Tensor, kinds: Sequence[object], g: torch.Generator) -> Tensor:
    """Random crop and horizontal flip, batched (``kinds`` may hold other augmentations: they are not these)."""
    if "crop" in kinds:
        x = random_crop(x, max(1, x.shape[-1] // 8), g)
    if "flip" in kinds:
        flip = torch.rand(x.shape[0], generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def rand_augment(x: Tensor, cfg: RandAugmentConfig, g: torch.Generator) -> Tensor:
    """torchvision's RandAugment on each image of a (B, C, H, W) batch in [0, 1].

    A Python loop over images on purpose: torchvision draws the operations once per call, and
    RandAugment's operations differ per image. Pixels are quantised to 8 bits, as the PIL images
    of the usual pipelines are. torchvision draws from torch's global generator; it is seeded from
    ``g`` inside ``fork_rng``, so the loop's own generator alone decides the result.
    """
    from torchvision.transforms import v2

    augmenter = v2.RandAugment(cfg.num_ops, cfg.magnitude, cfg.num_magnitude_bins)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    pixels = (x * 255).round().to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([augmenter(image) for image in pixels])
    return out.to(x.dtype) / 255


def make_optimizer(cfg: TrainingConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainingConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.lr`` at a global step (linear warm-up, then the schedule)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        # Triangular ramp over the first 30%, cosine anneal after: torch's OneCycleLR shape.
        peak = max(1, int(0.3 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        return 0.5 * (1 + math.cos(math.pi * (step - peak) / max(1, total - peak)))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= e for e in cfg.step_epochs)
    return 1.0


def train(
    method: Method,
    model: nn.Module,
    data: ImageSplit,
    cfg: TrainingConfig,
    device: torch.device,
    seed: int,
    desc: str = "train",
    progress: bool = True,
    checkpoint: EpochCheckpoint | None = None,
) -> TrainStats:
    """Train ``model`` in place with ``method``'s loss and hooks.

    With ``checkpoint``, the whole training state (model, optimizer, schedule, random
    generators, the method's own state) is saved after every epoch but the last, and a
    training that finds a saved state continues from it: the result is bitwise the one
    an uninterrupted training gives (same device and thread count).

    Raises:
        TrainingError: on a non-finite loss, naming the epoch and step.
    """
    randaugment = cfg.randaugment
    if randaugment is not None and method.uses_masks(data):
        raise TrainingError(
            f"{desc}: training.augment: randaugment moves pixels but not the masks that {method.name} trains on; "
            "drop randaugment for this method (methods[i].training.augment)"
        )
    model.to(device).train()
    params = method.trainable_parameters(model)
    n = len(data)
    bs = min(cfg.batch_size, n)
    # Drop the last partial batch: a batch of one breaks BatchNorm, and equal batches
    # keep the per-step cost (and the schedule) uniform.
    steps_per_epoch = max(1, n // bs)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    loss_value = float("nan")
    step = 0
    if cfg.epochs == 0 or not params:
        return TrainStats(0, 0, loss_value, 0.0, 0.0)
    opt = make_optimizer(cfg, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps_per_epoch))
    first = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["schedule"])
        method.load_state_dict(saved["method"])
        g.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        first, step = int(saved["epoch"]), int(saved["step"])
        log.info("%s: resuming at epoch %d/%d from its epoch checkpoint", desc, first + 1, cfg.epochs)
    for epoch in range(first, cfg.epochs):
        model.train()
        method.on_epoch_start(model, epoch, data, device)
        perm = torch.randperm(n, generator=g)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not progress,
            unit="batch",
            dynamic_ncols=True,
        )
        for i in bar:
            idx = perm[i * bs : (i + 1) * bs]
            x = data.images[idx]
            mask = data.masks[idx] if data.masks is not None else None
            if cfg.augment:
                if mask is None:
                    x = augment(x, cfg.augment, g)
                else:  # masks move with their images
                    both = augment(torch.cat([x, mask.to(x.dtype)], dim=1), cfg.augment, g)
                    x, mask = both[:, : x.shape[1]], both[:, x.shape[1] :] > 0.5
                if randaugment is not None:
                    x, mask = rand_augment(x, randaugment, g), None  # its geometric operations do not move masks
            mask = mask.to(device, non_blocking=True) if mask is not None else None
            batch = Batch(x.to(device, non_blocking=True), data.labels[idx].to(device, non_blocking=True), idx, mask)
            loss = method.training_step(model, batch)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"{desc}: non-finite loss ({loss_value}) at epoch {epoch + 1}, step {i + 1} "
                    f"(global step {step + 1}); lower training.lr or check the method"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        bar.close()
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            state = {
                "epoch": epoch + 1,
                "step": step,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "schedule": sched.state_dict(),
                "method": method.state_dict(),
                "generator": g.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            checkpoint.save(state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    done = (cfg.epochs - first) * steps_per_epoch
    return TrainStats(cfg.epochs, step, loss_value, done * bs / max(elapsed, 1e-9), elapsed, first)
