"""The CIFAR-style ResNet: depth, width and stem stride shape the stages as documented."""

from __future__ import annotations

import pytest
import torch

from xbench.models.resnet import ResNetCifar, ResNetCifarParams


@pytest.mark.parametrize(("depth", "blocks"), [(8, 1), (14, 2), (20, 3)])
def test_depth_sets_blocks_per_stage(depth: int, blocks: int) -> None:
    net = ResNetCifar(ResNetCifarParams(depth=depth, width=4), in_channels=1)
    assert [len(stage) for stage in net.stages] == [blocks] * 3


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_stage_shapes_follow_width_and_stem_stride(stem_stride: int) -> None:
    net = ResNetCifar(ResNetCifarParams(depth=8, width=6, stem_stride=stem_stride), in_channels=3).eval()
    outs = net.forward_stages(torch.rand(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (6, 32 // stem_stride, 32 // stem_stride),
        (12, 16 // stem_stride, 16 // stem_stride),
        (24, 8 // stem_stride, 8 // stem_stride),
    ]
    assert net.stage_strides == [stem_stride, 2 * stem_stride, 4 * stem_stride]
    assert net.stage_channels == [6, 12, 24]


def test_forward_stages_can_stop_early() -> None:
    net = ResNetCifar(ResNetCifarParams(), in_channels=1).eval()
    x = torch.rand(1, 1, 16, 16)
    assert len(net.forward_stages(x, upto=0)) == 1
    torch.testing.assert_close(net.forward_stages(x)[-1], net(x))
