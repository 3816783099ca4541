"""ECR: the background-only attack, the consistency score and the sample weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.ecr import ECR, ECRParams, cam
from xbench.models.background_attack import (
    AttackParams,
    background_mask,
    background_pgd,
    class_activation_map,
    consistency_weights,
    explanation_consistency,
    map_cosine,
)
from xbench.models.output import Batch

CTX = MethodContext(
    num_classes=4, in_channels=3, image_size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3,
    backbone="resnet_cifar", backbone_params={"depth": 8, "width": 4}, seed=0,
)  # fmt: skip


def test_the_attack_never_touches_foreground_pixels() -> None:
    torch.manual_seed(0)
    model = ECR(ECRParams(), CTX).build().eval()
    x = torch.rand(6, 3, 16, 16)
    y = torch.randint(0, 4, (6,))
    maps = cam(model, x, y)
    bg = background_mask(maps, 0.5)
    assert 0 < bg.mean() < 1  # both regions exist, so the check below means something
    x_hat = background_pgd(lambda z: model(z).logits, x, y, bg, AttackParams(epsilon=0.1, step_size=0.05, steps=3))
    moved = (x_hat - x).abs().amax(dim=1, keepdim=True) > 0
    assert not (moved & (bg == 0)).any(), "foreground pixels were perturbed"
    assert moved.any(), "the attack changed nothing"
    assert (x_hat - x).abs().max() <= 0.1 + 1e-6
    assert x_hat.min() >= 0 and x_hat.max() <= 1


def test_the_attack_raises_the_loss_and_leaves_parameter_gradients_alone() -> None:
    torch.manual_seed(1)
    model = ECR(ECRParams(), CTX).build().eval()
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    bg = torch.ones(8, 1, 16, 16)
    x_hat = background_pgd(lambda z: model(z).logits, x, y, bg, AttackParams(epsilon=0.05, step_size=0.01, steps=5))
    with torch.no_grad():
        assert F.cross_entropy(model(x_hat).logits, y) > F.cross_entropy(model(x).logits, y)
    assert all(p.grad is None for p in model.parameters())


def test_the_attack_moves_pixels_at_the_bounds_of_the_image() -> None:
    """Black (0) and white (1) background pixels move inwards: no clamp inside the graph kills their gradient."""
    w = torch.tensor([1.0, -1.0])  # logits (s, -s) of the pixel sum s: raising s raises the CE of class 1

    def logits(z: torch.Tensor) -> torch.Tensor:
        return z.sum(dim=(1, 2, 3))[:, None] * w

    x = torch.zeros(2, 1, 4, 4)
    x[1] = 1.0  # a white image: its CE for class 0 rises as pixels get darker
    y = torch.tensor([1, 0])
    bg = torch.ones(2, 1, 4, 4)
    bg[:, :, 0, 0] = 0  # one foreground pixel
    x_hat = background_pgd(logits, x, y, bg, AttackParams(epsilon=0.1, step_size=0.05, steps=3))
    expected = torch.full((2, 1, 4, 4), 0.1)
    expected[1] = 0.9
    expected[:, :, 0, 0] = x[:, :, 0, 0]
    torch.testing.assert_close(x_hat, expected)


def test_cam_is_the_class_weighted_sum_of_features() -> None:
    feats = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[0.0, 3.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m0 = class_activation_map(feats, weights, torch.tensor([0]), (2, 2))
    m1 = class_activation_map(feats, weights, torch.tensor([1]), (2, 2))
    # class 0 sees channel 0 (values 1,0,0,2 -> 0.5,0,0,1), class 1 channel 1 (0,3,1,0 -> 0,1,1/3,0)
    torch.testing.assert_close(m0[0], torch.tensor([[0.5, 0.0], [0.0, 1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(m1[0], torch.tensor([[0.0, 1.0], [1 / 3, 0.0]]), atol=1e-6, rtol=0)


def test_weights_have_mean_one_and_rank_inconsistent_samples_higher() -> None:
    e = torch.tensor([0.95, 0.2, 0.6, 0.99, 0.5])
    v = consistency_weights(e)
    assert float(v.mean()) == pytest.approx(1.0)
    assert torch.equal(torch.argsort(v), torch.argsort(-e))  # lower consistency -> larger weight
    expected = (1 - e) / (1 - e).mean()
    torch.testing.assert_close(v, expected)
    assert torch.equal(consistency_weights(torch.ones(3)), torch.ones(3))  # all consistent: uniform


def test_consistency_is_one_without_attack_and_the_cosine_of_the_maps_otherwise() -> None:
    x, y = torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)

    def explain(xb: Tensor, yb: Tensor) -> Tensor:
        return xb[:, 0]

    e, _ = explanation_consistency(explain, lambda z: z.flatten(1)[:, :2], x, y, AttackParams(steps=0))
    torch.testing.assert_close(e, torch.ones(3))
    a, b = torch.rand(2, 5, 5), torch.rand(2, 5, 5)
    hand = (a * b).flatten(1).sum(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1))
    torch.testing.assert_close(map_cosine(a, b), hand)


def test_ecr_reweights_after_warmup_and_weights_the_loss() -> None:
    torch.manual_seed(0)
    method = ECR(ECRParams(steps=1, warmup_epochs=1, batch_size=16), CTX)
    model = method.build()
    data = ImageSplit(torch.rand(40, 3, 16, 16), torch.randint(0, 4, (40,)), None, list("abcd"))
    method.on_epoch_start(model, 0, data, torch.device("cpu"))
    assert method.weights is None  # warm-up: uniform
    model.train()
    method.on_epoch_start(model, 1, data, torch.device("cpu"))
    assert model.training, "the consistency pass must restore train mode"
    assert method.weights is not None and method.weights.shape == (40,)
    assert float(method.weights.mean()) == pytest.approx(1.0, abs=1e-5)
    # each reweighting records how concentrated the weights are
    (stats,) = method.history
    w = method.weights.double()
    assert stats["ess_fraction"] == pytest.approx(float(w.sum() ** 2 / (40 * (w**2).sum())))
    assert 0 < stats["ess_fraction"] <= 1 and 0.1 <= stats["top_decile_share"] <= 1
    batch = Batch(data.images[:8], data.labels[:8], torch.arange(8))
    out = model(batch.x)
    ce = F.cross_entropy(out.logits, batch.y, reduction="none")
    torch.testing.assert_close(method.loss(out, batch), (method.weights[:8] * ce).mean())


def test_ecr_native_maps_are_its_cam() -> None:
    method = ECR(ECRParams(), CTX)
    model = method.build().eval()
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    maps = method.native_maps(model, x, y)
    assert maps.shape == (2, 16, 16)
    assert isinstance(model.fc, nn.Linear)
    torch.testing.assert_close(maps, cam(model, x, y))
    assert float(maps.amin()) >= 0 and float(maps.amax()) == pytest.approx(1.0, abs=1e-6)


def test_interval_keeps_weights_between_reevaluations(monkeypatch: pytest.MonkeyPatch) -> None:
    method = ECR(ECRParams(warmup_epochs=1, interval=3), CTX)
    evaluated: list[int] = []

    def fake(model: nn.Module, data: ImageSplit, device: torch.device, progress: bool = False) -> Tensor:
        evaluated.append(len(evaluated))
        return torch.rand(len(data))

    monkeypatch.setattr(method, "consistency", fake)
    data = ImageSplit(torch.rand(8, 3, 16, 16), torch.zeros(8, dtype=torch.long), None, list("abcd"))
    for epoch in range(8):
        method.on_epoch_start(nn.Identity(), epoch, data, torch.device("cpu"))
    assert len(evaluated) == 3  # epochs 1, 4 and 7


def test_weight_concentration_by_hand() -> None:
    from xbench.models.background_attack import weight_concentration

    uniform = weight_concentration(torch.ones(20))
    assert uniform["ess_fraction"] == pytest.approx(1.0) and uniform["top_decile_share"] == pytest.approx(0.1)
    one = weight_concentration(torch.tensor([0.0] * 9 + [10.0]))
    assert one["ess_fraction"] == pytest.approx(0.1) and one["top_decile_share"] == pytest.approx(1.0)
    # v = (1, 1, 2, 4): (Σv)² / (N·Σv²) = 64 / (4·22); the top decile is the largest weight, 4 of 8
    w = weight_concentration(torch.tensor([1.0, 1.0, 2.0, 4.0]))
    assert w["ess_fraction"] == pytest.approx(64 / 88) and w["top_decile_share"] == pytest.approx(0.5)


@pytest.mark.parametrize("similarity", ["cosine", "spearman"])
def test_the_similarity_param_chooses_e(similarity: str) -> None:
    from xbench.models.maps import spearman
    from xbench.models.output import LogitsOnly

    torch.manual_seed(0)
    method = ECR(ECRParams(steps=2, batch_size=8, similarity=similarity), CTX)  # type: ignore[arg-type]
    model = method.build().eval()
    data = ImageSplit(torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,)), None, list("abcd"))
    e = method.consistency(model, data, torch.device("cpu"))
    # by hand: the same attack, then the chosen similarity of the clean and the attacked CAM
    x, y = data.images, data.labels
    with torch.no_grad():
        clean = cam(model, x, y)
    x_hat = background_pgd(LogitsOnly(model), x, y, background_mask(clean, 0.5), method.params)
    with torch.no_grad():
        attacked = cam(model, x_hat, y)
    expected = map_cosine(clean, attacked) if similarity == "cosine" else spearman(clean, attacked).float()
    torch.testing.assert_close(e, expected)
