"""LAP: window weights, pooling, knowledge injection and the interpretation maps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.lap import (
    LAP,
    LAPParams,
    LocalAttentionPool,
    distance_pool,
    injected,
    local_attention_pool,
    window_weights,
)
from xbench.models.output import Batch

CTX = MethodContext(
    num_classes=3, in_channels=1, image_size=(16, 16), mean=(0.5,), std=(0.5,),
    backbone="resnet_cifar", backbone_params={"depth": 8, "width": 4}, seed=0,
)  # fmt: skip


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_window_weights_sum_to_one(size: tuple[int, int]) -> None:
    scores = torch.randn(2, 1, *size) * 3
    w = window_weights(scores, 2)
    assert w.shape == (2, -(-size[0] // 2), -(-size[1] // 2), 4)
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(w.shape[:-1]))
    assert (w >= 0).all()


def test_constant_scores_pool_like_average_pooling() -> None:
    x = torch.randn(2, 5, 8, 6)
    out = local_attention_pool(x, torch.full((2, 1, 8, 6), 0.7), 2)
    torch.testing.assert_close(out, F.avg_pool2d(x, 2))
    torch.testing.assert_close(local_attention_pool(x, torch.zeros(2, 1, 8, 6), None), x.mean(dim=(2, 3)))


def test_weights_follow_the_scores_within_a_window() -> None:
    x = torch.arange(4.0).view(1, 1, 2, 2)
    scores = torch.tensor([[[[0.0, 0.0], [0.0, 100.0]]]])  # the last pixel dominates its window
    assert float(local_attention_pool(x, scores, 2)) == pytest.approx(3.0, abs=1e-4)
    s = torch.log(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))  # softmax weights 0.1, 0.2, 0.3, 0.4
    assert float(local_attention_pool(x, s, 2)) == pytest.approx(0.1 * 0 + 0.2 * 1 + 0.3 * 2 + 0.4 * 3, abs=1e-5)


def test_lap_layer_with_a_zeroed_head_is_average_pooling() -> None:
    layer = LocalAttentionPool(3, 4, 2)
    last = layer.head[-1]
    assert isinstance(last, nn.Conv2d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = torch.randn(2, 3, 6, 6)
    pooled, scores = layer(x)
    torch.testing.assert_close(pooled, F.avg_pool2d(x, 2))
    assert scores.shape == (2, 1, 6, 6)


def test_lap_net_replaces_downsampling_and_keeps_resolutions() -> None:
    method = LAP(LAPParams(), CTX)
    model = method.build()
    strided = [m for m in model.backbone.stages.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert not strided, "stride-2 convolutions should have become LAP layers"
    out = model(torch.rand(2, 1, 16, 16))
    assert out.logits.shape == (2, 3)
    assert [tuple(s.shape[-2:]) for s in out.maps] == [(16, 16), (8, 8), (4, 4)]  # two 2×2 LAPs + global
    assert tuple(out.features.shape[-2:]) == (4, 4)  # same final resolution as the plain backbone
    plain = LAP(LAPParams(downsample=False), CTX).build()
    assert len(plain(torch.rand(1, 1, 16, 16)).maps) == 1


def test_native_maps_last_and_product() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    last = LAP(LAPParams(), CTX)
    model = last.build().eval()
    maps = last.native_maps(model, x, y)
    assert maps.shape == (2, 16, 16) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    product = LAP(LAPParams(interpretation="product"), CTX)
    both = product.native_maps(model, x, y)
    scores = model(x).maps
    hand = torch.ones(2, 16, 16)
    for s in scores:
        up = F.interpolate(s, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
        lo, hi = up.flatten(1).amin(1)[:, None, None], up.flatten(1).amax(1)[:, None, None]
        hand = hand * (up - lo) / (hi - lo + 1e-8)
    torch.testing.assert_close(both, hand)


def test_injection_uses_masks_of_the_chosen_fraction_only() -> None:
    index = torch.arange(10_000)
    assert 0.08 < float(injected(index, 0.1).double().mean()) < 0.12
    method = LAP(LAPParams(injection=2.0, injection_fraction=1.0), CTX)
    model = method.build()
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    mask = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    out = model(x)
    ce = F.cross_entropy(out.logits, y)
    bce = torch.stack(
        [F.binary_cross_entropy_with_logits(s, F.adaptive_avg_pool2d(mask.float(), s.shape[-2:])) for s in out.maps]
    ).mean()
    torch.testing.assert_close(method.loss(out, Batch(x, y, torch.arange(4), mask)), ce + 2.0 * bce)
    # Without masks (or with injection off) the loss is plain cross-entropy.
    torch.testing.assert_close(method.loss(out, Batch(x, y, torch.arange(4), None)), ce)
    off = LAP(LAPParams(), CTX)
    torch.testing.assert_close(off.loss(out, Batch(x, y, torch.arange(4), mask)), ce)
    data = ImageSplit(x, y, mask, ["a", "b", "c"])
    assert method.uses_masks(data) and not off.uses_masks(data)
    assert not method.uses_masks(ImageSplit(x, y, None, ["a", "b", "c"]))


def test_injection_pulls_scores_toward_the_mask() -> None:
    torch.manual_seed(0)
    method = LAP(LAPParams(injection=5.0, injection_fraction=1.0, downsample=False), CTX)
    model = method.build()
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 3, (16,))
    mask = torch.zeros(16, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :8, :8] = True  # the object is always top-left
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = method.loss(model(x), Batch(x, y, torch.arange(16), mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
    maps = method.native_maps(model.eval(), x, y)
    assert maps[:, :8, :8].mean() > maps[:, 8:, 8:].mean() + 0.3


# -- the distance form (third-party code citing the paper) -----------------------------------------
def test_distance_pool_by_hand() -> None:
    # One channel, one 2x2 window with values 0, 1, 2, 4 and α = 0.5: w_j = exp(-0.25·(4 - x_j)²).
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    alpha = torch.tensor([0.5])
    w = [math.exp(-0.25 * (4 - v) ** 2) for v in (0.0, 1.0, 2.0, 4.0)]
    y, weights = distance_pool(x, alpha, 2)
    assert float(y) == pytest.approx(sum(wi * v for wi, v in zip(w, (0, 1, 2, 4), strict=True)) / 4, rel=1e-6)
    torch.testing.assert_close(weights, torch.tensor(w).view(1, 1, 2, 2))
    g, _ = distance_pool(x, alpha, None)  # the global layer over the same four values
    assert float(g) == pytest.approx(float(y), rel=1e-6)


def test_distance_pool_at_alpha_zero_is_average_pooling_and_overhanging_windows_average_real_pixels() -> None:
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    y, w = distance_pool(x, torch.tensor([0.0]), 2)
    assert y.shape == (2, 3, 3, 2) and w.shape == (2, 3, 5, 4)
    torch.testing.assert_close(y, F.avg_pool2d(x, 2, ceil_mode=True))
    torch.testing.assert_close(w, torch.ones_like(x))
    big, _ = distance_pool(x, torch.tensor([1e4]), 2)  # α → ∞ keeps only each window's maximum
    torch.testing.assert_close(big * torch.tensor([4.0, 4.0, 2.0])[:, None], F.max_pool2d(x, 2, ceil_mode=True))


def test_distance_form_builds_trains_and_explains() -> None:
    method = LAP(LAPParams(form="distance"), CTX)
    model = method.build()
    assert not any(isinstance(m, LocalAttentionPool) for m in model.modules())
    alphas = [p for n, p in model.named_parameters() if n.endswith("alpha")]
    assert len(alphas) == 3  # two downsampling layers and the global one
    x = torch.randn(4, 1, 16, 16)
    loss = method.loss(model(x), Batch(x, torch.tensor([0, 1, 2, 0]), torch.arange(4)))
    loss.backward()
    assert all(a.grad is not None and float(a.grad.abs()) > 0 for a in alphas)
    maps = method.native_maps(model.eval(), x, torch.zeros(4, dtype=torch.long))
    assert maps.shape == (4, 16, 16) and float(maps.amax()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="injection needs form: score"):
        LAPParams(form="distance", injection=1.0)


# -- added to a trained CNN ------------------------------------------------------------------------
def test_from_pretrained_requires_the_baseline_and_copies_its_weights() -> None:
    from xbench.methods.baseline import Baseline
    from xbench.params import NoParams

    assert LAP.required_method(LAPParams()) is None
    assert LAP.required_method(LAPParams(from_pretrained="baseline")) == "baseline"
    torch.manual_seed(3)
    base = Baseline(NoParams(), CTX).build()
    method = LAP(LAPParams(from_pretrained="baseline"), CTX)
    torch.manual_seed(4)
    model = method.build()
    method.load_required(model, base.state_dict())
    state = model.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(state[k], v), k
    with pytest.raises(RuntimeError, match="do not fit"):
        method.load_required(model, {**base.state_dict(), "extra.weight": torch.zeros(1)})
    wider = MethodContext(3, 1, (16, 16), (0.5,), (0.5,), "resnet_cifar", {"depth": 8, "width": 8})
    with pytest.raises(RuntimeError):
        method.load_required(model, Baseline(NoParams(), wider).build().state_dict())


def test_a_suite_row_from_pretrained_builds_on_the_baseline_cell(tmp_path: Path) -> None:
    from xbench.engine.driver import RunOptions, run_suite
    from xbench.engine.plan import Plan
    from xbench.suite import Suite

    suite = Suite.model_validate(
        {
            "name": "tiny-lap",
            "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 96, "n_test": 32, "image_size": 16}}],
            "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
            "methods": ["lap", {"name": "lap", "params": {"from_pretrained": "baseline"}, "label": "lap (pretrained)"}],
            "metrics": ["top1"],
            "explainers": ["native"],
            "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "schedule": "constant"},
            "device": "cpu",
            "output": str(tmp_path / "out"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    plan = Plan(suite)
    plain, pretrained = (c for c in plan.cells() if c.method.name == "lap")
    assert plan.required_cell(plain) is None
    required = plan.required_cell(pretrained)
    assert required is not None and required.method.name == "baseline"
    assert plan.resolve(pretrained).model_key != plan.resolve(plain).model_key  # the baseline's key is part of it
    lines: list[str] = []
    result = run_suite(suite, RunOptions(progress=False, fail_fast=True, echo=lines.append))
    assert result.failed_cells == [], lines
    assert {r.method for r in result.records if r.metric == "top1"} == {"lap", "lap (pretrained)"}
    assert len(list((tmp_path / "cache" / "models").rglob("*.pt"))) == 3  # both LAP rows and the baseline
