"""bf16 against fp32 training (``training.precision``): throughput and final accuracy, as ratios in one run.

The smoke suite's baseline cell as ``xbench run suites/smoke.yaml`` trains it: its dataset
(synthetic_shapes, 1200 training images after the holdout, 300 test images), backbone (resnet_cifar
depth 8, width 8), training settings (6 epochs, batch 32, SGD, cosine) and weight layout
(``resources.channels_last``), read from ``suites/smoke.yaml``. Each round trains both precisions
from the same initial weights, the order alternating by round; throughput is the loop's images per
second (:class:`~xbench.engine.train.TrainStats`, median over rounds), accuracy the fp32 top-1 of the
trained model on the test split. The goal is on accuracy only: bf16 within 5 points of fp32. Its speed
depends on the hardware (CPUs without bf16 units emulate it; GPUs from Ampere on have them), so the
ratio is reported, not required.

Run: ``python -m pytest benchmarks/test_precision.py -s -q -p no:cacheprovider`` (about a minute on
2 CPU cores). ``XBENCH_BENCH_DEVICE`` (default: cuda if available, else cpu) picks the device, the same
benchmark runs on CUDA unchanged; ``XBENCH_BENCH_ROUNDS`` (2) sets the rounds.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import torch

from xbench.engine.cell import build_model
from xbench.engine.plan import CellData, CellSpec, Plan
from xbench.engine.train import train
from xbench.suite import load_suite

SMOKE = Path(__file__).resolve().parents[1] / "suites" / "smoke.yaml"
DEVICE = torch.device(os.environ.get("XBENCH_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
ROUNDS = int(os.environ.get("XBENCH_BENCH_ROUNDS", "2"))
PRECISIONS = ("fp32", "bf16")
ACCURACY_GOAL = 0.05  # bf16 top-1 at most this far below fp32's


@torch.no_grad()
def _top1(model: torch.nn.Module, data: CellData, batch_size: int) -> float:
    model.eval()
    test = data.test
    correct = 0
    for i in range(0, len(test), batch_size):
        x = test.images[i : i + batch_size].to(DEVICE)
        correct += int((model(x).logits.argmax(1).cpu() == test.labels[i : i + batch_size]).sum())
    return correct / len(test)


def _train_once(plan: Plan, cell: CellSpec, data: CellData, precision: str) -> tuple[float, float]:
    """(images per second, test top-1) of the cell trained with ``precision``."""
    method = plan.resolve(cell).method_for(data)
    torch.manual_seed(cell.seed)
    model = build_model(method, plan.suite.resources.channels_last)
    cfg = plan.training(cell).model_copy(update={"precision": precision})
    stats = train(method, model, data.train, cfg, DEVICE, cell.seed, desc=f"{precision}", progress=False)
    return stats.images_per_s, _top1(model, data, plan.suite.evaluation.batch_size)


def test_bf16_against_fp32_training() -> None:
    suite = load_suite(SMOKE)
    plan = Plan(suite, str(SMOKE))
    cell = next(c for c in plan.cells() if c.method.name == "baseline")
    data = plan.load_data(cell.dataset)
    speed: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    accuracy: dict[str, float] = {}
    for r in range(ROUNDS):
        for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            images_per_s, top1 = _train_once(plan, cell, data, precision)
            speed[precision].append(images_per_s)
            accuracy.setdefault(precision, top1)  # the same every round on one device and thread count
    fp32, bf16 = (statistics.median(speed[p]) for p in PRECISIONS)
    threads = torch.get_num_threads() if DEVICE.type == "cpu" else "-"
    print(f"\n{cell.id} on {DEVICE} ({threads} threads), {ROUNDS} rounds, {len(data.train)} training images")
    print(f"{'precision':<10}{'images/s':>10}{'top-1':>8}")
    for p in PRECISIONS:
        print(f"{p:<10}{statistics.median(speed[p]):>10.0f}{accuracy[p]:>8.3f}")
    print(f"bf16/fp32: throughput {bf16 / fp32:.2f}x, top-1 {accuracy['bf16'] / max(accuracy['fp32'], 1e-9):.3f}x")
    assert accuracy["bf16"] >= accuracy["fp32"] - ACCURACY_GOAL
