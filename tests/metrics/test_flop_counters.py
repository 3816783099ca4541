"""fvcore and torch's FlopCounterMode agree with each other and with published ResNet counts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from xbench.metrics.efficiency import count_macs, count_torch_flops


@pytest.mark.parametrize(("name", "published_gmacs", "blocks"), [("resnet18", 1.82, 8), ("resnet50", 4.1, 16)])
def test_counters_match_published_multiply_adds(name: str, published_gmacs: float, blocks: int) -> None:
    """He et al. (2016) and torchvision's model cards give 1.82 G and 4.1 G multiply-adds at 224×224."""
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.zeros(1, 3, 224, 224)
    macs, skipped = count_macs(model, x)
    flops, per_op = count_torch_flops(model, x)
    assert macs / 1e9 == pytest.approx(published_gmacs, rel=0.02)
    # Torch counts two FLOPs per multiply-add and only convolutions and matrix products; fvcore also
    # counts batch norm and the global average pool, so it is slightly higher (0.3% and 0.5% here).
    assert set(per_op) == {"aten.convolution", "aten.addmm"}
    assert flops / 2 < macs and flops / 2 == pytest.approx(macs, rel=0.01)
    # What fvcore skips is reported: the stem's max pool and one residual addition per block.
    assert skipped == {"aten::max_pool2d": 1, "aten::add_": blocks}
