"""Explanation consistency: the attack is skipped only where it cannot change the maps."""

from __future__ import annotations

import pytest
import torch

from xbench.data.base import ImageSplit
from xbench.explain.base import RandomMaps
from xbench.methods.base import MethodContext
from xbench.methods.baseline import Baseline
from xbench.metrics.background_stability import ExplanationConsistency, ExplanationConsistencyParams
from xbench.metrics.context import EvalContext


def context() -> EvalContext:
    torch.manual_seed(0)
    mctx = MethodContext(3, 1, (12, 12), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = Baseline(Baseline.Params(), mctx)
    model = method.build().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 1, 12, 12, generator=g)
    data = ImageSplit(x, torch.arange(20) % 3, (x > 0.5).float()[:, 0], ["a", "b", "c"])
    ctx = EvalContext(model, method, data, torch.device("cpu"), batch_size=8, progress=False,
                      explainers={"random": RandomMaps()}, explain_limit=None)  # fmt: skip
    return ctx.with_explainer("random")


def test_random_maps_skip_the_attack_with_the_same_score(monkeypatch: pytest.MonkeyPatch) -> None:
    metric = ExplanationConsistency(ExplanationConsistencyParams(steps=3))
    (skipped,) = metric.compute(context())
    assert skipped.params["attack"].startswith("skipped")
    monkeypatch.setattr(RandomMaps, "reads_input", True)  # as if the maps could depend on the pixels
    (attacked,) = metric.compute(context())
    assert "attack" not in attacked.params
    assert skipped.n == attacked.n == 20
    assert skipped.value == pytest.approx(attacked.value, abs=1e-6)
    # two independent uniform maps: Spearman's ρ ≈ 0 (sd of the mean of 20 images of 144 pixels ≈ 0.02)
    assert skipped.params["similarity"] == "spearman"
    assert skipped.value == pytest.approx(0.0, abs=0.06)
    # ... and their cosine ≈ E[u]² / E[u²] = 0.75, ECR's similarity
    (cosine,) = ExplanationConsistency(ExplanationConsistencyParams(steps=3, similarity="cosine")).compute(context())
    assert cosine.params["similarity"] == "cosine" and cosine.value == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("similarity", ["spearman", "cosine"])
def test_no_attack_is_perfect_consistency_and_an_attack_lowers_it(similarity: str) -> None:
    from xbench.explain.base import GradCam

    ctx = context()
    ctx = EvalContext(ctx.model, ctx.method, ctx.data, ctx.device, batch_size=8, progress=False,
                      explainers={"gradcam": GradCam()}, explain_limit=None).with_explainer("gradcam")  # fmt: skip
    (none,) = ExplanationConsistency(ExplanationConsistencyParams(steps=0, similarity=similarity)).compute(ctx)
    assert none.value == pytest.approx(1.0, abs=1e-6)
    strong = ExplanationConsistencyParams(steps=5, epsilon=0.3, step_size=0.1, similarity=similarity)
    (attacked,) = ExplanationConsistency(strong).compute(ctx)
    assert attacked.value < 0.99
