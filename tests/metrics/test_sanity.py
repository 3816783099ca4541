"""Cascading parameter randomisation (Adebayo et al., 2018) on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.baseline import Baseline
from xbench.metrics.context import EvalContext
from xbench.metrics.efficiency import count_parameters
from xbench.metrics.sanity import (
    ParameterRandomisation,
    RandomisationCheck,
    average_ranks,
    cascade,
    reinitialise,
    spearman,
)
from xbench.registry import EXPLAINERS, METRICS


def test_spearman_by_hand() -> None:
    a = torch.tensor([[[0.1, 0.4], [0.2, 0.9]]])
    assert spearman(a, a).item() == pytest.approx(1.0)
    assert spearman(a, a**3 + 1).item() == pytest.approx(1.0)  # only ranks matter
    assert spearman(a, 1 - a).item() == pytest.approx(-1.0)
    # ranks [1, 3, 2, 4] vs [2, 1, 4, 3] (no ties): ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 6·(1+4+4+1)/60 = 0
    b = torch.tensor([[[0.2, 0.1], [0.4, 0.3]]])
    assert spearman(a, b).item() == pytest.approx(0.0)
    # ties take average ranks: [0, 0, 1, 2] → [1.5, 1.5, 3, 4]; vs [1, 2, 3, 4]: Pearson of the ranks
    c, d = torch.tensor([[[0.0, 0.0], [1, 2]]]), torch.tensor([[[1.0, 2], [3, 4]]])
    r1, r2 = torch.tensor([1.5, 1.5, 3, 4]), torch.tensor([1.0, 2, 3, 4])
    expected = torch.corrcoef(torch.stack([r1, r2]))[0, 1].item()
    assert spearman(c, d).item() == pytest.approx(expected)
    zeros = torch.zeros(1, 2, 2)
    assert spearman(zeros, zeros).item() == 1.0 and spearman(zeros, a).item() == 0.0


def test_average_ranks_match_scipy() -> None:
    from scipy.stats import rankdata

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (5, 40), generator=g).double()  # many ties
    x[0] = 3.0  # one row all tied
    expected = torch.from_numpy(rankdata(x.numpy(), axis=1, method="average"))
    assert torch.equal(average_ranks(x), expected)
    y = torch.rand(3, 50, generator=g, dtype=torch.float64)
    assert torch.equal(average_ranks(y), torch.from_numpy(rankdata(y.numpy(), axis=1, method="average")))


def build(seed: int = 0) -> tuple[Baseline, nn.Module]:
    torch.manual_seed(seed)
    mctx = MethodContext(3, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = Baseline(Baseline.Params(), mctx)
    return method, method.build().eval()


def test_cascade_goes_from_the_head_to_the_stem_and_covers_every_parameter() -> None:
    _, model = build()
    steps = cascade(model)
    assert [s for s, _ in steps] == ["head", "stage2", "stage1", "stage0", "stem"]
    assert model.fc in steps[0][1]
    drawn = [reinitialise(modules, seed=i) for i, (_, modules) in enumerate(steps)]
    assert sum(drawn) == count_parameters(model)
    assert drawn[0] == model.fc.weight.numel() + model.fc.bias.numel()


def test_reinitialise_is_seeded_and_leaves_the_global_generator_alone() -> None:
    _, a = build()
    _, b = build()
    state = torch.random.get_rng_state()
    reinitialise([a.fc], seed=3)
    reinitialise([b.fc], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.fc.weight, b.fc.weight)


@pytest.fixture(scope="module")
def context() -> EvalContext:
    method, model = build()
    g = torch.Generator().manual_seed(0)
    data = ImageSplit(torch.rand(12, 1, 16, 16, generator=g), torch.arange(12) % 3, None, ["a", "b", "c"])
    explainers = {name: EXPLAINERS.get(name)() for name in ("gradcam", "random")}
    return EvalContext(model, method, data, torch.device("cpu"), batch_size=5, progress=False, explainers=explainers)


def test_gradcam_changes_the_random_explainer_does_not_and_the_model_is_untouched(context: EvalContext) -> None:
    before = {k: v.clone() for k, v in context.model.state_dict().items()}
    params = ParameterRandomisation.Params(n=7)  # 7 of 12 images, in batches of 5 and 2
    gradcam = context.with_explainer("gradcam")
    (sim,) = ParameterRandomisation(params).compute(gradcam)
    assert sim.n == 7 and sim.value < 0.9
    assert [s["step"] for s in sim.params["steps"]] == ["head", "stage2", "stage1", "stage0", "stem"]
    assert sim.params["steps"][-1]["similarity"] == sim.value
    (check,) = RandomisationCheck(RandomisationCheck.Params(n=7)).compute(gradcam)
    assert check.value == float(sim.value < 0.5)

    random = context.with_explainer("random")
    (rsim,) = ParameterRandomisation(params).compute(random)
    assert all(s["similarity"] == pytest.approx(1.0) for s in rsim.params["steps"])
    (rcheck,) = RandomisationCheck(RandomisationCheck.Params(n=7)).compute(random)
    assert rcheck.value == 0.0  # maps that ignore the model fail the check

    after = context.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert context.model.fc.weight.grad is None


def test_both_metrics_share_one_cascade(context: EvalContext, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = EvalContext(**{**context.__dict__, "_memo": {}}).with_explainer("gradcam")
    calls = []
    gradcam = ctx.explainers["gradcam"]
    original = gradcam.explain

    def counting(method, model, x, target, seed):  # type: ignore[no-untyped-def]
        calls.append(model is ctx.model)
        return original(method, model, x, target, seed)

    monkeypatch.setattr(gradcam, "explain", counting)
    (a,) = ParameterRandomisation(ParameterRandomisation.Params(n=4, similarity="ssim")).compute(ctx)
    n_calls = len(calls)
    (b,) = RandomisationCheck(RandomisationCheck.Params(n=4, similarity="ssim", threshold=2.0)).compute(ctx)
    assert len(calls) == n_calls  # the check reuses the curve
    assert calls.count(False) == 5  # five steps, one batch of 4 each, on the randomised copy
    assert b.value == 1.0 and b.params["final"] == a.value and a.params["similarity"] == "ssim"


def test_metadata() -> None:
    pr, rc = METRICS.get("parameter_randomisation"), METRICS.get("randomisation_check")
    assert pr.category == rc.category == "sanity"
    assert pr.higher_is_better is False and rc.higher_is_better is True
    assert pr.uses_explanations and rc.uses_explanations
    assert pr.Params().n == 128 and pr.Params().similarity == "spearman" and rc.Params().threshold == 0.5
    with pytest.raises(ValueError):
        pr.Params(similarity="hog")
