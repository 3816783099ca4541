"""Faithfulness metrics against hand-derived values on models whose answer is known analytically.

The model of most tests is linear: class 0's logit is Σ w·x (w = 1 on a region R, 0 elsewhere)
and class 1's logit is a constant, so deleting or inserting pixels in a known order gives a
known curve. A map that ranks R first must beat the inverted map in each metric's direction.
xbench's own versions of Quantus metrics (ROAD, IROF) are checked against Quantus itself; the
Quantus-backed metrics' hand-computed tests run on both backends (``backend: torch`` and ``quantus``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.explain.base import Explainer
from xbench.methods.base import MethodContext
from xbench.methods.baseline import Baseline
from xbench.metrics import faithfulness as F
from xbench.metrics.context import EvalContext
from xbench.metrics.faithfulness.reference import make_metric, run_quantus
from xbench.models.output import ModelOutput
from xbench.registry import METRICS

NAMES = [
    "faithfulness_correlation",
    "pixel_flipping",
    "region_perturbation",
    "selectivity",
    "monotonicity_correlation",
    "road",
    "irof",
    "average_drop",
    "increase_in_confidence",
    "insertion_auc",
    "deletion_auc",
]


class Linear(nn.Module):
    """logits = [Σ w·x, c]: class 0's score is the weighted sum of the pixels."""

    def __init__(self, w: Tensor, c: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("w", w.float())
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.full_like(s, self.c)], dim=1)


