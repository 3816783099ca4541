"""The torch backend of the Quantus-backed faithfulness metrics equals Quantus 0.6.0 called directly.

Quantus is the reference: each test calls the Quantus metric as its documentation shows (numpy
arrays, numpy's global seed) and :mod:`xbench.metrics.faithfulness.kernels.quantus_torch` on the
same model, images, maps, classes, batch size and seed, and requires the same per-image output to
the last bit. The maps have ties (a ReLU's zeros, blocks of equal values), which decide the order
of tied features, and the batch size does not divide the number of images, so the last batch
differs from the others.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.metrics.context import EvalContext
from xbench.metrics.faithfulness import BACKENDS, quantus_backed
from xbench.metrics.faithfulness.kernels import quantus_torch
from xbench.metrics.quantus_compat import numpy_trapz_shim
from xbench.registry import METRICS

N, SIZE, BATCH = 7, 12, 3


def tiny_cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1), nn.Flatten(),
        nn.Linear(2 * SIZE * SIZE, 3),
    ).eval()  # fmt: skip


def case(channels: int, ties: str) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Model, images, classes (the predictions) and maps with the given kind of ties."""
    model = tiny_cnn(channels)
    g = torch.Generator().manual_seed(channels)
    x = torch.rand(N, channels, SIZE, SIZE, generator=g)
    x[:, :, :3] = 0.0  # a black band: deleting there changes nothing
    if ties == "relu":  # Grad-CAM-like: half the pixels tied at 0
        maps = (torch.rand(N, SIZE, SIZE, generator=g) - 0.5).clamp_min(0)
    elif ties == "blocks":  # upsampled coarse maps: ties inside every 3×3 block and between patches
        maps = torch.rand(N, 4, 4, generator=g).round(decimals=1).repeat_interleave(3, 1).repeat_interleave(3, 2)
    else:
        maps = torch.rand(N, SIZE, SIZE, generator=g)
    maps = maps / maps.flatten(1).amax(1)[:, None, None]
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, maps


def quantus_direct(name: str, kwargs: dict, model: nn.Module, x: Tensor, y: Tensor, a: Tensor, softmax: bool,
                   seed: int) -> np.ndarray:  # fmt: skip
    import quantus
    from quantus.functions import similarity_func

    kwargs = dict(kwargs)
    if "similarity_func" in kwargs:
        kwargs["similarity_func"] = getattr(similarity_func, f"correlation_{kwargs['similarity_func']}")
    metric = getattr(quantus, name)(disable_warnings=True, return_aggregate=False, **kwargs)
    np.random.seed(seed)
    with numpy_trapz_shim():
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(), device="cpu",
                     softmax=softmax, batch_size=BATCH, channel_first=True)  # fmt: skip
    return np.asarray(out, dtype=np.float64)


