"""Harness overhead on torchvision backbones, each measured against a bare PyTorch loop in the same run.

1. Training: xbench's loop (:func:`xbench.engine.train.train`) with ``baseline`` on ``resnet18``
   (``cifar_stem: true``), 32-px RGB images, 10 classes, batch 64, reaches at least 0.95× the images
   per second of a bare loop on the same model class built the same way, the same data tensors and
   the same SGD settings (``F.cross_entropy``, no DataLoader). Both models are built by
   ``method.build()`` (contiguous weights) and ``training`` keeps its defaults (fp32, no compile,
   ``channels_last: false``): the layout is the same on both sides.
2. Evaluation: the cell's one forward pass over the test split (``EvalContext.predictions()``, which
   every metric's top-1 reads) with ``baseline`` on ``resnet50`` (random init, torchvision stem) at
   224 px reaches at least 0.95× the images per second of bare ``torchvision.models.resnet50()`` in
   eval mode under ``torch.inference_mode()``, at the same batch size. Measured with contiguous weights
   and with channels-last weights (xbench: ``engine.cell.build_model`` as ``resources.channels_last``
   does, the input as the split holds it; bare: model and each input batch channels-last); each layout
   is compared with the same layout.

Measurements alternate: each round runs xbench and the bare loop back to back (which goes first
alternates) and the goal is on the median over rounds of the per-round ratio, so load from other
processes (seconds long on a shared machine) hits both sides of a ratio alike. The table also gives
the median throughputs and the ratio of the best rounds. Models are untrained: costs do not depend on weights.

Run: ``python -m pytest benchmarks/test_backbone_speed.py -s -q -p no:cacheprovider`` (about 1 minute on an
idle 2-core machine, several under load; ``XBENCH_BENCH_ROUNDS`` (7), ``XBENCH_BENCH_TRAIN_STEPS`` (2
batches per training run), ``XBENCH_BENCH_EVAL_BATCHES`` (1 batch of 16 per evaluation run) size it).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import smooth

from xbench.data.base import ImageSplit
from xbench.engine.cell import build_model
from xbench.engine.train import train
from xbench.methods.base import MethodContext
from xbench.metrics.context import EvalContext
from xbench.models.zoo import IMAGENET_MEAN, IMAGENET_STD
from xbench.registry import METHODS
from xbench.suite import TrainingConfig

CPU = torch.device("cpu")
ROUNDS = int(os.environ.get("XBENCH_BENCH_ROUNDS", "7"))
GOAL = 0.95
TRAIN_BATCH, TRAIN_SIZE, TRAIN_CLASSES = 64, 32, 10
TRAIN_STEPS = int(os.environ.get("XBENCH_BENCH_TRAIN_STEPS", "2"))
EVAL_BATCH, EVAL_SIZE, EVAL_CLASSES = 16, 224, 1000  # torchvision's resnet50 has 1000 classes: same head
EVAL_BATCHES = int(os.environ.get("XBENCH_BENCH_EVAL_BATCHES", "1"))

_rows: list[tuple[str, str, float, float, float, float]] = []  # goal, layout, img/s xbench, bare, ratio, of best


def _baseline(ctx: MethodContext):  # type: ignore[no-untyped-def]
    cls = METHODS.get("baseline")
    return cls(cls.Params(), ctx)


def _paired(pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]]) -> dict[str, dict[str, float]]:
    """Per pair ``(xbench, bare)``: median seconds of each and the median of the per-round ratios bare/xbench.

    Each round runs every pair back to back, which one goes first alternating by round, and the pairs in an
    order rotating by round; a ratio is taken within a round, so load from other processes (seconds long)
    hits both of its sides alike.
    """
    names = list(pairs)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for r in range(ROUNDS):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for side in (0, 1) if r % 2 == 0 else (1, 0):
                start = time.perf_counter()
                pairs[name][side]()
                times[name][side].append(time.perf_counter() - start)
    return {
        name: {
            "xbench_s": statistics.median(ours),
            "bare_s": statistics.median(bare),
            "ratio": statistics.median(b / o for o, b in zip(ours, bare, strict=True)),
            "ratio_of_best": min(bare) / min(ours),
        }
        for name, (ours, bare) in times.items()
    }


def _table() -> str:
    lines = [
        f"threads={torch.get_num_threads()}  cores={os.cpu_count()}  load average now={os.getloadavg()[0]:.1f}  "
        f"goal: xbench/bare >= {GOAL}",
        f"(median over {ROUNDS} rounds; ratio: median of per-round xbench/bare; best: of the best rounds)",
        f"{'measurement':<30}{'layout':<15}{'xbench img/s':>13}{'bare img/s':>12}{'ratio':>8}{'best':>8}",
    ]
    lines += [f"{g:<30}{lay:<15}{a:>13.2f}{b:>12.2f}{r:>8.3f}{rb:>8.3f}" for g, lay, a, b, r, rb in _rows]
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _print_table():  # type: ignore[no-untyped-def]
    yield
    if _rows:
        print("\n" + _table())


def test_resnet18_training_throughput(benchmark: pytest.FixtureRequest) -> None:
    n = TRAIN_STEPS * TRAIN_BATCH
    data = ImageSplit(
        smooth(n, 3, TRAIN_SIZE, seed=0), torch.arange(n) % TRAIN_CLASSES, None, [str(i) for i in range(10)]
    )
    cfg = TrainingConfig(
        epochs=1, batch_size=TRAIN_BATCH, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="constant"
    )
    ctx = MethodContext(
        TRAIN_CLASSES, 3, (TRAIN_SIZE, TRAIN_SIZE), (0.5,) * 3, (0.25,) * 3, "resnet18", {"cifar_stem": True}
    )
    method = _baseline(ctx)
    torch.manual_seed(0)
    ours_model = method.build()
    torch.manual_seed(0)
    bare_model = method.build()

    def xbench_run() -> None:
        train(method, ours_model, data, cfg, CPU, seed=0, progress=False)

    def bare_run() -> None:
        model = bare_model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for i in range(n // TRAIN_BATCH):
            idx = perm[i * TRAIN_BATCH : (i + 1) * TRAIN_BATCH]
            loss = F.cross_entropy(model(data.images[idx]).logits, data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    # Warm-up: one training step's shapes (oneDNN primitives are cached per shape, shared by both models).
    F.cross_entropy(bare_model.train()(data.images[:TRAIN_BATCH]).logits, data.labels[:TRAIN_BATCH]).backward()
    bare_model.zero_grad(set_to_none=True)
    res = benchmark.pedantic(  # type: ignore[attr-defined]
        lambda: _paired({"train": (xbench_run, bare_run)}), rounds=1, iterations=1
    )["train"]
    ours, bare, ratio = n / res["xbench_s"], n / res["bare_s"], res["ratio"]
    _rows.append(
        (f"train resnet18 cifar b{TRAIN_BATCH} x{TRAIN_STEPS}", "contiguous", ours, bare, ratio, res["ratio_of_best"])
    )
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {"xbench_img_s": ours, "bare_img_s": bare, **res, "threads": torch.get_num_threads()}
    )
    assert ratio >= GOAL, f"xbench's training loop reaches {ratio:.3f} of a bare loop's images per second"


def test_resnet50_eval_throughput(benchmark: pytest.FixtureRequest) -> None:
    n = EVAL_BATCHES * EVAL_BATCH
    data = ImageSplit(
        smooth(n, 3, EVAL_SIZE, seed=0), torch.arange(n) % EVAL_CLASSES, None, [str(i) for i in range(EVAL_CLASSES)]
    )
    ctx = MethodContext(EVAL_CLASSES, 3, (EVAL_SIZE, EVAL_SIZE), IMAGENET_MEAN, IMAGENET_STD, "resnet50", {})
    method = _baseline(ctx)
    ours = {}
    bare = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        ours[channels_last] = build_model(method, channels_last).eval()
        torch.manual_seed(0)
        model = torchvision.models.resnet50().eval()
        bare[channels_last] = model.to(memory_format=torch.channels_last) if channels_last else model

    def xbench_run(channels_last: bool) -> Callable[[], object]:
        model = ours[channels_last]
        # A fresh context per run: predictions() is memoised per cell.
        return lambda: EvalContext(model, method, data, CPU, EVAL_BATCH, progress=False).predictions().logits

    def bare_run(channels_last: bool) -> Callable[[], object]:
        model = bare[channels_last]
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def run() -> torch.Tensor:
            logits = []
            with torch.inference_mode():
                for s in range(0, n, EVAL_BATCH):
                    logits.append(model(data.images[s : s + EVAL_BATCH].contiguous(memory_format=fmt)))
            return torch.cat(logits)

        return run

    layouts = {False: "contiguous", True: "channels_last"}
    pairs = {layout: (xbench_run(cl), bare_run(cl)) for cl, layout in layouts.items()}
    for ours_run, bare_run_ in pairs.values():  # warm-up: one run of each model and layout
        ours_run()
        bare_run_()
    res = benchmark.pedantic(lambda: _paired(pairs), rounds=1, iterations=1)  # type: ignore[attr-defined]
    rate = {}
    ratios = {}
    for layout, r in res.items():
        rate[f"xbench {layout}"], rate[f"bare {layout}"] = n / r["xbench_s"], n / r["bare_s"]
        ratios[layout] = r["ratio"]
        _rows.append((f"eval resnet50 224px b{EVAL_BATCH} x{EVAL_BATCHES}", layout, rate[f"xbench {layout}"],
                      rate[f"bare {layout}"], r["ratio"], r["ratio_of_best"]))  # fmt: skip
    faster = {
        side: max(layouts.values(), key=lambda layout, side=side: rate[f"{side} {layout}"])
        for side in ("xbench", "bare")
    }
    print(
        f"\nchannels_last over contiguous: xbench {rate['xbench channels_last'] / rate['xbench contiguous']:.3f}×, "
        f"bare {rate['bare channels_last'] / rate['bare contiguous']:.3f}× (faster here: xbench {faster['xbench']}, "
        f"bare {faster['bare']})"
    )
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {"img_s": rate, "results": res, "faster_layout": faster, "threads": torch.get_num_threads()}
    )
    assert all(r >= GOAL for r in ratios.values()), f"xbench's evaluation pass over a bare one, per layout: {ratios}"
