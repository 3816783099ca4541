"""Faithfulness metrics: xbench's torch backend against Quantus 0.6.0 called directly, same values.

The quick suite's sizes: 256 explained images of the 40-px cluttered canvas (1 × 40 × 40), the
quick suite's ResNet-8 (width 16, stride-2 stem), batch 128 (its ``evaluation.batch_size``), one
thread (``torch.set_num_threads(1)``). Images and maps are smooth noise (benchmarks/conftest.py);
the model is untrained (the cost does not depend on its weights). Each test times, in one run,
Quantus's full call (as its documentation shows: numpy arrays, numpy's global seed) and the xbench
metric's ``compute`` on a fresh context with ``backend: torch`` (so it pays its own one-off work),
checks that both give the same per-image values (``quantus_equal``: bitwise; the xbench value is
the mean of xbench's summary of those values), and records both times and ``quantus_over_torch``
in ``extra_info``, next to ``forward_only_s``: the model alone on the forward passes the definition
prescribes (``forward_passes_per_image`` × n images, batch 128), the floor of any implementation that
keeps the values, and ``quantus_over_forward_only``, the largest speed-up that floor allows. No
assertion on time: the ratios are the result.

Run: ``python -m pytest benchmarks/test_faithfulness_speed.py -s`` (``XBENCH_BENCH_N`` images,
default 256; ``XBENCH_BENCH_SIZE`` pixels, default 40).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from conftest import Setup, make_setup

from xbench.metrics import faithfulness as F
from xbench.metrics.faithfulness.reference import make_metric
from xbench.metrics.quantus_compat import QUANTUS_VERSION, numpy_seed, numpy_trapz_shim
from xbench.registry import METRICS

QUANTUS_BACKED = F.quantus_backed()
SEED = 0


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick40(one_thread: None) -> Setup:
    setup = make_setup(int(os.environ.get("XBENCH_BENCH_N", "256")), int(os.environ.get("XBENCH_BENCH_SIZE", "40")))
    setup.predictions = context(setup).predictions()
    return setup


def context(setup: Setup) -> Any:
    """A fresh context at the quick suite's batch size (128) whose maps are already computed."""
    return setup.context(batch_size=128, seed=SEED)


def forward_passes(metric: Any, shape: torch.Size) -> int:
    """Forward passes per image the definition prescribes (Quantus and the torch backend make the same ones)."""
    kw = metric.quantus_kwargs(shape)
    features = int(shape[1] * shape[2] * shape[3])
    if metric.quantus_class == "FaithfulnessCorrelation":
        return int(kw["nr_runs"]) + 1
    if metric.quantus_class == "PixelFlipping":
        return features // int(kw["features_in_step"])
    if metric.quantus_class == "MonotonicityCorrelation":
        return features // int(kw["features_in_step"]) * int(kw["nr_samples"]) + 1
    patches = -(-int(shape[2]) // int(kw["patch_size"])) * -(-int(shape[3]) // int(kw["patch_size"]))
    if metric.quantus_class == "RegionPerturbation":
        return min(int(kw["regions_evaluation"]), patches) + 1
    return patches  # Selectivity


@torch.no_grad()
def forward_floor(setup: Setup, passes: int, batch_size: int = 128) -> float:
    """Seconds of the model alone on ``passes`` × n images in batches of ``batch_size``: no metric can go below."""
    from xbench.metrics.context import LogitsOnly

    model = LogitsOnly(setup.model).eval()
    x = setup.data.images
    start = time.perf_counter()
    for _ in range(passes):
        for s in range(0, len(x), batch_size):
            model(x[s : s + batch_size])
    return time.perf_counter() - start


def quantus_direct(metric: Any, setup: Setup) -> tuple[float, np.ndarray]:
    """(seconds, per-image output) of the matching Quantus metric, called as its documentation shows."""
    ctx = context(setup)
    shape = setup.data.images.shape
    q = make_metric(metric.quantus_class, **F.constructor_kwargs(metric.quantus_kwargs(shape)))
    start = time.perf_counter()
    with numpy_trapz_shim(), numpy_seed(SEED):
        out = q(model=ctx.logits_model(), x_batch=setup.data.images.numpy(), y_batch=ctx.explain_targets().numpy(),
                a_batch=setup.maps[:, None].numpy(), channel_first=True, softmax=bool(metric.params.softmax),
                device="cpu", batch_size=ctx.batch_size)  # fmt: skip
    return time.perf_counter() - start, np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("name", QUANTUS_BACKED)
def test_faithfulness_speed(benchmark: Any, quick40: Setup, name: str) -> None:
    import quantus  # noqa: F401 - imported once, outside the timings
    import scipy.stats  # noqa: F401 - likewise (the torch backend's correlations)

    cls = METRICS.get(name)
    metric = cls(cls.Params(n=quick40.n, backend="torch"))
    shape = quick40.data.images.shape
    kwargs = metric.quantus_kwargs(shape)
    quantus_s, quantus_raw = quantus_direct(metric, quick40)
    results = benchmark.pedantic(lambda ctx: metric.compute(ctx), setup=lambda: ((context(quick40),), {}),
                                 rounds=1, iterations=1)  # fmt: skip
    (result,) = results
    torch_s = benchmark.stats.stats.mean
    ctx = context(quick40)
    torch_raw = metric.raw_scores(ctx, quick40.data.images, ctx.explain_targets(), quick40.maps, kwargs)
    summary = metric.summarise(quantus_raw, kwargs, shape)
    passes = forward_passes(metric, shape)
    floor_s = forward_floor(quick40, passes)
    info: dict[str, Any] = {
        "n": quick40.n,
        "image": f"1×{shape[2]}×{shape[3]}",
        "model": "ResNet-8, width 16, stride-2 stem (untrained)",
        "batch_size": ctx.batch_size,
        "threads": torch.get_num_threads(),
        "quantus_version": QUANTUS_VERSION,
        "implementation": result.params["implementation"],
        "torch_s": round(torch_s, 3),
        "quantus_s": round(quantus_s, 3),
        "quantus_over_torch": round(quantus_s / torch_s, 2),
        "forward_passes_per_image": passes,
        "forward_only_s": round(floor_s, 3),
        "quantus_over_forward_only": round(quantus_s / floor_s, 2),
        "quantus_equal": bool(np.array_equal(torch_raw, quantus_raw, equal_nan=True)),
        "torch_value": result.value,
        "quantus_value": float(np.nanmean(summary)),
    }
    benchmark.extra_info.update(info)
    print(f"\n{name}: {info}")
    assert info["quantus_equal"], "the torch backend must give Quantus's values"
