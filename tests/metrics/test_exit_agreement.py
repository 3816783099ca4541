"""Attention consistency between exits: the four similarities by hand, and exit maps computed once."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.egt import EGT
from xbench.metrics.context import EvalContext
from xbench.metrics.exit_agreement import cosine, exit_maps, pearson, ssim, ssim_window, top_iou
from xbench.registry import METRICS

NAMES = {
    "attention_consistency": "cosine",
    "attention_consistency_pearson": "pearson",
    "attention_consistency_ssim": "ssim",
    "attention_consistency_iou": "top_q_iou",
}


def maps(*rows: list[float], side: int = 2) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), side, side)


def test_identical_maps_score_one_on_every_similarity() -> None:
    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    for value in (cosine(a, a), pearson(a, a), ssim(a, a), top_iou(a, a, 0.1)):
        torch.testing.assert_close(value, torch.ones(3, dtype=torch.float64))


def test_cosine_and_pearson_by_hand() -> None:
    a, b = maps([1, 0, 0, 0]), maps([1, 1, 0, 0])
    assert cosine(a, b).item() == pytest.approx(1 / math.sqrt(2))
    # centred: a − 1/4 = [3, −1, −1, −1]/4, b − 1/2 = [1, 1, −1, −1]/2 → ⟨·,·⟩ = 4/8, norms √12/4 and 1
    assert pearson(a, b).item() == pytest.approx((4 / 8) / (math.sqrt(12) / 4))
    assert pearson(a, 1 - a).item() == pytest.approx(-1.0)
    assert pearson(a, 0.3 * a + 0.2).item() == pytest.approx(1.0)  # invariant to affine rescaling
    assert cosine(a, 0.3 * a + 0.2).item() < 1.0  # cosine is not
    assert pearson(a, maps([0.5] * 4)).item() == 0.0  # a constant map correlates with nothing


def test_ssim_by_hand_on_constant_maps() -> None:
    # Constant maps have zero local variance: SSIM = (2·μx·μy + C1) / (μx² + μy² + C1), C1 = (0.01·1)².
    c1 = 0.01**2
    ones, zeros, half = torch.ones(1, 8, 8), torch.zeros(1, 8, 8), torch.full((1, 8, 8), 0.5)
    assert ssim(ones, zeros).item() == pytest.approx(c1 / (1 + c1))
    assert ssim(ones, half).item() == pytest.approx((1 + c1) / (1.25 + c1))
    a = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert ssim(a, 1 - a).item() < 0  # anti-correlated structure


@pytest.mark.parametrize(("shape", "win_size"), [((40, 40), None), ((17, 23), None), ((5, 9), None), ((40, 40), 11)])
def test_batched_ssim_equals_skimage(shape: tuple[int, int], win_size: int | None) -> None:
    # The reference: skimage called per pair, as the metric did before it was batched.
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(3)
    a = torch.rand(6, *shape, generator=g)
    b = torch.rand(6, *shape, generator=g)
    a[0] = 0.0  # a constant map, and Grad-CAM-like maps with zeroed regions
    a[1, : shape[0] // 2] = 0.0
    b[2] = (a[2] > 0.5).float()
    b[3] = a[3]
    win = ssim_window(shape, win_size)
    expected = [
        structural_similarity(x.double().numpy(), y.double().numpy(), data_range=1.0, win_size=win)
        for x, y in zip(a, b, strict=True)
    ]
    # float64 round-off only: scipy's running-sum uniform filter against avg_pool2d's window sums
    torch.testing.assert_close(ssim(a, b, win_size), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_window_for_small_maps() -> None:
    assert ssim_window((64, 64)) == 7
    assert ssim_window((6, 9)) == 5 and ssim_window((5, 5)) == 5 and ssim_window((3, 4)) == 3
    assert ssim_window((64, 64), 11) == 11
    with pytest.raises(ValueError, match="odd"):
        ssim_window((64, 64), 4)
    with pytest.raises(ValueError, match="3×3"):
        ssim_window((2, 8))
    small = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ssim(small, small), torch.ones(2, dtype=torch.float64))


def test_top_iou_by_hand() -> None:
    # 4×4, q = 1/4 → the 4 highest pixels of each; two shared → IoU = 2 / (4 + 4 − 2).
    a = torch.zeros(1, 4, 4)
    b = torch.zeros(1, 4, 4)
    a[0, 0, :4] = torch.tensor([4.0, 3, 2, 1])
    b[0, 0, :2] = torch.tensor([4.0, 3])
    b[0, 3, 2:] = torch.tensor([2.0, 1])
    assert top_iou(a, b, 0.25).item() == pytest.approx(2 / 6)
    assert top_iou(a, 1 - a, 0.25).item() == 0.0


# -- the metrics on a tiny EGT model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def egt_context() -> EvalContext:
    torch.manual_seed(0)
    mctx = MethodContext(3, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = EGT(EGT.Params(), mctx)
    g = torch.Generator().manual_seed(0)
    data = ImageSplit(torch.rand(10, 1, 16, 16, generator=g), torch.arange(10) % 3, None, ["a", "b", "c"])
    return EvalContext(
        method.build().eval(), method, data, torch.device("cpu"), batch_size=4, progress=False, explain_limit=6
    )


def test_exit_maps_are_computed_once_on_the_explained_images(
    egt_context: EvalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = EvalContext(**{**egt_context.__dict__, "_memo": {}})
    calls = []
    original = ctx.method.exit_maps

    def counting(model, x, target):  # type: ignore[no-untyped-def]
        calls.append(len(x))
        return original(model, x, target)

    monkeypatch.setattr(ctx.method, "exit_maps", counting)
    results = {name: METRICS.get(name)().compute(ctx) for name in NAMES}
    assert sum(calls) == 6  # explain_limit images, once for all four metrics
    per_exit = exit_maps(ctx)
    assert per_exit is not None and len(per_exit) == 3 and per_exit[0].shape == (6, 16, 16)
    for name, kind in NAMES.items():
        assert [r.exit for r in results[name]] == [0, 1]
        for r in results[name]:
            assert r.params["similarity"] == kind and r.n == 6
            assert -1 <= r.value <= 1 + 1e-9
    # The cosine metric is the mean cosine of exit i's and the final exit's maps on those images.
    for r in results["attention_consistency"]:
        expected = cosine(per_exit[r.exit], per_exit[-1]).mean().item()
        assert r.value == pytest.approx(expected)
    assert results["attention_consistency_ssim"][0].params["win_size_used"] == 7
    assert results["attention_consistency_iou"][0].params["k"] == round(0.1 * 256)


def test_the_final_exits_map_agrees_with_itself(egt_context: EvalContext) -> None:
    # Compare the final exit with itself by treating it as an early exit: every similarity is 1.
    per_exit = exit_maps(egt_context)
    assert per_exit is not None
    final = per_exit[-1]
    for value in (cosine(final, final), pearson(final, final), ssim(final, final), top_iou(final, final, 0.1)):
        torch.testing.assert_close(value.float(), torch.ones(6))


def test_models_without_exits_get_no_values() -> None:
    from xbench.methods.baseline import Baseline

    mctx = MethodContext(3, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = Baseline(Baseline.Params(), mctx)
    data = ImageSplit(torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.long), None, ["a", "b", "c"])
    ctx = EvalContext(method.build().eval(), method, data, torch.device("cpu"), batch_size=4, progress=False)
    for name in NAMES:
        cls = METRICS.get(name)
        assert cls.requires_exits and cls.higher_is_better is True and cls.category == "consistency"
        assert cls().compute(ctx) == []
