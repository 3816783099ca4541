"""Latency: the timing loop, real early exit at batch 1, and what the records carry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.baseline import Baseline
from xbench.methods.egt import EGT, EGTParams
from xbench.metrics import latency as latency_module
from xbench.metrics.context import EvalContext
from xbench.metrics.latency import (
    Latency,
    LatencyParams,
    LatencySpeedup,
    PolicyLatency,
    exit_weighted_median,
    measure,
    spin_up,
    time_calls,
)
from xbench.models.exits import ExitPolicy
from xbench.params import NoParams

CTX = MethodContext(
    num_classes=3, in_channels=1, image_size=(16, 16), mean=(0.5,), std=(0.5,),
    backbone="resnet_cifar", backbone_params={"depth": 8, "width": 4},
)  # fmt: skip
DATA = ImageSplit(torch.rand(24, 1, 16, 16), torch.arange(24) % 3, None, ["a", "b", "c"])
PARAMS = LatencyParams(repeats=8, batch_repeats=2, warmup=1, spin_up_s=0.0)  # spin-up: one call


def _ctx(method: EGT | Baseline) -> EvalContext:
    torch.manual_seed(0)
    return EvalContext(method.build().eval(), method, DATA, torch.device("cpu"), 12, progress=False, train=DATA)


def test_time_calls_warms_up_then_times_each_input() -> None:
    seen: list[int] = []
    inputs = [torch.full((1,), float(i)) for i in range(5)]
    times = time_calls(lambda x: seen.append(int(x)), inputs, warmup=3, device=torch.device("cpu"))
    assert seen == [0, 0, 0, 0, 1, 2, 3, 4]  # three warm-up calls on the first input, then each once
    assert len(times) == 5 and all(t >= 0 for t in times)


def test_spin_up_runs_for_its_time_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(np.arange(0.0, 100.0, 0.1))  # each reading of the clock is 0.1 s later
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: float(next(clock)))
    calls: list[int] = []
    spin_up(lambda x: calls.append(1), torch.zeros(1), 0.25, torch.device("cpu"))
    assert len(calls) == 3  # read at 0.0 (end 0.25), then after calls at 0.1, 0.2, 0.3
    calls.clear()
    spin_up(lambda x: calls.append(1), torch.zeros(1), 0.0, torch.device("cpu"))
    assert calls == [1]  # no time asked: one call


def _count_calls(module: nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(("thresholds", "stage2_runs"), [([0.0, 0.0], False), ([1.5, 1.5], True)])
def test_the_policy_really_stops_computing(thresholds: list[float], stage2_runs: bool) -> None:
    method = EGT(EGTParams(thresholds=thresholds), CTX)
    ctx = _ctx(method)
    (policy,) = PolicyLatency(PARAMS).compute(ctx)
    assert policy.params["exits_taken"] == ([8, 0, 0] if not stage2_runs else [0, 0, 8])
    ctx2 = _ctx(method)
    ctx2.exit_policy()  # the predictions it needs run every stage; count only the timing from here
    calls2 = _count_calls(ctx2.model.backbone.stages[2])
    timings = measure(ctx2, PARAMS)
    # stage 2 runs for the full network and exit 2 (batch 1 and the batch), and for the policy only if it reaches it.
    full_and_exit2 = 1 + 2 * (PARAMS.warmup + 8) + 2 * (min(PARAMS.warmup, 1) + PARAMS.batch_repeats)
    policy = (PARAMS.warmup + 8 + 8) if stage2_runs else 0
    assert len(calls2) == full_and_exit2 + policy
    assert timings["policy"]["thresholds"] == thresholds


def test_records_carry_every_exit_and_the_setup() -> None:
    method = EGT(EGTParams(thresholds=[0.0, 0.0]), CTX)
    ctx = _ctx(method)
    results = Latency(PARAMS).compute(ctx)
    assert [r.exit for r in results] == [None, 0, 1, 2]
    for r in results:
        assert r.value > 0 and r.params["p95_ms"] >= r.value * 0.999
        assert r.params["threads"] == torch.get_num_threads() and r.params["torch"] == torch.__version__
        assert r.params["batch_size"] == 12
        assert r.params["memory_format"] == "contiguous"
    nhwc = _ctx(method)  # the measurement is memoised per context
    nhwc.model.to(memory_format=torch.channels_last)
    assert Latency(PARAMS).compute(nhwc)[0].params["memory_format"] == "channels_last"
    (speedup,) = LatencySpeedup(PARAMS).compute(ctx)
    assert speedup.value == pytest.approx(speedup.params["full_p50_ms"] / speedup.params["policy_expected_ms"])
    assert speedup.params["full_p50_ms"] == results[0].value


def test_exit_weighted_median_by_hand() -> None:
    # Exit 0: 1, 1, 100 (one delayed call) -> median 1; exit 1: 4, 6 -> median 5.
    times, exits = [1.0, 4.0, 1.0, 100.0, 6.0], [0, 1, 0, 0, 1]
    assert exit_weighted_median(times, exits) == pytest.approx((3 * 1 + 2 * 5) / 5)
    assert exit_weighted_median([3.0, 1.0, 2.0], [2, 2, 2]) == 2.0  # one exit: the median


def test_a_model_without_exits_has_speedup_exactly_one() -> None:
    ctx = _ctx(Baseline(NoParams(), CTX))
    (speedup,) = LatencySpeedup(PARAMS).compute(ctx)
    assert speedup.value == 1.0
    assert [r.exit for r in Latency(PARAMS).compute(ctx)] == [None]


def test_calibrated_policy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    method = EGT(EGTParams(), CTX)
    ctx = _ctx(method)
    monkeypatch.setattr(EvalContext, "exit_policy", lambda self: ExitPolicy([0.0, 0.0], "holdout", 0.5))
    (policy,) = PolicyLatency(PARAMS).compute(ctx)
    assert policy.params["exits_taken"] == [8, 0, 0]
