"""LAP: window weights, pooling, knowledge injection and the interpretation maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbench.data.base import ImageSplit
from xbench.methods.base import Batch, MethodContext
from xbench.methods.lap import LAP, LAPParams, LocalAttentionPool, injected, local_attention_pool, window_weights

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
