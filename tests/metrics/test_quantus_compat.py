"""The Quantus compatibility layer: same values as calling Quantus directly, and its defects worked around."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xbench.metrics.faithfulness.reference import make_metric, run_quantus
from xbench.metrics.quantus_compat import QUANTUS_VERSION, numpy_seed, numpy_trapz_shim

NUMPY_HAS_TRAPZ = hasattr(np, "trapz")


def model_and_data(channels: int, n: int = 5, size: int = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    """A random 3-class conv+linear model and images, classes and maps as tensors."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(channels, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * size * size, 3)).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g)
    a = torch.rand(n, size, size, generator=g)
    y = model(x).argmax(1)
    return model, x, y, a


def direct(name: str, kwargs: dict, model: nn.Module, x, y, a, softmax: bool, batch_size: int, seed: int | None = None):  # type: ignore[no-untyped-def]
    """Quantus called as its documentation shows, with the np.trapz shim and numpy's global seed."""
    import quantus

    metric = getattr(quantus, name)(disable_warnings=True, return_aggregate=False, **kwargs)
    if seed is not None:
        np.random.seed(seed)
    with numpy_trapz_shim():
        out = metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=a[:, None].numpy(),
            device="cpu",
            softmax=softmax,
            batch_size=batch_size,
        )
    return out if isinstance(out, dict) else np.asarray(out, dtype=np.float64)


def test_quantus_version() -> None:
    assert QUANTUS_VERSION == "0.6.0"


# -- np.trapz ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(NUMPY_HAS_TRAPZ, reason="this numpy still has np.trapz")
def test_trapz_shim_is_scoped_and_nests() -> None:
    assert not hasattr(np, "trapz")
    with numpy_trapz_shim():
        assert np.trapz is np.trapezoid  # type: ignore[attr-defined]
        with numpy_trapz_shim():
            assert np.trapz([0.0, 1.0, 2.0]) == 2.0  # type: ignore[attr-defined]
        assert hasattr(np, "trapz")  # the inner block leaves it to the outer one
    assert not hasattr(np, "trapz")
    with pytest.raises(RuntimeError), numpy_trapz_shim():
        raise RuntimeError
    assert not hasattr(np, "trapz")


@pytest.mark.skipif(NUMPY_HAS_TRAPZ, reason="this numpy still has np.trapz")
def test_quantus_auc_fails_without_the_shim() -> None:
    """The defect the shim works around: Quantus 0.6.0 calls np.trapz, gone in numpy 2.4."""
    from quantus.helpers.utils import calculate_auc

    with pytest.raises(AttributeError, match="trapz"):
        calculate_auc(np.array([1.0, 2.0]))
    with numpy_trapz_shim():
        assert calculate_auc(np.array([1.0, 2.0, 0.0])) == np.trapezoid([1.0, 2.0, 0.0])


def test_numpy_seed_restores_the_global_state() -> None:
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    with numpy_seed(11):
        first = np.random.rand(2)
    assert np.array_equal(np.random.rand(3), expected)  # the outer stream is untouched
    with numpy_seed(11):
        assert np.array_equal(np.random.rand(2), first)


# -- same values as Quantus -------------------------------------------------------------------------------------
CASES = [
    ("PixelFlipping", {"features_in_step": 16, "perturb_baseline": 0.0, "return_auc_per_sample": True}, True, None),
    ("PixelFlipping", {"features_in_step": 8, "perturb_baseline": 0.0}, False, None),
    ("RegionPerturbation", {"patch_size": 3, "regions_evaluation": 4, "perturb_baseline": 0.0}, True, None),
    ("Selectivity", {"patch_size": 4, "perturb_baseline": 0.0}, True, None),
    ("FaithfulnessCorrelation", {"nr_runs": 6, "subset_size": 10, "perturb_baseline": 0.0}, False, 7),
    ("MonotonicityCorrelation", {"features_in_step": 16, "nr_samples": 3}, True, 7),
]