class Wrapped(nn.Module):
    """The same model returning ``ModelOutput``, as xbench models do."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(logits=self.inner(x))


class FixedMaps(Explainer):
    """Returns given maps, matched to images by their pixel sum."""

    name = "fixed"

    def __init__(self, images: Tensor, maps: Tensor) -> None:
        super().__init__()
        self.images, self.maps = images, maps

    def explain(self, method, model, x, target, seed):  # type: ignore[no-untyped-def]
        index = [int(torch.nonzero((self.images == xi).flatten(1).all(1))[0]) for xi in x.cpu()]
        return self.maps[index].to(x.device)


def region(h: int, w: int, rows: slice, cols: slice, c: int = 1) -> Tensor:
    m = torch.zeros(c, h, w)
    m[:, rows, cols] = 1.0
    return m


# The method only tells the context which extra output fields to read (the baseline has none).
METHOD = Baseline(
    Baseline.Params(),
    MethodContext(2, 1, (4, 4), (0.0,), (1.0,), "resnet_cifar", {"depth": 8, "width": 4}),
)


def context(model: nn.Module, images: Tensor, maps: Tensor, batch_size: int = 2) -> EvalContext:
    data = ImageSplit(images, torch.zeros(len(images), dtype=torch.long), None, ["a", "b"])
    ctx = EvalContext(
        Wrapped(model), METHOD, data, torch.device("cpu"), batch_size, progress=False,
        explainers={"fixed": FixedMaps(images, maps)},
    )  # fmt: skip
    return ctx.with_explainer("fixed")


def value(name: str, ctx: EvalContext, **params: object) -> float:
    cls = METRICS.get(name)
    (result,) = cls(cls.Params(**params)).compute(ctx)
    return result.value


# -- helpers ---------------------------------------------------------------------------------------------
def test_curve_auc_agrees_with_numpy_trapezoid_and_by_hand() -> None:
    rng = np.random.default_rng(0)
    curves, x = rng.random((5, 9)), np.sort(rng.random(9))
    np.testing.assert_allclose(F.curve_auc(curves, x), [np.trapezoid(c, x=x) for c in curves])
    fractions = np.linspace(0, 1, 5)
    assert F.curve_auc(np.array([1.0, 0.75, 0.5, 0.25, 0.0]), fractions) == pytest.approx(0.5)
    assert F.curve_auc(np.array([4.0, 0, 0, 0, 0]), fractions) == pytest.approx(0.5)  # one trapezoid of 4·0.25/2


def test_rank_pixels_orders_by_value_and_breaks_ties_not_by_position() -> None:
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert F.rank_pixels(maps).tolist() == [[1, 2, 3, 0]]
    ties = torch.zeros(1, 8, 8)
    order = F.rank_pixels(ties)
    assert sorted(order[0].tolist()) == list(range(64))
    assert order[0].tolist() != list(range(64))
    ranks = F.ranks_of(order)
    assert torch.equal(ranks.gather(1, order), torch.arange(64)[None])


def test_divisor_near() -> None:
    assert F.divisor_near(784, 784 / 16) == 49
    assert F.divisor_near(4096, 4096 / 16) == 256
    assert F.divisor_near(100, 30) == 25


# -- deletion, insertion ---------------------------------------------------------------------------------
# 4×4 grey image of ones, R = the top-left 2×2 block: the logit is 4 with R present, 0 without.
R = region(4, 4, slice(0, 2), slice(0, 2))
GOOD, BAD = R[0].clone(), 1 - R[0]  # BAD ranks R last


def test_deletion_and_insertion_curves_by_hand() -> None:
    model, x = Linear(R), torch.ones(2, 1, 4, 4)
    maps = torch.stack([GOOD, BAD])
    counts = [0, 4, 8, 12, 16]  # steps = 4
    ranks = F.ranks_of(F.rank_pixels(maps))
    kw = {"softmax": False, "batch_size": 2, "device": "cpu"}
    deletion = F.perturbation_curves(model, x, torch.zeros(2, dtype=torch.long), ranks, counts, x, 0 * x, **kw)
    assert deletion.tolist() == [[4, 0, 0, 0, 0], [4, 4, 4, 4, 0]]
    insertion = F.perturbation_curves(model, x, torch.zeros(2, dtype=torch.long), ranks, counts, 0 * x, x, **kw)
    assert insertion.tolist() == [[0, 4, 4, 4, 4], [0, 0, 0, 0, 4]]


def test_deletion_and_insertion_metrics_by_hand() -> None:
    good = context(Linear(R), torch.ones(1, 1, 4, 4), GOOD[None])
    bad = context(Linear(R), torch.ones(1, 1, 4, 4), BAD[None])
    # deletion curves [4, 0, 0, 0, 0] and [4, 4, 4, 4, 0] over fractions 0, 1/4, …, 1
    assert value("deletion_auc", good, steps=4, softmax=False) == pytest.approx(0.5)
    assert value("deletion_auc", bad, steps=4, softmax=False) == pytest.approx(3.5)
    # insertion into a black canvas: [0, 4, 4, 4, 4] and [0, 0, 0, 0, 4]
    assert value("insertion_auc", good, steps=4, softmax=False, baseline="zero") == pytest.approx(3.5)
    assert value("insertion_auc", bad, steps=4, softmax=False, baseline="zero") == pytest.approx(0.5)
    # with probabilities: p = σ(logit), σ(0) = 1/2
    s4 = 1 / (1 + math.exp(-4))
    assert value("deletion_auc", good, steps=4) == pytest.approx(0.25 * ((s4 + 0.5) / 2 + 0.5 * 3), rel=1e-5)


def test_insertion_blurred_canvas() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    out = F.blurred(x, 1.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)  # a normalised kernel, no mass lost at the centre
    assert 0 < out[0, 0, 4, 4] < 1 and out[0, 0, 4, 5] == out[0, 0, 5, 4] > 0
    g = torch.exp(torch.tensor(-0.5))  # neighbour/centre ratio of a σ = 1 Gaussian, per axis
    assert float(out[0, 0, 4, 5] / out[0, 0, 4, 4]) == pytest.approx(float(g), rel=1e-3)


# -- AD / IC ------------------------------------------------------------------------------------------------
def adic_case() -> tuple[nn.Module, Tensor, Tensor]:
    """logit0 = Σ_R x − Σ_Q x (R top-left, Q bottom-right 2×2), logit1 = 0; Q pixels 0.5, others 1."""
    q = region(4, 4, slice(2, 4), slice(2, 4))
    model = Linear(R - q)
    x = torch.ones(3, 1, 4, 4)
    x[:, :, 2:4, 2:4] = 0.5  # Y = σ(4 − 2) = σ(2)
    x[1] *= 0.999  # distinct images (FixedMaps matches by content); logit0 = 0.999·2
    x[2] *= 0.998
    other = 1 - R[0] - q[0]
    maps = torch.stack([R[0], q[0], other])  # top 4 pixels: R, Q, 4 of the 8 pixels in neither
    return model, x, maps


def test_drop_and_increase_by_hand() -> None:
    y = torch.tensor([0.8, 0.5, 0.6])
    o = torch.tensor([0.4, 0.9, 0.6])
    drop, inc = F.drop_and_increase(y, o)
    assert drop.tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert inc.tolist() == [0.0, 1.0, 0.0]  # equal is no increase


def test_keep_mask_keeps_the_top_fraction() -> None:
    maps = torch.tensor([[[0.9, 0.1], [0.4, 0.2]]])
    assert F.keep_mask(maps, 0.5, "binary").flatten().tolist() == [1, 0, 1, 0]
    assert F.keep_mask(maps, 0.5, "map").flatten().tolist() == pytest.approx([0.9, 0, 0.4, 0])
    assert F.keep_mask(maps, 0.3, "binary").sum() == 2  # ⌈0.3·4⌉ = 2 pixels, as TAME's ⌈(1 − p)·H·W⌉
    assert F.keep_mask(maps, 1.0, "map").flatten().tolist() == pytest.approx([0.9, 0.1, 0.4, 0.2])


def test_average_drop_and_increase_in_confidence_by_hand() -> None:
    model, x, maps = adic_case()
    ctx = context(model, x, maps, batch_size=2)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # kept 4 pixels: sample 0 keeps R (Q → 0): O = σ(4·1) > Y; sample 1 keeps Q: O = σ(−2·0.999);
    # sample 2 keeps neither: O = σ(0).
    y = [sig(2.0), sig(2 * 0.999), sig(2 * 0.998)]
    o = [sig(4.0), sig(-2 * 0.999), 0.5]
    ad = np.mean([max(0.0, a - b) / a for a, b in zip(y, o, strict=True)])
    assert value("average_drop", ctx, keep=0.25, mask="binary") == pytest.approx(ad, rel=1e-5)
    assert value("increase_in_confidence", ctx, keep=0.25, mask="binary") == pytest.approx(1 / 3)
    # TAME's soft mask multiplies by the map: here the kept map values are 1, so nothing changes.
    assert value("average_drop", ctx, keep=0.25, mask="map") == pytest.approx(ad, rel=1e-5)


def test_average_drop_soft_mask_scales_the_kept_pixels() -> None:
    x = torch.ones(1, 1, 4, 4)
    maps = R.clone()
    maps[0, 1, :2] = 0.5  # R's map values 1, 1, 0.5, 0.5 (maps reach metrics min-max normalised)
    ctx = context(Linear(R), x, maps)
    y, o = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-3))  # the masked R sums to 3
    assert value("average_drop", ctx, keep=0.25) == pytest.approx((y - o) / y, rel=1e-5)
    assert value("average_drop", ctx, keep=1.0, mask="binary") == 0.0  # the whole image: nothing drops


# -- Quantus-backed metrics through xbench, on both backends (torch kernels; Quantus itself) ------
BACKENDS = ["torch", "quantus"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_flipping_by_hand(backend: str) -> None:
    # features_in_step = 16/4 = 4; curves after each step: [0, 0, 0, 0] and [4, 4, 4, 0]
    good = context(Linear(R), torch.ones(1, 1, 4, 4), GOOD[None])
    bad = context(Linear(R), torch.ones(1, 1, 4, 4), BAD[None])
    assert value("pixel_flipping", good, steps=4, softmax=False, backend=backend) == pytest.approx(0.0)
    assert value("pixel_flipping", bad, steps=4, softmax=False, backend=backend) == pytest.approx((4 + 4 + 2) / 4)


R8 = region(8, 8, slice(0, 2), slice(0, 2))  # one 2×2 patch of an 8×8 image
GOOD8, BAD8 = R8[0] + 0.01 * torch.arange(64.0).view(8, 8) / 64, 1 - R8[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_region_perturbation_and_selectivity_by_hand(backend: str) -> None:
    good = context(Linear(R8), torch.ones(1, 1, 8, 8), GOOD8[None])
    bad = context(Linear(R8), torch.ones(1, 1, 8, 8), BAD8[None])
    # AOPC over 4 regions: drops [4, 4, 4, 4] / (4 + 1) when R goes first, [0, 0, 0, 0] when last
    kw = {"patch_size": 2, "softmax": False, "backend": backend}
    assert value("region_perturbation", good, regions=4, **kw) == pytest.approx(16 / 5)
    assert value("region_perturbation", bad, regions=4, **kw) == pytest.approx(0.0)
    # Selectivity: all 16 patches; curve [0]*16 vs [4]*15 + [0] over fractions 1/16 … 1
    assert value("selectivity", good, **kw) == pytest.approx(0.0)
    assert value("selectivity", bad, **kw) == pytest.approx((4 * 14 + 2) / 16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_faithfulness_correlation_is_perfect_for_the_true_relevance(backend: str) -> None:
    # A linear model on ones: the output drop of a subset S is |S ∩ R|, the map's sum on S too
    # (map = 1_R) → r = 1; the inverted map sums to |S| − |S ∩ R| → r = −1.
    good = context(Linear(R8), torch.ones(1, 1, 8, 8), R8)
    bad = context(Linear(R8), torch.ones(1, 1, 8, 8), 1 - R8)
    kw = {"nr_runs": 12, "subset_fraction": 0.25, "backend": backend}
    assert value("faithfulness_correlation", good, **kw) == pytest.approx(1.0)
    assert value("faithfulness_correlation", bad, **kw) == pytest.approx(-1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_monotonicity_correlation_follows_the_true_relevance(backend: str) -> None:
    # logit = 1 + Σ w·x on a black image, w growing 10× per group of 2 pixels (8 groups): a group set
    # to u changes the logit by u·W_g, variance ∝ W_g², so ρ = 1 for a map ordered like w, −1 inverted.
    w = (10.0 ** (torch.arange(16) // 2)).view(1, 4, 4) / 1e3
    model = Linear(w, c=-100.0)
    x = torch.zeros(1, 1, 4, 4)

    class Biased(nn.Module):
        def forward(self, z: Tensor) -> Tensor:
            return model(z) + torch.tensor([1.0, 0.0])

    kw = {"steps": 8, "nr_samples": 10, "softmax": False, "backend": backend}
    order = torch.arange(16.0).view(1, 4, 4) / 15
    assert value("monotonicity_correlation", context(Biased(), x, order), **kw) == pytest.approx(1.0)
    assert value("monotonicity_correlation", context(Biased(), x, 1 - order), **kw) == pytest.approx(-1.0)


# -- ROAD ---------------------------------------------------------------------------------------------------------
def test_linear_imputation_matches_quantus_grey_and_colour() -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(0)
    for c in (1, 3):
        image = rng.random((c, 9, 7)).astype(np.float32)
        indices = rng.permutation(63)[:40]
        ours = F.linear_imputation(image, indices)
        theirs = noisy_linear_imputation(image, indices, noise=0.0)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
        assert not np.allclose(ours, image)


@pytest.mark.parametrize("channels", [1, 3])
def test_linear_imputation_many_is_each_image_s_own(channels: int) -> None:
    # One block-diagonal system for several images: each image's imputation as if solved alone.
    rng = np.random.default_rng(channels)
    images = rng.random((5, channels, 9, 7)).astype(np.float32)
    indices = np.stack([rng.permutation(63)[:40] for _ in range(5)])
    noise = 0.01 * rng.standard_normal((5, channels, 40))
    many = F.linear_imputation_many(images, indices, noise)
    one = np.stack([F.linear_imputation(images[i], indices[i], noise[i]) for i in range(5)])
    assert many.dtype == one.dtype == np.float32
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-6)


def test_road_by_hand() -> None:
    # R = 1 on a black image, logit0 = Σ_R x = 4 > logit1 = 2. Imputing R from its black surroundings gives
    # 0 (the system's solution), so the class flips; imputing other pixels leaves the logit unchanged.
    x = R[None].clone()
    model = Linear(R, c=2.0)
    jitter = 0.01 * torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(1, dtype=torch.long)
    kw = {"noise": 0.0, "batch_size": 1, "device": "cpu"}
    assert F.road_scores(model, x, y, GOOD[None] + jitter, [25, 50], **kw).tolist() == [[0, 0]]
    assert F.road_scores(model, x, y, BAD[None] + jitter, [25, 50], **kw).tolist() == [[1, 1]]
    good = context(model, x, GOOD[None] + jitter)
    bad = context(model, x, BAD[None] + jitter)
    assert value("road", good, percentages=[25, 50]) == 0.0  # lower is better
    assert value("road", bad, percentages=[25, 50]) == 1.0


def tiny_cnn(channels: int, size: int = 16) -> nn.Module:
    """A random 3-class model whose decision depends on every pixel (a conv feeding a linear layer)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * size * size, 3)).eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_road_equals_quantus(channels: int) -> None:
    model = tiny_cnn(channels, 10)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, channels, 10, 10, generator=g)
    maps = torch.rand(6, 10, 10, generator=g)
    y = model(x).argmax(1)
    percentages = [10, 40, 70, 90]
    ours = F.road_scores(model, x, y, maps, percentages, noise=0.05, batch_size=6, device="cpu", seed=3)
    theirs = run_quantus(make_metric("ROAD", percentages=percentages, noise=0.05), model, x, y, maps,
                         softmax=True, batch_size=6, seed=3)  # fmt: skip
    assert ours.shape == theirs.shape == (6, 4)
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < ours.mean() < 1  # a non-trivial comparison


