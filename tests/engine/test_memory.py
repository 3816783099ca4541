"""The memory estimate (xbench/engine/memory.py): a run whose cells cannot fit is refused before any starts."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from xbench.cli import main
from xbench.data.base import ImageSplit
from xbench.data.synthetic import SyntheticShapes
from xbench.engine import memory
from xbench.engine.plan import Plan
from xbench.engine.resolved import CellData
from xbench.registry import METHODS
from xbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
MIB, GIB = 1 << 20, 1 << 30
TINY: dict[str, Any] = {
    "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 200, "n_test": 100, "image_size": 32}}],
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 64}},
    "methods": ["baseline"],
    "metrics": ["top1"],
    "explainers": [],
    "training": {"epochs": 1, "batch_size": 128},
    "evaluation": {"batch_size": 100},
    "device": "cpu",
}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def meta_data(plan: Plan) -> Any:
    """``data_of`` for :func:`memory.check_cell_memory` without loading: meta tensors of the planned shapes."""

    def data_of(spec: Any) -> CellData:
        shape = memory.planned_shape(spec, plan.params["datasets"][spec.display])
        assert shape is not None

        def split(n: int) -> ImageSplit:
            images = torch.empty(n, shape.channels, shape.height, shape.width, device="meta")
            masks = torch.empty(n, 1, shape.height, shape.width, device="meta") if shape.masks else None
            return ImageSplit(images, torch.empty(n, device="meta"), masks, [str(i) for i in range(shape.num_classes)])

        return CellData(split(shape.train), split(shape.test))

    return data_of


def fixed(free: int) -> Any:
    return lambda device: free


def refused(tmp_path: Path, suite: Path, *extra: str) -> str:
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, stdout, stderr = run_cli(["run", str(suite), "--output", str(out), "--cache-dir", str(cache), *extra])
    lines = stderr.splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"xbench: error: {suite}: "), lines[0]
    assert stdout == "" and not out.exists() and not cache.exists()
    assert not list(tmp_path.glob(".out.partial-*"))
    return lines[0]


def test_a_cell_too_big_for_the_memory_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Individually legal sizes that together do not fit: exit 2, one line naming the cell and the key."""
    monkeypatch.setattr(memory, "available_memory", fixed(200 * MIB))
    line = refused(tmp_path, write(tmp_path / "big.yaml", TINY))
    assert "cell synthetic_shapes/baseline/seed0 needs about" in line and "cpu has 200 MiB available" in line, line
    assert "lower training.batch_size" in line, line


def test_the_same_suite_runs_when_it_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", fixed(4 * GIB))
    suite = write(tmp_path / "fits.yaml", TINY)
    plan = Plan(load_suite(suite), str(suite))
    memory.check_data_memory(plan)
    memory.check_cell_memory(plan, meta_data(plan))  # no error


def test_data_that_cannot_fit_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10^7 images of 512x512 pass the schema's bounds but are 29 TiB as float32: refused before generating any."""

    def refuse(self: Any, split: str) -> Any:
        raise AssertionError("loaded data the machine cannot hold")

    monkeypatch.setattr(SyntheticShapes, "load", refuse)
    params = {"n_train": 10_000_000, "n_test": 1000, "image_size": 512}
    line = refused(tmp_path, write(tmp_path / "data.yaml", {**TINY, "datasets": [{"name": "synthetic_shapes",
                                                                                   "params": params}]}))  # fmt: skip
    assert "datasets[0] (synthetic_shapes): the data needs about" in line and "10,001,000 images" in line, line
    assert "lower datasets[0].params" in line, line


def test_cells_at_a_time_must_fit_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write(tmp_path / "jobs.yaml", {**TINY, "seeds": [0, 1]})
    plan = Plan(load_suite(suite), str(suite))
    one = memory.cell_need(plan, plan.cells()[0], memory.planned_shape(plan.suite.datasets[0], plan.params[
        "datasets"]["synthetic_shapes"]))  # fmt: skip
    free = int(1.5 * (one.compute + one.data))
    memory.check_cell_memory(plan, meta_data(plan), jobs=1, available=fixed(free))
    with pytest.raises(memory.ConfigError, match=r"2 cells at a time need about .* run fewer at a time"):
        memory.check_cell_memory(plan, meta_data(plan), jobs=2, available=fixed(free))
    memory.check_cell_memory(plan, meta_data(plan), jobs=None, available=fixed(1))  # Ray: not checked here


def test_the_model_estimate_counts_parameters_and_activations(tmp_path: Path) -> None:
    """Parameters as the real model has them; activations: the meta run equals a real run's leaf outputs."""
    small = {**TINY, "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 8}}}
    suite = load_suite(write(tmp_path / "tiny.yaml", small))
    plan = Plan(suite, "tiny")
    cell = plan.cells()[0]
    shape = memory.planned_shape(suite.datasets[0], plan.params["datasets"]["synthetic_shapes"])
    assert shape is not None
    context = memory._context(plan, cell, shape)
    cost = memory.model_cost("baseline", "{}", context)
    assert cost is not None and cost.activations_per_image is not None
    method = METHODS.get("baseline")
    ctx = memory.MethodContext(**{**yaml.safe_load(context), "image_size": (32, 32), "mean": (0.5,) * 3,
                                  "std": (0.5,) * 3})  # fmt: skip
    model = method(method.Params(), ctx).build().eval()
    assert cost.parameters == 4 * sum(p.numel() for p in model.parameters())
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: sizes.append(0 if o is i[0] else o.numel() * 4))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert cost.activations_per_image == sum(sizes)


SMALL_SUITES = ["smoke", "quick", "quick_ablations", "claims", "ecr_weights", "explainers"]
# Measured: ResNeXt-29 10x11d keeps 25.9 MB per 32x32 image for a backward pass (estimate 25.7 MB),
# so Grad-CAM at the CIFAR suites' evaluation.batch_size 250 needs about 6.5 GiB (at 1000 it needed 25 GiB,
# more than this 24 GiB machine or a 24 GB GPU has); tame_imagenet holds ~42 GiB of images.
LARGE_SUITES = {"cifar10": 16 * GIB, "cifar100": 16 * GIB, "tame_imagenet": 48 * GIB}


@pytest.mark.parametrize("name", SMALL_SUITES + sorted(LARGE_SUITES))
def test_the_committed_suites_fit_where_they_are_meant_to_run(name: str) -> None:
    """The small suites fit in 4 GiB (this 2-core CI machine has 24); the GPU/ImageNet ones in a large machine.

    Each estimate is cheap: the models are built on the meta device (a zoo backbone, which checks its
    cut on real numbers, once on the CPU), once per distinct config.
    """
    suite = load_suite(ROOT / "suites" / f"{name}.yaml")
    plan = Plan(suite, name)
    free = LARGE_SUITES.get(name, 4 * GIB)
    memory.check_data_memory(plan, available=fixed(free))
    memory.check_cell_memory(plan, meta_data(plan), jobs=1, device=torch.device("cpu"), available=fixed(free))
    if name in LARGE_SUITES:  # and they are refused where they do not fit, in one line
        with pytest.raises(memory.ConfigError, match=f"^{name}: "):
            memory.check_data_memory(plan, available=fixed(free // 8))
            memory.check_cell_memory(plan, meta_data(plan), device=torch.device("cpu"), available=fixed(free // 8))
