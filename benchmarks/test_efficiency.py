"""Efficiency goals, each measured against a reference in the same run (``python -m pytest benchmarks``).

1. Early-exit overhead: at batch 1 on the CPU, EGT's measured latency speedup under its exit
   policy is at least 0.85× its MAC speedup on the same images (the exit checks and the Python
   control flow must not eat the saving).
2. Harness overhead: xbench's training loop reaches at least 90% of the images per second of a
   bare PyTorch loop on the same model, data and batch size.
3. Explanation cost: maps per second on the same backbone and batch for TAME (one forward pass),
   Grad-CAM (forward + backward to the tapped layer) and captum's Occlusion; TAME at least 1.2×
   Grad-CAM's throughput and 10× Occlusion's.

Sizes follow the quick suite's accuracy dataset: ResNet-8 (width 16, stride-2 stem) on 28×28 grey
images, 10 classes. Models are untrained: costs do not depend on weights, and the exit policy of
(1) uses thresholds that send a known share of images out early.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from xbench.data.base import ImageSplit
from xbench.engine.train import train
from xbench.methods.base import MethodContext
from xbench.metrics.context import EvalContext
from xbench.metrics.exits import exit_costs
from xbench.metrics.latency import LatencyParams, measure
from xbench.models.exits import ExitPolicy, exit_confidences, exit_indices
from xbench.registry import METHODS
from xbench.suite import TrainingConfig

SIZE, CLASSES = 28, 10
CTX = MethodContext(
    CLASSES, 1, (SIZE, SIZE), (0.5,), (0.25,), "resnet_cifar", {"depth": 8, "width": 16, "stem_stride": 2}
)
CPU = torch.device("cpu")


def _method(name: str, **params: object):  # type: ignore[no-untyped-def]
    cls = METHODS.get(name)
    return cls(cls.Params.model_validate(params), CTX)


def _data(n: int, seed: int = 0) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.rand(n, 1, SIZE, SIZE, generator=g), torch.arange(n) % CLASSES, None, list("abcdefghij"))


def _best_of(fn: Callable[[], object], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_early_exit_overhead(benchmark: pytest.FixtureRequest) -> None:
    torch.manual_seed(0)
    method = _method("egt")
    model = method.build().eval()
    data = _data(300)
    with torch.no_grad():
        conf = exit_confidences(model(data.images).exit_logits)
    # One shared threshold at the median confidence of the first exit: about half leave there.
    tau = float(conf[0].median())
    policy = ExitPolicy([tau, tau], "given")
    ctx = EvalContext(model, method, data, CPU, 100, progress=False)
    ctx.memo("policy", lambda: policy)
    idx = exit_indices(conf, policy.thresholds)
    costs, full = exit_costs(model, data.images[:1])
    share = idx.bincount(minlength=len(costs)).double() / len(idx)
    flops_speedup = full / float(sum(float(s) * c for s, c in zip(share, costs, strict=True)))
    params = LatencyParams(repeats=300, batch_repeats=2, warmup=20)
    timings = benchmark.pedantic(lambda: measure(ctx, params), rounds=1, iterations=1)  # type: ignore[attr-defined]
    latency_speedup = timings["full"]["p50_ms"] / timings["policy"]["expected_ms"]  # as latency_speedup reports it
    ratio = latency_speedup / flops_speedup
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            "flops_speedup": flops_speedup,
            "latency_speedup": latency_speedup,
            "latency_over_flops_speedup": ratio,
            "exit_shares": share.tolist(),
            "full_ms": timings["full"]["p50_ms"],
            "policy_ms": timings["policy"]["expected_ms"],
            "threads": torch.get_num_threads(),
        }
    )
    assert ratio >= 0.85, (
        f"latency speedup {latency_speedup:.2f}× is {ratio:.2f} of the MAC speedup {flops_speedup:.2f}×"
    )


def test_harness_overhead(benchmark: pytest.FixtureRequest) -> None:
    data = _data(2048)
    cfg = TrainingConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, schedule="constant")
    method = _method("baseline")

    def xbench_loop() -> None:
        torch.manual_seed(0)
        train(method, method.build(), data, cfg, CPU, seed=0, progress=False)

    def bare_loop() -> None:
        torch.manual_seed(0)
        model = method.build().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        perm = torch.randperm(len(data))
        for i in range(len(data) // 128):
            idx = perm[i * 128 : (i + 1) * 128]
            loss = F.cross_entropy(model(data.images[idx]).logits, data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    bare = _best_of(bare_loop)
    ours = benchmark.pedantic(lambda: _best_of(xbench_loop), rounds=1, iterations=1)  # type: ignore[attr-defined]
    ratio = bare / ours  # images per second of xbench / of the bare loop
    benchmark.extra_info.update({"bare_s": bare, "xbench_s": ours, "throughput_ratio": ratio})  # type: ignore[attr-defined]
    assert ratio >= 0.9, f"xbench's loop reaches {ratio:.2f} of a bare loop's images per second"


def test_explanation_cost(benchmark: pytest.FixtureRequest) -> None:
    from captum.attr import Occlusion

    from xbench.explain.gradcam import grad_cam

    torch.manual_seed(0)
    baseline = _method("baseline")
    base_model = baseline.build().eval()
    tame = _method("tame")
    tame_model = tame.build()
    tame.load_required(tame_model, base_model.state_dict())
    tame_model.eval()
    x = _data(64).images
    target = torch.zeros(64, dtype=torch.long)

    def occlusion() -> torch.Tensor:
        occ = Occlusion(lambda inp: base_model(inp).logits)
        return occ.attribute(x, target=target, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4))

    seconds = {
        "gradcam": _best_of(lambda: grad_cam(base_model, x, target)),
        "occlusion": _best_of(occlusion, rounds=1),
    }
    seconds["tame"] = benchmark.pedantic(  # type: ignore[attr-defined]
        lambda: _best_of(lambda: tame.native_maps(tame_model, x, target)), rounds=1, iterations=1
    )
    rate = {k: 64 / v for k, v in seconds.items()}
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            "maps_per_s": rate,
            "tame_over_gradcam": rate["tame"] / rate["gradcam"],
            "tame_over_occlusion": rate["tame"] / rate["occlusion"],
        }
    )
    assert rate["tame"] >= 1.2 * rate["gradcam"], rate
    assert rate["tame"] >= 10 * rate["occlusion"], rate
