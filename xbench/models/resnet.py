"""CIFAR-style ResNet (He et al., 2016, Sec. 4.2) with configurable depth and width.

Three stages of basic blocks with ``width``, ``2·width`` and ``4·width`` channels,
``(depth - 2) / 6`` blocks per stage. Depth 20 with width 16 is the paper's
ResNet-20; depth 8 with width 16 trains on 2 CPU cores at 28 px in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from xbench.models.base import Backbone, Normalize
from xbench.models.layers import Add, ReLU
from xbench.registry import BACKBONES


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, hook-safe (:mod:`xbench.models.layers`):
    one non-in-place ReLU module per use and the residual sum as an :class:`Add` module."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu1 = ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in-place: the sum is a tapped stage output that hooks may keep.
        return self.relu2(self.add(out, self.shortcut(x)))


class ResNetCifarParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(8, ge=8, le=1202, description="6n+2: 8, 14, 20, 32, 44, 56, 110, ... 1202")
    width: int = Field(16, ge=1, le=4096, description="channels of the first stage (at most 4096)")
    stem_stride: int = Field(1, ge=1, le=4, description="stride of the first conv; 2 quarters the cost on CPUs")

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: int) -> int:
        if v < 8 or (v - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {v}")
        return v


@BACKBONES.register("resnet_cifar")
class ResNetCifar(Backbone):
    """CIFAR-style ResNet; ``stages`` are the three residual stages."""

    Params = ResNetCifarParams
    description = "CIFAR-style ResNet (He et al. 2016): 3 stages, depth 6n+2, configurable width"

    def __init__(
        self,
        params: ResNetCifarParams,
        in_channels: int,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        super().__init__()
        w = params.width
        n = (params.depth - 2) // 6
        self.stem = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(in_channels, w, 3, params.stem_stride, 1, bias=False),
            nn.BatchNorm2d(w),
            ReLU(),
        )
        widths = [w, 2 * w, 4 * w]
        stages, c_in = [], w
        for i, c_out in enumerate(widths):
            blocks = [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths
        self.stage_strides = [params.stem_stride * s for s in (1, 2, 4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
