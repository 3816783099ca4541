"""The one training loop. Methods change the training step, the loss and the hooks, never the loop.

Data are in-memory tensors (see :mod:`xbench.data.base`); each epoch draws a
seeded permutation and slices batches from it, with batched augmentation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.data.base import ImageSplit
from xbench.engine.checkpoints import EpochCheckpoint, TrainingState
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


def make_optimizer(cfg: TrainingConfig, params: list[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
    """The optimiser of ``cfg``; ``fused``: torch's fused kernels (a gradient scaler's inf check stays on device)."""
    use_fused = True if fused else None  # None: torch's default implementation
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
            fused=use_fused,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=use_fused)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=use_fused)


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


#: autocast's dtype per ``training.precision`` (fp32: no autocast)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LossLog:
    """The losses of the steps since the last :meth:`flush`, kept on the device: one host copy per flush.

    The loop flushes every ``training.log_interval`` steps and at each epoch's end, so a GPU never
    waits for the host in between; a non-finite loss is found at the flush, which names its step.
    """

    def __init__(self, size: int, device: torch.device) -> None:
        # float64 holds a float32, bf16 or fp16 loss exactly (MPS has no float64)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.values = torch.empty(size, dtype=dtype, device=device)
        self.n = 0
        self.first = (1, 1)  # (step in its epoch, global step) of values[0], from 1

    def record(self, loss: Tensor, i: int, step: int) -> None:
        """Keep the loss of step ``i`` of the epoch (global ``step``), both from 0."""
        if self.n == 0:
            self.first = (i + 1, step + 1)
        self.values[self.n].copy_(loss.detach().reshape(()))
        self.n += 1

    @property
    def full(self) -> bool:
        return self.n == len(self.values)

    def flush(self, desc: str, epoch: int) -> list[float]:
        """The recorded losses on the host; raises :class:`TrainingError` at the first non-finite one."""
        values: list[float] = self.values[: self.n].tolist() if self.n else []
        self.n = 0
        for k, value in enumerate(values):
            if not math.isfinite(value):
                i, step = self.first[0] + k, self.first[1] + k
                raise TrainingError(
                    f"{desc}: non-finite loss ({value}) at epoch {epoch + 1}, step {i} "
                    f"(global step {step}); lower training.lr or check the method"
                )
        return values


class StepModel:
    """The module the method's training steps call: ``torch.compile(model)`` with ``compile``, else ``model``.

    torch compiles at the first call; where that fails (no C++ compiler, a model dynamo cannot
    trace) one line says so, the step is redone on ``model`` (torch's generators put back) and
    training continues uncompiled.
    """

    def __init__(self, model: nn.Module, compile: bool, device: torch.device, desc: str) -> None:
        self.model, self.device, self.desc = model, device, desc
        self.module: nn.Module = model
        self.pending = False  # the first (compiling) call is still to come
        if compile:
            try:
                self.module = torch.compile(model)  # type: ignore[assignment]
                self.pending = True
            except Exception as err:  # e.g. a Python version dynamo does not support
                self._fall_back(err)

    def _fall_back(self, err: BaseException) -> None:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        log.warning("%s: training.compile: cannot compile (%s: %s); training uncompiled", self.desc,
                    type(err).__name__, first)  # fmt: skip
        self.module = self.model

    def loss(self, method: Method, batch: Batch, autocast: contextlib.AbstractContextManager[object]) -> Tensor:
        if not self.pending:
            with autocast:
                return method.training_step(self.module, batch)
        self.pending = False
        cuda = self.device.type == "cuda"
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if cuda else None)
        try:
            with autocast:
                return method.training_step(self.module, batch)
        except Exception as err:
            self._fall_back(err)
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state(rng[1], self.device)
            with autocast:
                return method.training_step(self.model, batch)


def autocast(cfg: TrainingConfig, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The context of a training step's forward pass and loss under ``training.precision``."""
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[cfg.precision])


def is_channels_last(model: nn.Module) -> bool:
    """Whether every 4-D parameter of ``model`` is channels-last (NHWC)."""
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


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

    With ``checkpoint``, the whole training state (:class:`~xbench.engine.checkpoints.TrainingState`)
    is saved after every epoch but the last, and a training that finds a saved state continues
    from it: the result is bitwise the one an uninterrupted training gives (same device and
    thread count). The losses stay on the device between log points (``training.log_interval``):
    no step waits for the host. ``training.channels_last`` trains in NHWC and gives the model
    back in the layout it came in.

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
    restore_layout = cfg.channels_last and not is_channels_last(model)
    if restore_layout:
        model.to(memory_format=torch.channels_last)
    try:
        return _train(method, model, data, cfg, device, seed, desc, progress, checkpoint)
    finally:
        if restore_layout:
            model.to(memory_format=torch.contiguous_format)


