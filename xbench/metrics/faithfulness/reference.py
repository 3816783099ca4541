"""The Quantus reference backend: Quantus 0.6.0's metric objects called on xbench's tensors.

Quantus is wrapped, never copied: :func:`run_quantus` calls a Quantus metric object on torch
tensors and returns one score (or one curve) per sample as a numpy array, inside
:func:`~xbench.metrics.quantus_compat.numpy_trapz_shim` and
:func:`~xbench.metrics.quantus_compat.numpy_seed`. It fixes what every call site would otherwise
repeat or get wrong with Quantus 0.6.0's model-based metrics:

* **ROAD fails on colour input** (``IndexError``): it ranks the C·H·W entries of the map
  broadcast over channels but hands those indices to ``noisy_linear_imputation``, which
  indexes an H·W pixel mask. See :func:`_road_channel_adapter` for the work-around.
* **IROF fails on colour input** (``AssertionError`` in ``baseline_replacement_by_mask``):
  its segment mask is (B, 1, H, W) while the image is (B, C, H, W). The mask is broadcast to
  the image's shape before Quantus's own perturbation function runs (:func:`_broadcast_mask`).
* **ROAD keeps only the first batch**: its ``custom_postprocess`` averages
  ``evaluation_scores[0]``, the first batch's array, and returns a dict of per-percentage
  means. The per-sample (N, P) matrix is kept instead (the post-processing is switched off on
  the instance), and ``a_size`` is reset per call (Quantus sets it once, from the first call).
* **``softmax`` defaults differ** between metrics (``FaithfulnessCorrelation``: logits, most
  others: probabilities): :func:`run_quantus` requires it explicitly.
* **Aggregating defaults** (``FaithfulnessCorrelation``, ``IROF``: ``return_aggregate=True``)
  would return one number; :func:`make_metric` turns it off, :func:`run_quantus` refuses it.

:func:`quantus_scores` is the ``quantus`` backend of the Quantus-defined metrics
(:mod:`xbench.metrics.faithfulness.quantus_metrics`): the metric built from the constructor
arguments xbench records, run through :func:`run_quantus`. The tests compare xbench's own ROAD
and IROF with Quantus through it as well.

Quantus itself is imported lazily: importing it takes seconds (it pulls in matplotlib and
more), and xbench's own implementations do not need it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xbench.metrics.quantus_compat import numpy_seed, numpy_trapz_shim


def make_metric(name: str, **kwargs: Any) -> Any:
    """``quantus.<name>(**kwargs)`` with per-sample output, no warnings and no progress bar by default."""
    import quantus

    kwargs.setdefault("return_aggregate", False)
    kwargs.setdefault("disable_warnings", True)
    kwargs.setdefault("display_progressbar", False)
    return getattr(quantus, name)(**kwargs)


def _broadcast_mask(perturb: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a Quantus mask perturbation so a (B, 1, H, W) mask applies to every channel of (B, C, H, W)."""

    @functools.wraps(perturb)
    def wrapped(arr: np.ndarray, mask: np.ndarray, **kwargs: Any) -> np.ndarray:
        return perturb(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)

    return wrapped


def _irof_channel_adapter(metric: Any) -> None:
    """IROF on colour images: broadcast its (B, 1, H, W) segment mask over channels.

    ``IROF.evaluate_batch`` builds ``mask = (segments == s)[:, None]`` and passes it with the
    (B, C, H, W) image to ``baseline_replacement_by_mask``, which asserts equal shapes: it holds
    only for C = 1. The metric's own perturbation function (already bound to its baseline by
    Quantus) is wrapped once to broadcast the mask first, so the segment is replaced in every
    channel; grey images are unaffected.
    """
    if not getattr(metric.perturb_func, "_xbench_broadcast", False):
        metric.perturb_func = _broadcast_mask(metric.perturb_func)
        metric.perturb_func._xbench_broadcast = True