# -- IROF ---------------------------------------------------------------------------------------------------------
def test_irof_by_hand() -> None:
    # Quadrant segments; the logit is Σ over quadrant 0 (4 px of ones). Removing it first: q = [0, 0, 0, 0],
    # AOC = 4 − 0; last: q = [1, 1, 1, 0], AOC = 4 − (1 + 1 + 0.5) = 1.5.
    segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])[None].repeat(2, 0)
    x = torch.ones(2, 1, 4, 4)
    aoc, counts = F.irof_scores(Linear(R), x, torch.zeros(2, dtype=torch.long), torch.stack([GOOD, BAD]), segments,
                                baseline=0.0, softmax=False, batch_size=2, device="cpu")  # fmt: skip
    assert counts.tolist() == [4, 4]
    assert aoc.tolist() == pytest.approx([4.0, 1.5])


@pytest.mark.parametrize("channels", [1, 3])
def test_irof_equals_quantus_with_its_segmentation(channels: int) -> None:
    model = tiny_cnn(channels, 12)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, channels, 12, 12, generator=g)
    maps = torch.rand(3, 12, 12, generator=g)
    y = model(x).argmax(1)
    segments = F.slic_segments(x, 100, 10.0)  # Quantus's call: slic(img, start_label=0)
    ours, counts = F.irof_scores(model, x, y, maps, segments, baseline=0.3, softmax=True, batch_size=3,
                                 device="cpu")  # fmt: skip
    # batch_size=1: Quantus pads the curves of a batch to the longest, which changes shorter ones' areas
    theirs = run_quantus(make_metric("IROF", perturb_baseline=0.3), model, x, y, maps, softmax=True, batch_size=1)
    assert (counts > 1).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_irof_leaves_out_images_with_one_segment() -> None:
    # One segment per image cannot be ranked: counted as undefined, not scored.
    x = torch.zeros(1, 1, 8, 8)
    ctx = context(Linear(R8), x, GOOD8[None])
    cls = METRICS.get("irof")
    assert cls(cls.Params(n_segments=2, slic_zero=False)).compute(ctx) == []