def _train(
    method: Method,
    model: nn.Module,
    data: ImageSplit,
    cfg: TrainingConfig,
    device: torch.device,
    seed: int,
    desc: str,
    progress: bool,
    checkpoint: EpochCheckpoint | None,
) -> TrainStats:
    params = method.trainable_parameters(model)
    n = len(data)
    bs = min(cfg.batch_size, n)
    # Drop the last partial batch: a batch of one breaks BatchNorm, and equal batches
    # keep the per-step cost (and the schedule) uniform.
    steps_per_epoch = max(1, n // bs)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    final_loss = float("nan")
    step = 0
    if cfg.epochs == 0 or not params:
        return TrainStats(0, 0, final_loss, 0.0, 0.0)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    opt = _optimizer(cfg, params, scaler is not None, desc)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps_per_epoch))
    state = TrainingState(model, opt, sched, method, g, device, scaler)
    first = 0
    saved = checkpoint.restore() if checkpoint is not None else None
    if saved is not None:
        first, step = state.load(saved)
        log.info("%s: resuming at epoch %d/%d from its epoch checkpoint", desc, first + 1, cfg.epochs)
    step_model = StepModel(model, cfg.compile, device, desc)
    losses = LossLog(min(cfg.log_interval, steps_per_epoch), device)
    layout = torch.channels_last if cfg.channels_last else torch.preserve_format
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
        total, count = 0.0, 0  # the epoch's losses flushed so far
        try:
            for i in bar:
                idx = perm[i * bs : (i + 1) * bs]
                batch = _batch(data, idx, cfg, g, device, layout)
                loss = step_model.loss(method, batch, autocast(cfg, device))
                losses.record(loss, i, step)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                sched.step()
                step += 1
                if losses.full and i + 1 < steps_per_epoch:
                    values = losses.flush(desc, epoch)
                    total, count = total + sum(values), count + len(values)
                    mean = sum(values) / len(values)
                    log.debug("%s: epoch %d/%d, step %d/%d: loss %.4f", desc, epoch + 1, cfg.epochs, i + 1,
                              steps_per_epoch, mean)  # fmt: skip
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
        except Exception as err:
            if not isinstance(err, TrainingError):
                try:  # a step that failed after a non-finite loss: the divergence is the cause
                    losses.flush(desc, epoch)
                except TrainingError as diverged:
                    raise diverged from err
            raise
        finally:
            bar.close()
        values = losses.flush(desc, epoch)
        total, count = total + sum(values), count + len(values)
        final_loss = values[-1]
        log.info("%s: epoch %d/%d: mean loss %.4f", desc, epoch + 1, cfg.epochs, total / count)
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            checkpoint.save(epoch + 1, state.capture(epoch + 1, step))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    done = (cfg.epochs - first) * steps_per_epoch
    return TrainStats(cfg.epochs, step, final_loss, done * bs / max(elapsed, 1e-9), elapsed, first)


def _optimizer(cfg: TrainingConfig, params: list[nn.Parameter], fused: bool, desc: str) -> torch.optim.Optimizer:
    """:func:`make_optimizer`, fused where asked and the device has the kernels."""
    if fused:
        try:
            return make_optimizer(cfg, params, fused=True)
        except (RuntimeError, ValueError) as err:
            log.info("%s: no fused %s here (%s): the gradient scaler checks for inf on the host each step",
                     desc, cfg.optimizer, str(err).strip().splitlines()[0])  # fmt: skip
    return make_optimizer(cfg, params)


def _batch(
    data: ImageSplit, idx: Tensor, cfg: TrainingConfig, g: torch.Generator, device: torch.device,
    layout: torch.memory_format,
) -> Batch:  # fmt: skip
    """The augmented training batch of images ``idx`` on the device (images in ``layout``)."""
    x = data.images[idx]
    mask = data.masks[idx] if data.masks is not None else None
    if cfg.augment:
        if mask is None:
            x = augment(x, cfg.augment, g)
        else:  # masks move with their images
            both = augment(torch.cat([x, mask.to(x.dtype)], dim=1), cfg.augment, g)
            x, mask = both[:, : x.shape[1]], both[:, x.shape[1] :] > 0.5
        if cfg.randaugment is not None:
            x, mask = rand_augment(x, cfg.randaugment, g), None  # its geometric operations do not move masks
    mask = mask.to(device, non_blocking=True) if mask is not None else None
    x = x.to(device, non_blocking=True, memory_format=layout)
    return Batch(x, data.labels[idx].to(device, non_blocking=True), idx, mask)
