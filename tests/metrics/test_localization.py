"""Localisation metrics: hand-made maps, chance levels, skipped samples and agreement with Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.explain.base import Explainer
from xbench.methods.base import Method
from xbench.metrics.context import EvalContext
from xbench.metrics.localization import (
    LOCALISATION_METRICS,
    METHOD_DEFAULT,
    LocalisationAUC,
    PointingGame,
    TopKIntersection,
    TopQIoU,
    quantus_call,
    top_q_iou,
    top_region,
)
from xbench.models.output import ModelOutput
from xbench.registry import METRICS

QUANTUS = [name for name in LOCALISATION_METRICS if name != "top_q_iou"]


def block_masks(n: int, size: int = 16, side: int = 8, seed: int = 0) -> Tensor:
    """Bool (n, size, size) masks: a side×side square at a random position."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i, (y, x) in enumerate(torch.randint(0, size - side + 1, (n, 2), generator=g).tolist()):
        masks[i, y : y + side, x : x + side] = True
    return masks


def scores(name: str, maps: Tensor, masks: Tensor) -> np.ndarray:
    return LOCALISATION_METRICS[name]().scores(maps, masks)


# -- hand-made maps -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LOCALISATION_METRICS))
def test_map_equal_to_the_mask_scores_one(name: str) -> None:
    masks = block_masks(6)  # 64 of 256 pixels: top_k's 13 and top_q's 26 pixels all fit inside
    maps = masks.float()
    # top_q_iou's region has q·H·W pixels: it equals the mask only for q = |S|/(H·W) = 1/4
    metric = TopQIoU(TopQIoU.Params(q=0.25)) if name == "top_q_iou" else LOCALISATION_METRICS[name]()
    values = metric.scores(maps, masks)
    np.testing.assert_allclose(values, 1.0, atol=1e-6)


@pytest.mark.parametrize("name", list(LOCALISATION_METRICS))
def test_inverted_map_scores_zero(name: str) -> None:
    masks = block_masks(6)
    values = scores(name, (~masks).float(), masks)
    np.testing.assert_allclose(values, 0.0, atol=1e-6)


def test_random_maps_land_at_their_chance_levels() -> None:
    # i.i.d. uniform maps, masks of area fraction f = 64/256: every mask-fraction metric's chance
    # level is f (the maximum, the |S| or k highest pixels, and the mass fall inside with
    # probability f), the AUC's is 1/2, and the top-q IoU's is ≈ q·f / (q + f − q·f).
    n, f = 600, 0.25
    masks = block_masks(n, seed=1)
    maps = torch.rand(n, 16, 16, generator=torch.Generator().manual_seed(2))
    sd = (f * (1 - f) / n) ** 0.5  # of a mean of n Bernoulli(f)
    assert scores("pointing_game", maps, masks).mean() == pytest.approx(f, abs=4 * sd)
    for name in ("relevance_mass_accuracy", "attribution_localisation"):
        assert scores(name, maps, masks).mean() == pytest.approx(f, abs=0.005)
    for name in ("relevance_rank_accuracy", "top_k_intersection"):
        assert scores(name, maps, masks).mean() == pytest.approx(f, abs=0.02)
    assert scores("localisation_auc", maps, masks).mean() == pytest.approx(0.5, abs=0.01)
    q = 0.1
    assert scores("top_q_iou", maps, masks).mean() == pytest.approx(q * f / (q + f - q * f), abs=0.01)


def test_top_q_iou_by_hand() -> None:
    # 4×4, mask = the top-left 2×2; q = 1/4 → k = 4 highest pixels: three in the mask, one outside.
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    amap = torch.zeros(1, 4, 4)
    amap[0, 0, 0], amap[0, 0, 1], amap[0, 1, 0], amap[0, 3, 3] = 0.9, 0.8, 0.7, 1.0
    # intersection 3, union 4 + 4 − 3 = 5
    assert top_q_iou(amap, mask, 0.25).item() == pytest.approx(3 / 5)
    # q = 1/16 → k = 1: the maximum (3, 3) is outside: IoU 0; q = 1/8: {(3,3), (0,0)} → 1 / 5
    assert top_q_iou(amap, mask, 1 / 16).item() == 0.0
    assert top_q_iou(amap, mask, 1 / 8).item() == pytest.approx(1 / 5)


def test_top_region_takes_exactly_k_pixels_and_breaks_ties_without_position() -> None:
    flat = torch.zeros(2, 8, 8)
    flat[1, 0, :3] = 1.0  # three clear winners, then 61 tied zeros
    region = top_region(flat, 10)
    assert region.flatten(1).sum(1).tolist() == [10, 10]
    assert region[1, 0, :3].all()
    # Ties are not filled from the top-left: a constant map's region is not the first 10 pixels.
    assert not region[0].flatten()[:10].all()
    assert torch.equal(region, top_region(flat, 10))  # seeded: the same every time


def test_pointing_game_counts_a_tied_maximum_in_the_mask_as_a_hit() -> None:
    # Quantus's rule: a hit if any of the pixels equal to the maximum lies in the mask.
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    amap = torch.zeros(1, 4, 4)
    amap[0, 0, 0] = amap[0, 3, 3] = 1.0
    assert scores("pointing_game", amap, mask).tolist() == [1.0]


