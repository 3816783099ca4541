"""A user's own CNN as an xbench backbone: TinyVGG, three conv blocks that each end in a max-pool."""

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from xbench.models.base import Backbone, Normalize


class TinyVGG(nn.Module):
    """The user's model as it was before xbench: conv blocks, then a classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        blocks, c_in = [], in_channels
        for c_out in (width, 2 * width, 4 * width):
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            blocks.append(nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyVGGParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown keys in a suite are errors
    width: int = Field(16, ge=1, description="channels of the first block; the next two have 2x and 4x")


class TinyVGGBackbone(Backbone):
    """TinyVGG in xbench's shape: a stem, then one stage per conv block (exits and taps attach after each)."""

    description = "example plugin: a user's 3-block VGG-style CNN (conv, BN, ReLU, max-pool)"
    Params = TinyVGGParams

    def __init__(
        self, params: TinyVGGParams, in_channels: int, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)
    ) -> None:
        super().__init__()
        net = TinyVGG(in_channels, width=params.width)  # its classifier goes unused: each method adds its own head
        self.stem = Normalize(mean, std)  # images arrive in [0, 1]; the backbone normalises them itself
        self.stages = nn.ModuleList(net.features)
        self.stage_channels = [params.width, 2 * params.width, 4 * params.width]
        self.stage_strides = [2, 4, 8]  # cumulative: each block halves the resolution
