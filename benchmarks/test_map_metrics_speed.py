"""Map-only metrics (localisation, attention consistency): xbench's batched forms against their references.

The quick suite's sizes: 1,000 maps of 40 × 40 (``evaluation.explain_limit`` images of the cluttered
canvas), smooth like saliency maps, one thread. No model runs: these metrics score maps against masks
or against other maps. Each test times, in one run, the reference called directly and xbench's
implementation, checks that the values agree (the tolerance is in the test and its reason in the
docstring of the function it times), and records both times and the ratio in ``extra_info``. No
assertion on time: the ratios are the result.

- ``localisation_auc``: ``quantus.AUC`` (full call; a scikit-learn ROC per image) against
  :func:`xbench.metrics.localization.roc_auc` (one batched rank computation).
- the other five Quantus localisation metrics: Quantus's full call against xbench's path, which calls
  the same metric's ``evaluate_batch`` (already vectorised over images in Quantus 0.6.0) and skips the
  preprocessing's set of every attribution value (see :func:`~xbench.metrics.localization.quantus_scores`).
- ``attention_consistency_ssim``: ``skimage.metrics.structural_similarity`` per pair against
  :func:`xbench.metrics.exit_agreement.ssim` (one batched box filter).

Run: ``python -m pytest benchmarks/test_map_metrics_speed.py -s`` (``XBENCH_BENCH_MAPS`` maps, default 1,000).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from conftest import smooth

from xbench.metrics import localization as L
from xbench.metrics.exit_agreement import ssim, ssim_window
from xbench.metrics.quantus_compat import QUANTUS_VERSION, numpy_trapz_shim

SIZE = 40


@pytest.fixture(scope="module")
def maps(request: pytest.FixtureRequest) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(maps, other maps, masks): smooth maps in [0, 1] and object masks of 20–60% of the pixels."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    n = int(os.environ.get("XBENCH_BENCH_MAPS", "1000"))
    a = smooth(n, 1, SIZE, seed=1)[:, 0]
    b = smooth(n, 1, SIZE, seed=2)[:, 0]
    level = torch.linspace(0.35, 0.65, n)[:, None, None]
    masks = smooth(n, 1, SIZE, seed=3)[:, 0] > level
    yield a, b, masks
    torch.set_num_threads(threads)


def timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def report(benchmark: Any, name: str, reference: str, ref_s: float, ours_s: float, n: int, max_diff: float) -> None:
    info = {
        "n": n,
        "map": f"{SIZE}×{SIZE}",
        "threads": torch.get_num_threads(),
        "quantus_version": QUANTUS_VERSION,
        "reference": reference,
        "reference_s": round(ref_s, 4),
        "xbench_s": round(ours_s, 4),
        "reference_over_xbench": round(ref_s / ours_s, 2),
        "max_abs_difference": max_diff,
    }
    benchmark.extra_info.update(info)
    print(f"\n{name}: {info}")


LOCALISATION = ["pointing_game", "attribution_localisation", "top_k_intersection", "relevance_rank_accuracy",
                "relevance_mass_accuracy", "localisation_auc"]  # fmt: skip


@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_speed(benchmark: Any, maps: tuple[torch.Tensor, ...], name: str) -> None:
    import quantus  # noqa: F401 - imported once, outside the timings

    a, _, masks = maps
    metric = L.LOCALISATION_METRICS[name]()
    quantus_metric = metric.build(a)
    with numpy_trapz_shim():
        ref_s, theirs = timed(lambda: L.quantus_call(quantus_metric, a.numpy(), masks.numpy()))
    ours = benchmark.pedantic(lambda: metric.scores(a, masks), rounds=1, iterations=1)
    diff = float(np.max(np.abs(ours - theirs)))
    # AUC: float64 round-off between scikit-learn's trapezoids and the rank formula; the others: the same numpy code
    assert diff <= (1e-12 if name == "localisation_auc" else 0.0)
    report(benchmark, name, f"quantus.{metric.quantus_class} (full call)", ref_s, benchmark.stats.stats.mean,
           len(a), diff)  # fmt: skip


def test_ssim_speed(benchmark: Any, maps: tuple[torch.Tensor, ...]) -> None:
    from skimage.metrics import structural_similarity

    a, b, _ = maps
    win = ssim_window(a.shape[-2:])
    an, bn = a.double().numpy(), b.double().numpy()

    def skimage_per_pair() -> np.ndarray:
        pairs = zip(an, bn, strict=True)
        return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in pairs])

    ref_s, theirs = timed(skimage_per_pair)
    ours = benchmark.pedantic(lambda: ssim(a, b), rounds=1, iterations=1).numpy()
    diff = float(np.max(np.abs(ours - theirs)))
    assert diff <= 1e-12  # float64 round-off: scipy's running-sum filter against the window sums
    report(benchmark, "attention_consistency_ssim", "skimage structural_similarity per pair", ref_s,
           benchmark.stats.stats.mean, len(a), diff)  # fmt: skip