# -- agreement with Quantus ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", QUANTUS)
def test_wrapper_equals_the_full_quantus_call(name: str) -> None:
    n, size = 8, 16
    masks = block_masks(n, size, side=6, seed=3)
    maps = torch.rand(n, size, size, generator=torch.Generator().manual_seed(4))
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5)).numpy()
    metric = LOCALISATION_METRICS[name]()
    ours = metric.scores(maps, masks)
    fresh = metric.build(maps)  # the same Quantus class and constructor arguments
    theirs = quantus_call(fresh, maps.numpy(), masks.numpy(), images)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    assert len(ours) == n and np.isfinite(ours).all()


def test_top_k_intersection_scales_k_to_the_image() -> None:
    maps = torch.rand(2, 28, 28, generator=torch.Generator().manual_seed(0))
    metric = TopKIntersection(TopKIntersection.Params(k_fraction=0.05))
    assert metric.quantus_kwargs(maps)["k"] == round(0.05 * 28 * 28) == 39
    masks = block_masks(2, 28, 10)
    assert np.isfinite(metric.scores(maps, masks)).all()  # Quantus's default k = 1000 asserts here
    with pytest.raises(ValueError, match="k"):
        quantus.TopKIntersection(disable_warnings=True).custom_preprocess(
            x_batch=np.zeros((2, 1, 28, 28)), s_batch=masks[:, None].numpy()
        )


def test_localisation_auc_needs_no_numpy_trapz() -> None:
    assert not hasattr(np, "trapz")  # numpy 2.4 removed it
    masks = block_masks(3)
    values = LocalisationAUC().scores(masks.float() * 0.5 + 0.25, masks)
    np.testing.assert_allclose(values, 1.0)
    assert not hasattr(np, "trapz")  # the shim is scoped to the call


# -- through an evaluation context -----------------------------------------------------------------------------
class ChannelZero(Explainer):
    """The explanation of an image is its first channel: tests choose the maps through the images."""

    name = "channel0"

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        return x[:, 0]


class Constant(nn.Module):
    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(logits=torch.zeros(len(x), 2))


def context(maps: Tensor, masks: Tensor) -> EvalContext:
    n = len(maps)
    data = ImageSplit(maps[:, None].clone(), torch.zeros(n, dtype=torch.long), masks[:, None], ["a", "b"])
    ctx = EvalContext(
        Constant(), Method.__new__(Method), data, torch.device("cpu"), batch_size=4, progress=False,
        explainers={"channel0": ChannelZero()},
    )  # fmt: skip
    return ctx.with_explainer("channel0")


def test_empty_masks_and_constant_maps_are_skipped_and_counted() -> None:
    masks = block_masks(6)
    maps = masks.float()
    masks[1] = False  # empty mask: skipped
    maps[2] = 0.0  # constant map: skipped
    maps[3] = (~masks[3]).float()  # inverted: a miss
    masks[5] = True  # full mask: a hit for the pointing game, no ROC curve for the AUC
    maps[5] = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    ctx = context(maps, masks)
    (pg,) = PointingGame().compute(ctx)
    assert pg.value == pytest.approx(3 / 4) and pg.n == 4
    assert pg.params["skipped_empty_mask"] == 1 and pg.params["skipped_constant_map"] == 1
    assert pg.params["quantus_version"] == quantus.__version__ == "0.6.0"
    assert pg.params["implementation"] == "quantus.PointingGame"
    (auc,) = LocalisationAUC().compute(ctx)
    assert auc.value == pytest.approx(2 / 3) and auc.n == 3 and auc.params["skipped_full_mask"] == 1
    (iou,) = TopQIoU().compute(ctx)
    assert iou.params["k"] == round(0.1 * 256) and iou.params["implementation"] == "xbench"
    (topk,) = TopKIntersection().compute(ctx)
    assert topk.params["k_fraction"] == 0.05 and topk.params["quantus_kwargs"]["k"] == 13


def test_no_scorable_image_gives_no_value() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert PointingGame().compute(context(torch.rand(2, 8, 8), masks)) == []


def test_metadata_and_fallback_to_the_methods_explanation() -> None:
    for name in LOCALISATION_METRICS:
        cls = METRICS.get(name)
        assert cls.category == "localization" and cls.higher_is_better is True
        assert cls.requires_masks and cls.uses_explanations
    from xbench.methods.base import MethodContext
    from xbench.methods.baseline import Baseline

    torch.manual_seed(0)
    mctx = MethodContext(2, 1, (16, 16), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 4})
    method = Baseline(Baseline.Params(), mctx)
    masks = block_masks(4)
    data = ImageSplit(torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.long), masks[:, None], ["a", "b"])
    ctx = EvalContext(method.build().eval(), method, data, torch.device("cpu"), batch_size=4, progress=False)
    (result,) = METRICS.get("relevance_mass_accuracy")().compute(ctx)  # no explainer selected: Grad-CAM
    assert result.params["explainer"] == METHOD_DEFAULT and 0 <= result.value <= 1
