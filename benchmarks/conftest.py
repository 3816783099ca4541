"""Shared setup of the cost benchmarks (``python -m pytest benchmarks``; not part of the test run).

Sizes follow the quick suite: a CIFAR-style ResNet-8 (width 16, stride-2 stem) on 64×64 grey
images, ``XBENCH_BENCH_N`` (default 256) explained images. The model is untrained: costs do not
depend on its weights. Images and maps are smooth (blurred noise), like real images and
saliency maps, so solvers and segmenters do realistic work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.explain.base import Explainer
from xbench.methods.base import MethodContext
from xbench.metrics.context import EvalContext, Predictions
from xbench.registry import METHODS

SIZE = 64
CLASSES = 10


def smooth(n: int, channels: int, size: int, seed: int) -> Tensor:
    """Blurred uniform noise in [0, 1], (n, channels, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.avg_pool2d(torch.rand(n, channels, size + 6, size + 6, generator=g), 7, 1)
    lo = x.flatten(1).amin(1)[:, None, None, None]
    hi = x.flatten(1).amax(1)[:, None, None, None]
    return (x - lo) / (hi - lo)


class Precomputed(Explainer):
    """Stands for the maps a context is given in its memo (:meth:`Setup.context`); never called."""

    name = "precomputed"

    def explain(self, method, model, x, target, seed):  # type: ignore[no-untyped-def]
        raise AssertionError("the maps are precomputed")


@dataclass
class Setup:
    model: nn.Module
    method: object
    data: ImageSplit
    maps: Tensor
    n: int
    predictions: Predictions | None = None

    def context(self, batch_size: int = 500, seed: int = 0) -> EvalContext:
        """A fresh context (no shared results) with the maps already computed."""
        ctx = EvalContext(
            self.model, self.method, self.data, torch.device("cpu"), batch_size=batch_size, progress=False,  # type: ignore[arg-type]
            explainers={"smooth": Precomputed()}, explain_limit=None, seed=seed,
        ).with_explainer("smooth")  # fmt: skip
        ctx.memo("explanations:smooth", lambda: self.maps)
        if self.predictions is not None:  # computed once per cell for every metric, not per explainer
            ctx.memo("predictions", lambda: self.predictions)
        return ctx


def make_setup(n: int, size: int) -> Setup:
    """The quick suite's ResNet-8 (untrained, seed 0) on ``n`` smooth grey ``size``-px images and smooth maps."""
    ctx = MethodContext(CLASSES, 1, (size, size), (0.5,), (0.25,), "resnet_cifar",
                        {"depth": 8, "width": 16, "stem_stride": 2})  # fmt: skip
    cls = METHODS.get("baseline")
    method = cls(cls.Params(), ctx)
    torch.manual_seed(0)
    model = method.build().eval()
    data = ImageSplit(smooth(n, 1, size, seed=0), torch.arange(n) % CLASSES, None, [str(i) for i in range(CLASSES)])
    return Setup(model, method, data, smooth(n, 1, size, seed=1)[:, 0], n)


@pytest.fixture(scope="session")
def quick_setup() -> Setup:
    setup = make_setup(int(os.environ.get("XBENCH_BENCH_N", "256")), SIZE)
    setup.predictions = setup.context().predictions()
    return setup
