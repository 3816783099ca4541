"""The one training loop: schedules, batched augmentation, learning, determinism, divergence."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from xbench.data.base import ImageSplit
from xbench.engine.cache import Cache
from xbench.engine.checkpoints import CachedEpochs
from xbench.engine.train import TrainingError, augment, lr_factor, random_crop, train
from xbench.methods.base import MethodContext, NoParams
from xbench.methods.baseline import Baseline
from xbench.models.output import Batch, ModelOutput
from xbench.suite import TrainingConfig

CPU = torch.device("cpu")


# -- learning-rate schedules ---------------------------------------------------------------
def test_cosine_schedule_known_values() -> None:
    cfg = TrainingConfig(epochs=10, schedule="cosine")
    spe = 10  # 100 steps in all
    assert lr_factor(cfg, 0, spe) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, spe) == pytest.approx(0.5)
    assert lr_factor(cfg, 25, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(cfg, 99, spe) == pytest.approx(0.0, abs=1e-3)
    assert lr_factor(cfg, 100, spe) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor(cfg, s, spe) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone decay


def test_linear_warmup_then_cosine() -> None:
    cfg = TrainingConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    spe = 10  # 20 warm-up steps
    warm = [lr_factor(cfg, s, spe) for s in range(20)]
    assert warm == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert warm[-1] == pytest.approx(1.0)
    assert lr_factor(cfg, 20, spe) == pytest.approx(1.0)  # cosine starts after the warm-up
    assert lr_factor(cfg, 60, spe) == pytest.approx(0.5)  # half-way through the remaining 80 steps
    assert lr_factor(cfg, 100, spe) == pytest.approx(0.0, abs=1e-12)


def test_fractional_warmup() -> None:
    cfg = TrainingConfig(epochs=4, schedule="constant", warmup_epochs=0.5)
    assert [lr_factor(cfg, s, 8) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_step_schedule_divides_by_ten() -> None:
    cfg = TrainingConfig(epochs=10, schedule="step", step_epochs=[3, 6])
    spe = 5
    expected = {0: 1.0, 2: 1.0, 3: 0.1, 5: 0.1, 6: 0.01, 9: 0.01}
    for epoch, factor in expected.items():
        for step in (epoch * spe, epoch * spe + spe - 1):
            assert lr_factor(cfg, step, spe) == pytest.approx(factor), (epoch, step)


def test_constant_schedule() -> None:
    cfg = TrainingConfig(epochs=3, schedule="constant")
    assert {lr_factor(cfg, s, 7) for s in range(21)} == {1.0}


def test_onecycle_shape() -> None:
    cfg = TrainingConfig(epochs=10, schedule="onecycle")
    spe = 10  # peak at step 30
    assert lr_factor(cfg, 0, spe) == pytest.approx(0.04)
    assert lr_factor(cfg, 15, spe) == pytest.approx(0.04 + 0.96 * 0.5)
    assert lr_factor(cfg, 30, spe) == pytest.approx(1.0)
    assert lr_factor(cfg, 65, spe) == pytest.approx(0.5)
    assert lr_factor(cfg, 100, spe) == pytest.approx(0.0, abs=1e-12)


# -- augmentation -------------------------------------------------------------------------------
def _distinct_images(b: int = 8, c: int = 2, h: int = 6, w: int = 7) -> Tensor:
    # Distinct positive values everywhere, so a window of the padded image is identified uniquely.
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).view(b, c, h, w)


def test_random_crop_is_a_shifted_window_of_the_padded_input() -> None:
    x = _distinct_images()
    pad = 2
    out = random_crop(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    offsets = []
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1, f"sample {i} is not a window of its padded input"
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # offsets are drawn per sample, not once per batch


def test_random_crop_manual_slice_for_one_sample() -> None:
    x = _distinct_images(b=1, c=3, h=5, w=5)
    pad = 1
    # The crop draws dy for the batch, then dx, from the generator it is given.
    g = torch.Generator().manual_seed(3)
    dy = int(torch.randint(0, 2 * pad + 1, (1,), generator=g))
    dx = int(torch.randint(0, 2 * pad + 1, (1,), generator=g))
    out = random_crop(x, pad, torch.Generator().manual_seed(3))
    expected = F.pad(x, (pad,) * 4)[0, :, dy : dy + 5, dx : dx + 5]
    assert torch.equal(out[0], expected)


def test_random_crop_is_seeded() -> None:
    x = _distinct_images()
    a = random_crop(x, 2, torch.Generator().manual_seed(1))
    b = random_crop(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_flip_mirrors_some_samples_and_keeps_others() -> None:
    x = _distinct_images(b=64)
    out = augment(x, ["flip"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each sample is exactly one of the two
    assert 10 < sum(flipped) < 54


def test_crop_and_flip_keep_shape() -> None:
    x = torch.rand(5, 3, 16, 16)
    assert augment(x, ["crop", "flip"], torch.Generator().manual_seed(0)).shape == x.shape


# -- training ------------------------------------------------------------------------------------------
def halves_dataset(n: int = 128, size: int = 12, seed: int = 0) -> ImageSplit:
    """Class 0 has a bright left half, class 1 a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.rand(n, 1, size, size, generator=g)
    left = labels == 0
    images[left, :, :, : size // 2] += 0.6
    images[~left, :, :, size // 2 :] += 0.6
    return ImageSplit(images.clamp(0, 1), labels, None, ["left", "right"])


def tiny_method(data: ImageSplit, cls: type[Baseline] = Baseline) -> Baseline:
    ctx = MethodContext(
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        backbone="resnet_cifar",
        backbone_params={"depth": 8, "width": 4},
    )
    return cls(NoParams(), ctx)


CFG = TrainingConfig(epochs=4, batch_size=32, lr=0.05, schedule="cosine")


@torch.no_grad()
def loss_and_accuracy(model: torch.nn.Module, data: ImageSplit) -> tuple[float, float]:
    model.eval()
    logits = model(data.images).logits
    return float(F.cross_entropy(logits, data.labels)), float((logits.argmax(1) == data.labels).float().mean())


def test_training_learns_a_separable_task() -> None:
    data = halves_dataset()
    method = tiny_method(data)
    torch.manual_seed(0)
    model = method.build()
    loss_before, _ = loss_and_accuracy(model, data)
    stats = train(method, model, data, CFG, CPU, seed=0, progress=False)
    loss_after, accuracy = loss_and_accuracy(model, data)
    assert stats.epochs == 4 and stats.steps == 4 * (128 // 32)
    assert math.isfinite(stats.final_loss)
    assert loss_after < 0.5 * loss_before
    assert accuracy > 0.9


def test_last_partial_batch_is_dropped() -> None:
    data = halves_dataset(n=70)
    method = tiny_method(data)
    stats = train(method, method.build(), data, CFG.model_copy(update={"epochs": 1}), CPU, seed=0, progress=False)
    assert stats.steps == 70 // 32


def test_zero_epochs_changes_nothing() -> None:
    data = halves_dataset(n=32)
    method = tiny_method(data)
    model = method.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train(method, model, data, CFG.model_copy(update={"epochs": 0}), CPU, seed=0, progress=False)
    assert stats.steps == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _trained_state(seed: int, augment_kinds: list[str]) -> dict[str, Tensor]:
    data = halves_dataset(n=64)
    method = tiny_method(data)
    torch.manual_seed(0)  # same initial weights in every run; only the training seed varies
    model = method.build()
    cfg = TrainingConfig(epochs=2, batch_size=16, lr=0.05, augment=augment_kinds)
    train(method, model, data, cfg, CPU, seed=seed, progress=False)
    return model.state_dict()


@pytest.mark.parametrize("augment_kinds", [[], ["crop", "flip"]], ids=["plain", "augmented"])
def test_training_is_deterministic_in_the_seed(augment_kinds: list[str]) -> None:
    a = _trained_state(0, augment_kinds)
    b = _trained_state(0, augment_kinds)
    c = _trained_state(1, augment_kinds)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class NaNAtSixthStep(Baseline):
    """Returns a NaN loss on its sixth call: epoch 2, step 2 with 4 steps per epoch."""

    calls = 0

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        self.calls += 1
        loss = super().loss(output, batch)
        return loss * float("nan") if self.calls == 6 else loss


def test_non_finite_loss_names_epoch_and_step() -> None:
    data = halves_dataset()
    method = tiny_method(data, NaNAtSixthStep)
    with pytest.raises(TrainingError) as info:
        train(method, method.build(), data, CFG, CPU, seed=0, desc="toy/nan/seed0", progress=False)
    message = str(info.value)
    assert "epoch 2" in message and "step 2" in message and "global step 6" in message
    assert "toy/nan/seed0" in message
    assert "\n" not in message
    assert info.value.exit_code == 1


class _MaskChecker(Baseline):
    """Records whether every training batch's mask still covers its (augmented) image's bright pixels."""

    aligned: list[bool]

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        assert batch.mask is not None and batch.mask.dtype == torch.bool
        self.aligned.append(bool(torch.equal(batch.x > 0.5, batch.mask)))
        return super().loss(output, batch)


def test_augmentation_moves_masks_with_their_images() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(64, 1, 12, 12, generator=g) > 0.7
    data = ImageSplit(masks.float(), torch.arange(64) % 2, masks, ["a", "b"])  # image == mask, pixel for pixel
    method = tiny_method(data, _MaskChecker)
    assert isinstance(method, _MaskChecker)
    method.aligned = []
    cfg = CFG.model_copy(update={"epochs": 2, "augment": ["crop", "flip"]})
    train(method, method.build(), data, cfg, CPU, seed=0, progress=False)
    assert method.aligned and all(method.aligned)


# -- epoch checkpoints ------------------------------------------------------------------------------
class Stateful(Baseline):
    """Keeps state between epochs and draws from torch's global generator in its loss."""

    def __init__(self, params: NoParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.scale = torch.ones(())

    def on_epoch_start(self, model: torch.nn.Module, epoch: int, data: ImageSplit, device: torch.device) -> None:
        self.scale = self.scale * 0.8

    def state_dict(self) -> dict[str, Tensor]:
        return {"scale": self.scale.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.scale = state["scale"]

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        w = torch.rand(batch.y.shape[0])
        return self.scale * (w * F.cross_entropy(output.logits, batch.y, reduction="none")).mean()


class Killed(Exception):
    pass


class DiesAfterEpoch:
    """Saves epoch checkpoints through the real cache (torch.save, weights-only load), then 'dies'."""

    def __init__(self, store: CachedEpochs, epoch: int | None) -> None:
        self.store, self.epoch = store, epoch

    def restore(self) -> dict[str, Any] | None:
        return self.store.restore()

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        assert state["epoch"] == epoch
        self.store.save(epoch, state)
        if epoch == self.epoch:
            raise Killed


def test_training_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = halves_dataset(n=64)
    cfg = TrainingConfig(epochs=4, batch_size=16, lr=0.05, augment=["crop", "flip"])
    store = CachedEpochs(Cache(tmp_path), "k" * 64, "cell")

    def fresh() -> tuple[Baseline, torch.nn.Module]:
        method = tiny_method(data, Stateful)
        torch.manual_seed(0)
        return method, method.build()

    method, model = fresh()
    whole = train(method, model, data, cfg, CPU, seed=3, progress=False)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    method, model = fresh()
    with pytest.raises(Killed):
        train(method, model, data, cfg, CPU, seed=3, progress=False, checkpoint=DiesAfterEpoch(store, 2))
    saved = store.restore()
    assert saved is not None and saved["epoch"] == 2

    method, model = fresh()
    torch.manual_seed(12345)  # a new process: the global generator is elsewhere
    resumed = train(method, model, data, cfg, CPU, seed=3, progress=False, checkpoint=DiesAfterEpoch(store, None))
    assert resumed.resumed_from == 2 and whole.resumed_from == 0
    assert resumed.steps == whole.steps and resumed.final_loss == whole.final_loss
    assert all(torch.equal(expected[k], v) for k, v in model.state_dict().items())
    assert float(method.scale) == pytest.approx(0.8**4)  # restored, then one decay per remaining epoch

    # Without the method's state, the same resume gives other weights: the state matters.
    method, model = fresh()
    method.load_state_dict = lambda state: None  # type: ignore[method-assign]
    train(method, model, data, cfg, CPU, seed=3, progress=False, checkpoint=store)
    assert not all(torch.equal(expected[k], v) for k, v in model.state_dict().items())


# -- RandAugment -------------------------------------------------------------------------------------
def test_rand_augment_is_torchvision_per_image_seeded_by_the_loop_generator() -> None:
    from torchvision.transforms import v2

    from xbench.engine.train import rand_augment
    from xbench.suite import RandAugmentConfig

    cfg = RandAugmentConfig(name="randaugment", num_ops=2, magnitude=5)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    out = rand_augment(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left alone
    assert torch.equal(out, rand_augment(x, cfg, torch.Generator().manual_seed(4)))
    assert not torch.equal(out, rand_augment(x, cfg, torch.Generator().manual_seed(5)))
    # By hand: the seed drawn from the loop's generator, then torchvision's RandAugment image by image.
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(4)))
    torch.manual_seed(seed)
    augmenter = v2.RandAugment(2, 5, 31)
    expected = torch.stack([augmenter((img * 255).round().to(torch.uint8)) for img in x]).float() / 255
    torch.set_rng_state(before)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
    assert torch.equal((out * 255).round() / 255, out)  # 8-bit pixels, as PIL pipelines have
    changed = [not torch.equal(o, (i * 255).round() / 255) for o, i in zip(out, x, strict=True)]
    assert sum(changed) >= 4  # operations differ per image: most images change


def test_randaugment_refuses_a_method_that_trains_on_masks() -> None:
    from xbench.methods.lap import LAP, LAPParams

    data = halves_dataset()
    data = ImageSplit(data.images, data.labels, data.images > 0.5, data.classes)
    ctx = MethodContext(2, 1, (12, 12), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = LAP(LAPParams(injection=1.0), ctx)
    cfg = TrainingConfig(epochs=1, augment=["randaugment"])  # type: ignore[list-item]
    with pytest.raises(TrainingError, match="randaugment moves pixels but not the masks that lap trains on"):
        train(method, method.build(), data, cfg, torch.device("cpu"), seed=0, progress=False)