def _road_channel_adapter(metric: Any, a: np.ndarray, channels: int) -> np.ndarray:
    """ROAD on colour images: a C-channel map whose top H·W entries are the pixels in map order.

    ``ROAD.evaluate_batch`` broadcasts the (N, 1, H, W) map to (N, C, H, W), ranks the C·H·W
    entries and passes the top ``a_size·p`` flat indices to ``noisy_linear_imputation``, which
    treats them as pixel indices of an H·W mask: with C > 1 they run past H·W (IndexError). We
    pass a C-channel map instead: channel 0 holds the map, the other channels hold a floor below
    every map value, so the top H·W entries (the most any percentage removes) are exactly the
    pixels in the map's order, all with indices < H·W; ``a_size`` is pinned to H·W (Quantus would
    take C·H·W from a C-channel map). The imputation then fills all channels of each removed
    pixel jointly, as the ROAD reference code does. Grey images are passed through unchanged.
    """
    n, _, h, w = a.shape
    metric.a_size = h * w
    if channels == 1:
        return a
    floor = np.full((n, channels - 1, h, w), float(a.min()) - 1.0, dtype=a.dtype)
    return np.concatenate([a, floor], axis=1)


def _road_per_sample(metric: Any) -> None:
    """Keep ROAD's per-sample (N, P) results: switch off its first-batch-only averaging."""
    metric.custom_postprocess = lambda **kwargs: None


def run_quantus(
    metric: Any,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    softmax: bool,
    batch_size: int,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Per-sample scores of a Quantus 0.6.0 metric object on torch tensors.

    Args:
        metric: a Quantus metric instance (e.g. from :func:`make_metric`), not aggregating.
        model: ``x -> logits`` module; it is put in eval mode (Quantus refuses train mode).
        x: (N, C, H, W) images in the model's input space.
        y: (N,) classes the maps explain.
        a: (N, H, W) or (N, 1, H, W) maps.
        softmax: score probabilities (True) or logits (False); always explicit, see module doc.
        batch_size: samples per Quantus batch.
        device: where Quantus runs the model; default: where the model's parameters are.
        seed: seeds numpy's global RNG for the call (random subsets, noise); None leaves it alone.

    Returns:
        float64 array with one row per sample: (N,) scores or (N, T) curves, as the metric returns
        them (ROAD: (N, P) booleans, "predicted class unchanged" per percentage).
    """
    if getattr(metric, "return_aggregate", False):
        raise ValueError(f"{type(metric).__name__} aggregates its scores; build it with return_aggregate=False")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    model.eval()
    x_np = np.ascontiguousarray(x.detach().cpu().float().numpy())
    y_np = np.ascontiguousarray(y.detach().cpu().long().numpy())
    a_np = a.detach().cpu().float().numpy()
    if a_np.ndim == 3:
        a_np = a_np[:, None]
    a_np = np.ascontiguousarray(a_np)
    name = type(metric).__name__
    if name == "ROAD":
        a_np = _road_channel_adapter(metric, a_np, x_np.shape[1])
        _road_per_sample(metric)
    elif name == "IROF":
        _irof_channel_adapter(metric)
    with numpy_trapz_shim(), numpy_seed(seed), warnings.catch_warnings():
        # Quantus warns, despite disable_warnings, whenever one perturbation step leaves an image
        # unchanged: deleting pixels that already have the baseline value (black background)
        # does, legitimately, and the scores are right. One such step is not a broken setting.
        warnings.filterwarnings("ignore", message="The settings for perturbing input", category=UserWarning)
        scores = metric(
            model=model,
            x_batch=x_np,
            y_batch=y_np,
            a_batch=a_np,
            channel_first=True,
            softmax=softmax,
            device=str(device),
            batch_size=batch_size,
        )
    if name == "ROAD":
        return np.concatenate([np.asarray(s, dtype=np.float64) for s in scores], axis=0)
    return np.asarray(scores, dtype=np.float64)


def constructor_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for Quantus from the recorded ones: a similarity name becomes Quantus's function."""
    out = dict(kwargs)
    if "similarity_func" in out:
        from quantus.functions import similarity_func

        out["similarity_func"] = getattr(similarity_func, f"correlation_{out['similarity_func']}")
    return out


def quantus_scores(
    quantus_class: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    *,
    softmax: bool,
    batch_size: int,
    device: torch.device | str,
    seed: int | None,
    **kwargs: Any,
) -> np.ndarray:
    """What ``quantus.<quantus_class>(**kwargs)`` returns per image, Quantus itself computing it.

    ``kwargs`` are the recorded constructor arguments (see :func:`constructor_kwargs`); the call
    mirrors the torch kernels' (:mod:`xbench.metrics.faithfulness.kernels.quantus_torch`).
    """
    metric = make_metric(quantus_class, **constructor_kwargs(kwargs))
    return run_quantus(metric, model, x, y, a, softmax=softmax, batch_size=batch_size, device=device, seed=seed)