CASES = {
    "FaithfulnessCorrelation": {"nr_runs": 6, "subset_size": 10, "perturb_baseline": 0.0,
                                "similarity_func": "pearson", "normalise": True, "abs": False},
    "PixelFlipping": {"features_in_step": 12, "perturb_baseline": 0.0, "return_auc_per_sample": True,
                      "normalise": True, "abs": False},
    "RegionPerturbation": {"patch_size": 5, "regions_evaluation": 6, "order": "morf", "perturb_baseline": 0.0,
                           "normalise": True, "abs": False},
    "Selectivity": {"patch_size": 5, "perturb_baseline": 0.0, "normalise": True, "abs": False},
    "MonotonicityCorrelation": {"features_in_step": 12, "nr_samples": 3, "eps": 1e-5, "perturb_baseline": "uniform",
                                "similarity_func": "spearman", "normalise": True, "abs": True},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ties", ["none", "relu", "blocks"])
@pytest.mark.parametrize("softmax", [True, False])
def test_torch_backend_equals_quantus(name: str, channels: int, ties: str, softmax: bool) -> None:
    model, x, y, maps = case(channels, ties)
    kwargs = CASES[name]
    theirs = quantus_direct(name, kwargs, model, x, y, maps, softmax, seed=5)
    function = BACKENDS[name]
    seeded = {"seed": 5} if name in ("FaithfulnessCorrelation", "MonotonicityCorrelation") else {}
    state = np.random.get_state()
    ours = function(model, x, y, maps, softmax=softmax, batch_size=BATCH, device="cpu", **seeded, **kwargs)
    assert ours.shape == theirs.shape and ours.shape[0] == N
    np.testing.assert_array_equal(ours, theirs)
    assert np.isfinite(ours).any() and np.nanstd(ours) > 0  # a non-trivial comparison
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_pixel_flipping_curves_equal_quantus() -> None:
    model, x, y, maps = case(1, "relu")
    kwargs = {**CASES["PixelFlipping"], "return_auc_per_sample": False}
    theirs = quantus_direct("PixelFlipping", kwargs, model, x, y, maps, True, seed=0)
    ours = quantus_torch.pixel_flipping(model, x, y, maps, softmax=True, batch_size=BATCH, device="cpu", **kwargs)
    assert ours.shape == (N, SIZE * SIZE // 12)
    np.testing.assert_array_equal(ours, theirs)


def test_quantus_maps_normalise_by_the_largest_value_of_the_set() -> None:
    # Quantus's normalise_by_max divides by max |a| over every map at once, not per image.
    a = torch.tensor([[[0.5, -1.0]], [[2.0, 0.0]]])
    out = quantus_torch.quantus_maps(a, normalise=True, absolute=False)
    assert out.shape == (2, 1, 1, 2)
    np.testing.assert_array_equal(out[:, 0, 0], [[0.25, -0.5], [1.0, 0.0]])
    np.testing.assert_array_equal(quantus_torch.quantus_maps(a, normalise=True, absolute=True)[0, 0, 0], [0.25, 0.5])
    zeros = torch.zeros(1, 2, 2)
    np.testing.assert_array_equal(
        quantus_torch.quantus_maps(zeros, normalise=True, absolute=False), np.zeros((1, 1, 2, 2))
    )


def test_patch_ranks_follow_quantus_padding() -> None:
    # 5×5 image, 2-px patches: padded by (0, 1) on each axis to 6×6, 3×3 patches, the last row and
    # column of patches half outside the image.
    maps = np.zeros((1, 1, 5, 5), dtype=np.float32)
    maps[0, 0, 4, 4] = 1.0  # the bottom-right patch (2, 2) is the most relevant
    maps[0, 0, 0, 2] = 0.5  # then patch (0, 1)
    ranks, patches = quantus_torch.patch_ranks(maps, 1, 2)
    assert patches == 9 and ranks.shape == (1, 5, 5)
    assert ranks[0, 4, 4] == 0 and ranks[0, 0, 2] == ranks[0, 1, 3] == 1
    assert sorted(np.unique(ranks).tolist()) == list(range(9))


def test_padding_size_is_quantus() -> None:
    from quantus.helpers.utils import get_padding_size

    for dim in range(1, 30):
        for patch in range(1, 12):
            assert quantus_torch.padding_size(dim, patch) == get_padding_size(dim, patch)


# -- through the metrics: both backends record the same value ------------------------------------------------
QUANTUS_BACKED = quantus_backed()


def test_the_five_quantus_metrics_have_both_backends() -> None:
    assert sorted(QUANTUS_BACKED) == [
        "faithfulness_correlation", "monotonicity_correlation", "pixel_flipping", "region_perturbation", "selectivity",
    ]  # fmt: skip


class Maps:
    """An explainer returning fixed maps by position (the context explains every image in one batch)."""

    name = "fixed"

    def __init__(self, maps: Tensor) -> None:
        self.maps = maps

    def explain(self, method, model, x, target, seed):  # type: ignore[no-untyped-def]
        return self.maps[: len(x)]


@pytest.mark.parametrize("name", QUANTUS_BACKED)
def test_both_backends_record_the_same_value(name: str) -> None:
    from tests.metrics.test_faithfulness import METHOD, Wrapped

    model, x, _, maps = case(1, "relu")
    data = ImageSplit(x, torch.zeros(N, dtype=torch.long), None, ["a", "b", "c"])
    ctx = EvalContext(Wrapped(model), METHOD, data, torch.device("cpu"), 64, progress=False,  # type: ignore[arg-type]
                      explainers={"fixed": Maps(maps)}, seed=3).with_explainer("fixed")  # fmt: skip
    cls = METRICS.get(name)
    small = {"steps": 4} if name in ("pixel_flipping", "monotonicity_correlation") else {}
    (torch_result,) = cls(cls.Params(backend="torch", **small)).compute(ctx)
    (quantus_result,) = cls(cls.Params(backend="quantus", **small)).compute(ctx)
    assert torch_result.value == quantus_result.value
    assert torch_result.n == quantus_result.n
    assert torch_result.params["backend"] == "torch" and quantus_result.params["backend"] == "quantus"
    assert torch_result.params["implementation"].startswith("xbench.metrics.perturb")
    assert quantus_result.params["implementation"] == f"quantus.{cls.quantus_class}"
    same = {k: v for k, v in torch_result.params.items() if k not in ("backend", "implementation")}
    assert same == {k: v for k, v in quantus_result.params.items() if k not in ("backend", "implementation")}


def test_backend_defaults_to_torch_and_rejects_others() -> None:
    for name in QUANTUS_BACKED:
        cls = METRICS.get(name)
        assert cls.Params().backend == "torch"
        with pytest.raises(ValueError):
            cls.Params(backend="numpy")


def test_each_declared_row_is_its_registered_class() -> None:
    from xbench.metrics.faithfulness import QUANTUS_METRICS, quantus_metrics

    for row in QUANTUS_METRICS:
        cls = METRICS.get(row.name)
        assert cls is getattr(quantus_metrics, row.class_name) and cls.__name__ == row.class_name
        assert cls.declaration is row and cls.Params is row.params and cls.quantus_class == row.quantus_class
        assert (cls.direction, cls.label, cls.description) == (row.direction, row.label, row.description)