# -- every metric through a real context -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_metric_runs_and_records_its_settings(channels: int, backend: str) -> None:
    model = tiny_cnn(channels)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, channels, 16, 16, generator=g)
    maps = torch.rand(4, 16, 16, generator=g)
    maps[3] = 0.5  # constant: left out
    ctx = context(model, x, maps, batch_size=3)
    for name in NAMES:
        cls = METRICS.get(name)
        assert cls.category == "faithfulness" and cls.uses_explanations
        backend_param = {"backend": backend} if "backend" in cls.Params.model_fields else {}
        (result,) = cls(cls.Params(n=4, **backend_param)).compute(ctx)
        assert math.isfinite(result.value)
        assert result.params["skipped_constant_map"] == 1
        assert result.n + result.params["skipped_undefined"] == 3
        assert "softmax" in result.params and "implementation" in result.params
        assert "quantus_version" in result.params
        assert result.params["image_size"] == [16, 16]


def test_n_limits_the_images_scored() -> None:
    model = tiny_cnn(1)
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = context(model, x, torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(1)))
    (result,) = METRICS.get("deletion_auc")(METRICS.get("deletion_auc").Params(n=2)).compute(ctx)
    assert result.n == 2


def test_params_reject_unknown_keys() -> None:
    with pytest.raises(ValueError):
        METRICS.get("pixel_flipping").Params(step=3)
    with pytest.raises(ValueError):
        METRICS.get("road").Params(percentages=[0, 50])
