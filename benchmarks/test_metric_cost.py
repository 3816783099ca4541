"""Cost of each faithfulness metric at the quick suite's sizes, through xbench and through Quantus.

Run with ``python -m pytest benchmarks`` (``XBENCH_BENCH_N`` images, default 256). Each test
times one metric for one explainer through xbench (its default backend: ``torch`` for the
Quantus-backed metrics; benchmarks/test_faithfulness_speed.py compares those with Quantus at the
quick suite's 40 px and checks their values bitwise; a fresh context, so the metric pays its own
one-off work: original scores, segments, canvases) and then the same metric called directly on
Quantus 0.6.0 with the same hyperparameters and inputs (where Quantus has it), and records in
``extra_info``: seconds and ms per image of both, ``quantus_over_xbench`` (the speed-up) and both
values (Quantus's output summarised as xbench does; the same up to the random draws). Quantus's
IROF runs with its fixed SLIC settings (100 segments), which is the cost of using it, and its value
is the raw area over the curve (not divided by the segment count); AD/IC and insertion/deletion
have no Quantus counterpart.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

from xbench.metrics import faithfulness as F
from xbench.metrics.faithfulness.reference import make_metric
from xbench.metrics.quantus_compat import QUANTUS_VERSION, numpy_seed, numpy_trapz_shim
from xbench.registry import METRICS

METRICS_TIMED = [
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


def quantus_direct(name: str, metric: Any, setup: Any) -> tuple[float, float] | None:
    """(seconds, mean score) of the Quantus metric matching ``metric``, called directly; None without one."""
    ctx = setup.context()
    x = setup.data.images.numpy()
    y = ctx.explain_targets().numpy()
    a = setup.maps[:, None].numpy()
    if isinstance(metric, F.QuantusFaithfulness):
        quantus_name = metric.quantus_class
        kwargs = F.constructor_kwargs(metric.quantus_kwargs(setup.data.images.shape))
        softmax = bool(metric.params.softmax)
    elif name == "road":
        quantus_name, softmax = "ROAD", True
        kwargs = {"percentages": list(metric.params.percentages), "noise": metric.params.noise}
    elif name == "irof":
        quantus_name, softmax = "IROF", True
        kwargs = {"perturb_baseline": float(setup.data.images.mean())}
    else:
        return None
    q = make_metric(quantus_name, **kwargs)
    start = time.perf_counter()
    with numpy_trapz_shim(), numpy_seed(0):
        out = q(model=ctx.logits_model(), x_batch=x, y_batch=y, a_batch=a, channel_first=True, softmax=softmax,
                device="cpu", batch_size=ctx.batch_size)  # fmt: skip
    elapsed = time.perf_counter() - start
    if isinstance(out, dict):  # ROAD: per-percentage means
        return elapsed, float(np.mean(list(out.values())))
    raw = np.asarray(out, dtype=np.float64)
    if isinstance(metric, F.QuantusFaithfulness):  # xbench's summary of Quantus's output (AUC, AOPC)
        raw = metric.summarise(raw, metric.quantus_kwargs(setup.data.images.shape), setup.data.images.shape)
    return elapsed, float(np.nanmean(raw))


@pytest.mark.parametrize("name", METRICS_TIMED)
def test_metric_cost(benchmark: Any, quick_setup: Any, name: str) -> None:
    import quantus  # noqa: F401 - imported once, outside the timings

    cls = METRICS.get(name)
    metric = cls(cls.Params(n=quick_setup.n))
    results = benchmark.pedantic(lambda ctx: metric.compute(ctx), setup=lambda: ((quick_setup.context(),), {}),
                                 rounds=1, iterations=1)  # fmt: skip
    (result,) = results
    xbench_s = benchmark.stats.stats.mean
    info: dict[str, Any] = {
        "n": quick_setup.n,
        "image": "1×64×64",
        "model": "ResNet-8, width 16, stride-2 stem",
        "threads": torch.get_num_threads(),
        "quantus_version": QUANTUS_VERSION,
        "implementation": result.params["implementation"],
        "xbench_s": round(xbench_s, 3),
        "xbench_ms_per_image": round(1e3 * xbench_s / quick_setup.n, 2),
        "xbench_value": result.value,
    }
    direct = quantus_direct(name, metric, quick_setup)
    if direct is not None:
        quantus_s, quantus_value = direct
        info.update(
            quantus_s=round(quantus_s, 3),
            quantus_ms_per_image=round(1e3 * quantus_s / quick_setup.n, 2),
            quantus_value=quantus_value,
            quantus_over_xbench=round(quantus_s / xbench_s, 2),
        )
    benchmark.extra_info.update(info)
    print(f"\n{name}: {info}")
