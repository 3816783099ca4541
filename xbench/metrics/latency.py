"""Measured latency: the full network, each exit alone, and the method under its real exit policy.

Timing protocol (one cell, one process, the model on its device in eval mode, no gradients):

* ``warmup`` untimed calls, then ``repeats`` timed calls, each its own sample;
  on CUDA every call is bracketed by ``torch.cuda.synchronize`` so the time covers the
  kernels, not their launch (``torch.utils.benchmark`` reports only aggregate statistics,
  and p95 needs every sample); on CPU the intra-op thread count is recorded.
* Batch 1 uses ``repeats`` different test images in turn; the full network, every exit
  and the policy see the same images in the same order.
* Exit ``i`` alone: ``forward_exit(x, i)``, the stages up to exit ``i`` and the heads it
  passes. The policy: :func:`xbench.models.exits.early_exit`, which consumes the model's
  lazy ``exit_stream`` and stops at the first confident exit, so later stages never run.
* The suite's batch size is timed for the full network and each exit, ``batch_repeats``
  calls after one untimed call (a batch cannot stop early per sample without routing, so
  the policy is timed at batch 1 only).
* Before a cell's first timing, the full network runs untimed for ``spin_up_s`` seconds
  (:func:`spin_up`).

Reported: ``latency`` (ms per image at batch 1, p50; per exit with ``exit`` set; p95 and the
batch timings in params), ``policy_latency`` (the expected ms per image under the policy at
batch 1: Σ_e share_e × the median time of the images that left at exit e, see
:func:`exit_weighted_median`; the plain mean, p50 and p95 in params), and ``latency_speedup`` =
full-network p50 / that, on the same images. A model without exits has no policy beyond its
full network: its policy time is its full time and its speedup is exactly 1.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.models.base import memory_format_of
from xbench.models.contract import EarlyExitModel
from xbench.models.exits import early_exit
from xbench.registry import METRICS


class LatencyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repeats: int = Field(100, ge=5, le=100_000, description="timed calls at batch 1 (one test image each)")
    # A batch call costs hundreds of batch-1 calls, and one untimed batch call warms the same
    # kernels: at batch size the budget is small (what 10 repeats cost Coded ResNeXt: BENCHMARKS.md,
    # "Numbers behind the code"). p95 of 3 calls is their maximum.
    batch_repeats: int = Field(3, ge=1, le=1000, description="timed calls at the suite's evaluation batch size")
    warmup: int = Field(10, ge=0, le=100_000, description="untimed calls before timing")
    spin_up_s: float = Field(
        0.25,
        ge=0,
        le=60,
        description="seconds of untimed full-network calls before a cell's first timing (see spin_up)",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[Tensor], Any], inputs: list[Tensor], warmup: int, device: torch.device) -> list[float]:
    """Seconds of ``fn(x)`` for each ``x`` in ``inputs``, after ``warmup`` untimed calls on the first."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(inputs[0])
        _sync(device)
        times = []
        for x in inputs:
            start = time.perf_counter()
            fn(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return times


def spin_up(fn: Callable[[Tensor], Any], x: Tensor, seconds: float, device: torch.device) -> None:
    """Call ``fn(x)`` untimed for at least ``seconds``, before a cell's timings.

    A count of warm-up calls is not enough for the first timing in a process: the first cell a
    run's driver timed was far noisier than every later one (BENCHMARKS.md, "Numbers behind the
    code"). Running for a fixed time lets the clock rise and lazy initialisation finish, whatever
    one call costs.
    """
    with torch.no_grad():
        end = time.perf_counter() + seconds
        while True:
            fn(x)
            _sync(device)
            if time.perf_counter() >= end:
                return


def exit_weighted_median(times: list[float], exits: list[int]) -> float:
    """Σ_e (share of images leaving at exit e) × (median time of those images): the policy's expected time.

    The time per image under a policy is a mixture, one mode per exit, so its median is not its
    expected cost, and its mean is at the mercy of a few calls the OS delays (BENCHMARKS.md,
    "Numbers behind the code"). The median within each exit's group keeps
    the mixture's weights and drops the outliers; with one exit it is the plain median.
    """
    groups: dict[int, list[float]] = {}
    for t, e in zip(times, exits, strict=True):
        groups.setdefault(e, []).append(t)
    return sum(len(g) * statistics.median(g) for g in groups.values()) / len(times)


def _quantile(values: list[float], q: float) -> float:
    return float(np.percentile(values, 100 * q))


def measure(ctx: EvalContext, params: LatencyParams) -> dict[str, Any]:
    """Every timing of a cell (memoised: the three latency metrics share one measurement)."""
    model, device = ctx.model.eval(), ctx.device
    n = min(params.repeats, len(ctx.data))
    singles = [ctx.data.images[i : i + 1].to(device) for i in range(n)]
    batch = ctx.data.images[: ctx.batch_size].to(device)
    n_exits = int(model.num_exits) if isinstance(model, EarlyExitModel) else 1

    def full(x: Tensor) -> Any:
        return model(x).logits

    paths: dict[str, Callable[[Tensor], Any]] = {"full": full}
    if n_exits > 1:
        for i in range(n_exits):
            paths[f"exit{i}"] = lambda x, i=i: model.forward_exit(x, i)  # type: ignore[operator,misc]
    spin_up(full, singles[0], params.spin_up_s, device)
    timings: dict[str, Any] = {}
    for name, fn in paths.items():
        one = time_calls(fn, singles, params.warmup, device)
        many = time_calls(fn, [batch] * params.batch_repeats, min(params.warmup, 1), device)
        timings[name] = {
            "p50_ms": 1e3 * statistics.median(one),
            "p95_ms": 1e3 * _quantile(one, 0.95),
            "mean_ms": 1e3 * statistics.fmean(one),
            "batch_size": int(batch.shape[0]),
            "batch_p50_ms_per_image": 1e3 * statistics.median(many) / batch.shape[0],
            "batch_p95_ms_per_image": 1e3 * _quantile(many, 0.95) / batch.shape[0],
        }
    policy = ctx.exit_policy() if n_exits > 1 and isinstance(model, EarlyExitModel) else None
    if policy is None:
        timings["policy"] = {**timings["full"], "exits_taken": [0] * n_exits, "expected_ms": timings["full"]["p50_ms"]}
    else:

        def run_policy(x: Tensor) -> Any:
            return early_exit(model, x, policy.thresholds)[0]

        with torch.no_grad():
            exits = [int(early_exit(model, x, policy.thresholds)[1]) for x in singles]
        one = time_calls(run_policy, singles, params.warmup, device)
        timings["policy"] = {
            "expected_ms": 1e3 * exit_weighted_median(one, exits),
            "p50_ms": 1e3 * statistics.median(one),
            "p95_ms": 1e3 * _quantile(one, 0.95),
            "mean_ms": 1e3 * statistics.fmean(one),
            "thresholds": policy.thresholds,
            "exits_taken": [exits.count(e) for e in range(n_exits)],
        }
    timings["setup"] = timing_setup(device, n, params.warmup, params.spin_up_s, model)
    return timings


def timing_setup(device: torch.device, images: int, warmup: int, spin_up_s: float, model: nn.Module) -> dict[str, Any]:
    """What every timing record carries: device, CPU threads, torch version, CUDA sync, images, warm-up,
    and the model's weight layout (``resources.channels_last``)."""
    return {
        "spin_up_s": spin_up_s,
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "memory_format": memory_format_of(model),
        "torch": torch.__version__,
        "cuda_synchronized": device.type == "cuda",
        "images": images,
        "warmup": warmup,
    }


STATISTIC = "policy: Σ_e share_e × median ms of the images leaving at exit e; full network: median"


class _Latency(Metric[LatencyParams]):
    category = Category.EFFICIENCY
    measures_time = True
    Params = LatencyParams

    def timings(self, ctx: EvalContext) -> dict[str, Any]:
        key = "latency:" + self.params.model_dump_json()
        return ctx.memo(key, lambda: measure(ctx, self.params))


@METRICS.register("latency")
class Latency(_Latency):
    """Median milliseconds per image at batch 1: the full network, and each exit alone."""

    direction = Direction.LOWER
    label = "Latency"
    unit = "ms"
    decimals = 3
    description = "measured ms per image at batch 1 (p50; per exit too; p95 and batch timings in params)"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        t = self.timings(ctx)
        n = t["setup"]["images"]
        out = [MetricResult(t["full"]["p50_ms"], n, params={**t["full"], **t["setup"]})]
        exits = sorted(k for k in t if k.startswith("exit"))
        out += [MetricResult(t[k]["p50_ms"], n, exit=int(k[4:]), params={**t[k], **t["setup"]}) for k in exits]
        return out


@METRICS.register("policy_latency")
class PolicyLatency(_Latency):
    """Expected milliseconds per image at batch 1 under the method's real early-exit policy."""

    direction = Direction.LOWER
    label = "Latency (policy)"
    unit = "ms"
    decimals = 3
    description = "measured ms per image at batch 1 stopping at the first confident exit: Σ_e share_e × p50_e"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        t = self.timings(ctx)
        params = {**t["policy"], "statistic": STATISTIC, **t["setup"]}
        return [MetricResult(t["policy"]["expected_ms"], t["setup"]["images"], params=params)]


@METRICS.register("latency_speedup")
class LatencySpeedup(_Latency):
    """Measured full-network time / measured time under the exit policy, same images, same process."""

    direction = Direction.HIGHER
    label = "Speedup (latency)"
    unit = "×"
    decimals = 2
    description = "full-network p50 ms / expected ms under the exit policy, batch 1, same images"

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        t = self.timings(ctx)
        ratio = t["full"]["p50_ms"] / t["policy"]["expected_ms"]
        params = {
            "full_p50_ms": t["full"]["p50_ms"],
            "policy_expected_ms": t["policy"]["expected_ms"],
            "statistic": STATISTIC,
            **t["setup"],
        }
        return [MetricResult(float(ratio), t["setup"]["images"], params=params)]