@pytest.mark.parametrize(("name", "kwargs", "softmax", "seed"), CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
@pytest.mark.parametrize("channels", [1, 3])
def test_wrapper_returns_what_quantus_returns(
    name: str, kwargs: dict, softmax: bool, seed: int | None, channels: int
) -> None:
    model, x, y, a = model_and_data(channels)
    ours = run_quantus(make_metric(name, **kwargs), model, x, y, a, softmax=softmax, batch_size=2, seed=seed)
    theirs = direct(name, kwargs, model, x, y, a, softmax, batch_size=2, seed=seed)
    assert ours.shape[0] == 5
    np.testing.assert_array_equal(ours, theirs)
    assert np.isfinite(ours).all() and np.ptp(ours) > 0  # a non-trivial comparison


def test_softmax_is_passed_through() -> None:
    model, x, y, a = model_and_data(1)
    kwargs = {"features_in_step": 16, "perturb_baseline": 0.0}
    probs = run_quantus(make_metric("PixelFlipping", **kwargs), model, x, y, a, softmax=True, batch_size=5)
    logits = run_quantus(make_metric("PixelFlipping", **kwargs), model, x, y, a, softmax=False, batch_size=5)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert not np.allclose(probs, logits)
    # the last step deletes every pixel: the logit of the black image
    black = model(torch.zeros_like(x)).gather(1, y[:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(logits[:, -1], black, rtol=1e-5)


def test_aggregating_metrics_are_refused() -> None:
    model, x, y, a = model_and_data(1)
    metric = make_metric("FaithfulnessCorrelation", nr_runs=3, subset_size=4, return_aggregate=True)
    with pytest.raises(ValueError, match="return_aggregate"):
        run_quantus(metric, model, x, y, a, softmax=False, batch_size=5)


# -- ROAD ------------------------------------------------------------------------------------------------------------
def test_quantus_road_and_irof_fail_on_colour_input() -> None:
    """The defects the adapters work around (if Quantus fixes them, these tests say so)."""
    model, x, y, a = model_and_data(3)
    with pytest.raises(IndexError):
        direct("ROAD", {"percentages": [50]}, model, x, y, a, True, batch_size=5)
    with pytest.raises(AssertionError, match="shape"):
        direct("IROF", {"perturb_baseline": 0.0}, model, x, y, a, True, batch_size=5)


def test_road_per_sample_over_several_batches() -> None:
    model, x, y, a = model_and_data(1, n=6, size=10)
    metric = make_metric("ROAD", percentages=[20, 60, 90], noise=0.0)
    ours = run_quantus(metric, model, x, y, a, softmax=True, batch_size=4)
    assert ours.shape == (6, 3) and set(np.unique(ours)) <= {0.0, 1.0}
    # Quantus itself returns per-percentage means of its first batch only; with one batch they agree
    first = direct("ROAD", {"percentages": [20, 60, 90], "noise": 0.0}, model, x, y, a, True, batch_size=6)
    np.testing.assert_allclose(list(first.values()), ours.mean(axis=0))
    assert 0 < ours.mean() < 1
    again = run_quantus(metric, model, x, y, a, softmax=True, batch_size=6)  # a_size is reset per call
    np.testing.assert_array_equal(ours, again)


def test_road_on_colour_ranks_exactly_the_map_pixels() -> None:
    from xbench.metrics.faithfulness.reference import _road_channel_adapter

    model, x, y, a = model_and_data(3, n=4, size=10)
    scores = run_quantus(
        make_metric("ROAD", percentages=[30, 90], noise=0.0), model, x, y, a, softmax=True, batch_size=4
    )
    assert scores.shape == (4, 2) and set(np.unique(scores)) <= {0.0, 1.0}
    # The adapter's C-channel map: its top H·W entries, in order, are the map's pixels in order.
    metric = make_metric("ROAD", percentages=[50])
    maps = a[:, None].numpy()
    full = _road_channel_adapter(metric, maps, 3)
    assert full.shape == (4, 3, 10, 10) and metric.a_size == 100
    top = np.argsort(-full.reshape(4, -1), axis=1)[:, :100]
    np.testing.assert_array_equal(top, np.argsort(-maps.reshape(4, -1), axis=1))


def test_irof_on_colour_and_grey() -> None:
    model, x, y, a = model_and_data(3, n=3, size=12)
    colour = run_quantus(make_metric("IROF", perturb_baseline=0.0), model, x, y, a, softmax=True, batch_size=1)
    assert colour.shape == (3,) and np.isfinite(colour).all()
    model, x, y, a = model_and_data(1, n=3, size=12)
    grey = run_quantus(make_metric("IROF", perturb_baseline=0.0), model, x, y, a, softmax=True, batch_size=3)
    np.testing.assert_array_equal(grey, direct("IROF", {"perturb_baseline": 0.0}, model, x, y, a, True, batch_size=3))


def test_no_change_warning_for_steps_that_delete_background_is_silenced() -> None:
    """Quantus warns (despite disable_warnings) when a step leaves an image unchanged; run_quantus does not."""
    import warnings

    model, x, y, a = model_and_data(1)
    x[:, :, :4] = 0.0  # a black background whose pixels rank first: deleting them to 0 changes nothing
    a[:, :4] += 10.0
    kwargs = {"features_in_step": 8, "perturb_baseline": 0.0}
    with pytest.warns(UserWarning, match="didn't cause change"):
        expected = direct("PixelFlipping", kwargs, model, x, y, a, softmax=True, batch_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        ours = run_quantus(
            make_metric("PixelFlipping", **kwargs), model, x, y, a, softmax=True, batch_size=5, device="cpu"
        )
    np.testing.assert_allclose(ours, expected)
