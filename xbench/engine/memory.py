"""Memory a run needs, estimated before any cell starts: a cell that cannot fit is bad input (exit 2).

The suite's schema bounds every count and width on its own (``n_train`` ≤ 10⁷, channels ≤ 4096,
...); values that pass one by one can still not fit together, and would fail only at run time
with an out-of-memory error after other cells have started. So the driver asks here twice:

1. :func:`check_data_memory`, before loading any data: the datasets whose size follows from their
   params (synthetic shapes, Fashion-MNIST and its cluttered version, CIFAR, Pets, ImageNet) must fit
   in host memory as float32 images, with a copy of a training split while a holdout or
   ``training.limit`` subset is split off.
2. :func:`check_cell_memory`, after loading and before the output folder exists: every cell's model
   is built on PyTorch's ``meta`` device (no memory, no arithmetic) and run once on a meta batch,
   and the outputs of its leaf modules are summed. A cell needs

   - the model: parameters and buffers, their gradients and the optimiser's state (SGD with
     momentum: one tensor per parameter; Adam/AdamW: two);
   - activations: the leaf modules' outputs at ``training.batch_size`` (kept for the backward
     pass), or at ``evaluation.batch_size`` (explainers such as Grad-CAM run backward at that
     batch size), whichever is larger;
   - with worker processes (``--jobs N``), its dataset once more: each worker loads its own copy.

   On CPU that is compared with the memory available now (``MemAvailable``, and the cgroup's limit
   when one is set), the datasets already loaded; with ``--jobs N`` the N largest cells together.
   On CUDA the model and activations are compared with the device's free memory
   (``torch.cuda.mem_get_info``). Ray runs cells on other machines and is not checked here.

The estimate is deliberately plain (leaf outputs over-count in-place operations and under-count
functional ones); it exists to refuse what is off by orders of magnitude, and it refuses none of
``suites/*.yaml`` that fits this machine (tame_imagenet holds about 40 GB of ImageNet in memory).
A model the meta device cannot build or run (a backbone that verifies itself on real numbers) is
left out of the model part with a debug log line. Models are built once per distinct config.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from xbench.engine.plan import CellSpec, Plan
from xbench.engine.resolved import CellData
from xbench.errors import ConfigError, XBenchError
from xbench.methods.base import MethodContext
from xbench.registry import METHODS
from xbench.suite import PluginSpec

log = logging.getLogger(__name__)

GIB = 1 << 30
FLOAT32 = 4
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}  # tensors per parameter besides weight and gradient


@dataclass(frozen=True)
class DataShape:
    """A dataset row's splits as held in memory: float32 images, int64 labels, bool masks."""

    train: int
    test: int
    channels: int
    height: int
    width: int
    num_classes: int
    masks: bool

    @property
    def per_image(self) -> int:
        pixels = self.height * self.width
        return self.channels * pixels * FLOAT32 + 8 + (pixels if self.masks else 0)

    @property
    def resident(self) -> int:
        """Bytes while loaded."""
        return (self.train + self.test) * self.per_image

    @property
    def peak(self) -> int:
        """Bytes while loading, when the training split is copied once (a holdout or a subset split off)."""
        return self.resident + self.train * self.per_image


@dataclass(frozen=True)
class ModelCost:
    """A model's bytes: weights (parameters and buffers), parameters alone, and per image the
    activations (every leaf module's output) and the largest single one."""

    weights: int
    parameters: int
    activations_per_image: int | None
    largest_per_image: int | None = None


@dataclass(frozen=True)
class CellNeed:
    """What one cell needs, in bytes, and the key to lower when it is too much."""

    cell: CellSpec
    data: int
    model: int
    activations: int
    batch_key: str
    batch_size: int

    @property
    def compute(self) -> int:
        """The model's and the activations' bytes (on the cell's device)."""
        return self.model + self.activations


# -- available memory ---------------------------------------------------------------------------------
def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` now; None where it cannot be known (MPS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    sizes = [_meminfo_available(), _cgroup_available()]
    known = [s for s in sizes if s is not None]
    if not known:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return min(known)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """The cgroup v2 limit minus what the group uses, when the process runs under a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


# -- data ---------------------------------------------------------------------------------------------
def planned_shape(spec: PluginSpec, params: BaseModel) -> DataShape | None:
    """A built-in dataset's shape from its params alone (before loading); None for the others."""
    p: Any = params
    name = spec.name
    if name == "synthetic_shapes":
        from xbench.data.synthetic import SHAPES

        return DataShape(p.n_train, p.n_test, p.channels, p.image_size, p.image_size, len(SHAPES), True)
    if name == "fashion_mnist":
        return DataShape(60_000, 10_000, 1, 28, 28, 10, False)
    if name == "fashion_mnist_cluttered":
        return DataShape(p.n_train or 60_000, p.n_test or 10_000, 1, p.canvas, p.canvas, 10, True)
    if name in ("cifar10", "cifar100"):
        return DataShape(50_000, 10_000, 3, 32, 32, 10 if name == "cifar10" else 100, False)
    if name == "oxford_iiit_pet":
        cap = p.limit or 10**9
        return DataShape(min(cap, 3_680), min(cap, 3_669), 3, p.image_size, p.image_size, 37, True)
    if name == "imagenet":
        train = 1_281_167 if p.train_per_class is None else 1_000 * p.train_per_class
        return DataShape(min(train, p.train_limit or train), _image_list_length(p.image_list), 3,
                         p.image_size, p.image_size, 1_000, p.masks)  # fmt: skip
    return None


def _image_list_length(path: Path | None) -> int:
    """Images in an ImageNet image list (at most the 50,000 of val); 50,000 without one."""
    if path is None:
        return 50_000
    try:
        with path.expanduser().open("rb") as f:
            return min(50_000, sum(1 for line in f if line.strip()))
    except OSError:
        return 50_000


def loaded_shape(data: CellData) -> DataShape:
    """The shape of splits that are loaded."""
    train, test = data.train, data.test
    n_train = len(train) + (len(data.holdout) if data.holdout is not None else 0)
    height, width = test.image_size
    return DataShape(n_train, len(test), test.in_channels, height, width, train.num_classes, test.masks is not None)


def check_data_memory(plan: Plan, available: Callable[[torch.device], int | None] | None = None) -> None:
    """Refuse (ConfigError, exit 2) datasets that cannot be loaded into host memory together."""
    free = (available or available_memory)(torch.device("cpu"))
    if free is None:
        return
    shapes = []
    for i, spec in enumerate(plan.suite.datasets):
        shape = planned_shape(spec, plan.params["datasets"][spec.display])
        if shape is not None:
            shapes.append((i, spec, shape))
    if not shapes:
        return
    training = plan.suite.training
    copies = bool(training.holdout or training.limit)  # splitting off a holdout or a subset copies the split
    need = sum(s.resident for _, _, s in shapes) + (max(s.peak - s.resident for _, _, s in shapes) if copies else 0)
    if need > free:
        i, spec, big = max(shapes, key=lambda item: item[2].resident)
        raise ConfigError(
            f"{plan.source}: datasets[{i}] ({spec.display}): the data needs about {_gib(need)} of memory as "
            f"float32 ({big.train + big.test:,} images of {big.channels}x{big.height}x{big.width}), "
            f"{_gib(free)} is available; lower datasets[{i}].params (image count or size)"
        )


# -- models -------------------------------------------------------------------------------------------
def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if hasattr(value, "__dict__"):
        return [t for v in vars(value).values() for t in _tensors(v)]
    return []


@functools.lru_cache(maxsize=256)
def model_cost(method: str, params_json: str, ctx_json: str) -> ModelCost | None:
    """The cost of ``method``'s model for a context (all as JSON: the cache key), or None if the meta
    device cannot build it."""
    cls = METHODS.get(method)
    ctx_data = json.loads(ctx_json)
    ctx_data["image_size"] = tuple(ctx_data["image_size"])
    ctx_data["mean"], ctx_data["std"] = tuple(ctx_data["mean"]), tuple(ctx_data["std"])
    ctx = MethodContext(**ctx_data)
    params = cls.Params.model_validate(json.loads(params_json))
    try:
        with torch.device("meta"):
            model = cls(params, ctx).build()
    except Exception as err:  # a zoo backbone checks its cut on real numbers (.item()): build it for real once
        log.debug("memory estimate: %s is built on the CPU (the meta device cannot: %s)", method, err)
        try:
            with torch.device("cpu"):
                model = cls(params, ctx).build().to("meta")
        except Exception as err:  # a plugin's build may need what is not there yet: estimate without it
            log.debug("memory estimate: %s cannot be built here (%s)", method, err)
            return None
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    parameters = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    total, largest = 0, 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total, largest
        given = {id(t) for t in _tensors(inputs)}  # an in-place module (ReLU(inplace=True)) adds no memory
        size = sum(t.numel() * t.element_size() for t in _tensors(output) if id(t) not in given)
        total, largest = total + size, max(largest, size)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(2, ctx.in_channels, *ctx.image_size, device="meta"))
    except Exception as err:
        log.debug("memory estimate: %s does not run on the meta device (%s)", method, err)
        return ModelCost(weights, parameters, None)
    finally:
        for hook in hooks:
            hook.remove()
    return ModelCost(weights, parameters, total // 2, largest // 2)


def _context(plan: Plan, cell: CellSpec, shape: DataShape) -> str:
    """The MethodContext of ``cell`` for data of ``shape``, as JSON (weights left out: they cost no more)."""
    backbone, params = plan.backbone_of(cell.method)
    dumped = params.model_dump(mode="json")
    if dumped.get("weights") is not None:
        dumped["weights"] = None  # the same architecture, without reading or downloading a file
    return json.dumps({
        "num_classes": shape.num_classes, "in_channels": shape.channels, "image_size": [shape.height, shape.width],
        "mean": [0.5] * shape.channels, "std": [0.5] * shape.channels, "backbone": backbone.name,
        "backbone_params": dumped, "seed": 0,
        "required_params": _required_params(plan, cell),
    }, sort_keys=True)  # fmt: skip


def _required_params(plan: Plan, cell: CellSpec) -> dict[str, Any] | None:
    """The params of the method ``cell`` builds on: the suite's first row of it, else its defaults.

    (``Plan.required_cell`` matches backbones by identity, which hashes weights files: not needed
    for an architecture.)
    """
    name = METHODS.get(cell.method.name).required_method(plan.row_params("methods", cell.method))
    if name is None:
        return None
    row = next((m for m in plan.suite.methods if m.name == name), PluginSpec(name=name))
    return plan.dump("methods", row)


def cell_need(plan: Plan, cell: CellSpec, shape: DataShape) -> CellNeed:
    """What ``cell`` needs on data of ``shape`` (see the module docstring)."""
    training, evaluation = plan.training(cell), plan.suite.evaluation
    params_json = json.dumps(plan.dump("methods", cell.method), sort_keys=True)
    cost = model_cost(cell.method.name, params_json, _context(plan, cell, shape))
    if cost is None:
        return CellNeed(cell, shape.resident, 0, 0, "training.batch_size", training.batch_size)
    trains = training.epochs > 0  # epochs: 0 evaluates the model as built or loaded: no gradients, no optimiser
    model = cost.weights + (cost.parameters * (1 + OPTIMIZER_STATES.get(training.optimizer, 2)) if trains else 0)
    per_image = cost.activations_per_image or 0
    # Evaluation runs under no_grad (about two layers' outputs alive at once) unless explainers
    # backpropagate at the evaluation batch size (Grad-CAM): then the whole graph is kept, as in training.
    eval_per_image = per_image if _explains(plan, cell) else 2 * (cost.largest_per_image or 0)
    row = plan.suite.methods.index(cell.method) if cell.method in plan.suite.methods else None
    train_key = f"methods[{row}].training.batch_size" if row is not None and "batch_size" in (
        cell.method.training or {}) else "training.batch_size"  # fmt: skip
    batches = [
        (per_image * min(training.batch_size, shape.train) if trains else 0, train_key, training.batch_size),
        (eval_per_image * min(evaluation.batch_size, shape.test), "evaluation.batch_size", evaluation.batch_size),
    ]
    activations, key, size = max(batches)
    return CellNeed(cell, shape.resident, model, activations, key, size)


def _explains(plan: Plan, cell: CellSpec) -> bool:
    """Whether ``cell`` computes explanation maps (an explanation metric and an explainer row for its method)."""
    if not plan.explained_on(cell) or not any(getattr(m, "uses_explanations", False) for _, m in plan.metrics):
        return False
    return any(row.methods is None or cell.method.display in row.methods for row in plan.suite.explainers)


def check_cell_memory(
    plan: Plan,
    data_of: Callable[[PluginSpec], CellData],
    jobs: int | None = 1,
    device: torch.device | None = None,
    available: Callable[[torch.device], int | None] | None = None,
) -> None:
    """Refuse (ConfigError, exit 2) a suite with a cell that cannot fit on its device, before any cell starts.

    Args:
        plan: the run's plan; its datasets are loaded (``data_of``).
        jobs: cells at a time in worker processes (each loads its dataset again); None: not checked
            here (Ray runs cells on its own nodes).
        device: the cells' device; default: the suite's.
        available: bytes free on a device (tests pass a small one); default :func:`available_memory`.
    """
    if jobs is None:
        return
    if device is None:
        from xbench.engine.provenance import resolve_device

        try:
            device = resolve_device(plan.suite.device)
        except XBenchError:
            return  # reported where the device is first used, as before
    free = (available or available_memory)(device)
    if free is None:
        return
    needs = [cell_need(plan, cell, loaded_shape(data_of(cell.dataset))) for cell in plan.cells()]
    if not needs:
        return
    in_workers = jobs > 1

    def on_device(need: CellNeed) -> int:
        return need.compute + (need.data if in_workers and device.type == "cpu" else 0)

    worst = max(needs, key=on_device)
    together = sum(sorted((on_device(n) for n in needs), reverse=True)[: max(1, jobs)])
    if on_device(worst) > free:
        raise ConfigError(_too_big(plan, worst, on_device(worst), free, device, in_workers))
    if together > free:
        raise ConfigError(
            f"{plan.source}: {min(jobs, len(needs))} cells at a time need about {_gib(together)} of memory, "
            f"{device.type} has {_gib(free)} available; run fewer at a time (--jobs, resources.jobs)"
        )


def _too_big(plan: Plan, need: CellNeed, total: int, free: int, device: torch.device, in_workers: bool) -> str:
    parts = [f"model {_gib(need.model)}", f"activations {_gib(need.activations)} at {need.batch_key} "
             f"{need.batch_size}"]  # fmt: skip
    if in_workers and device.type == "cpu":
        parts.insert(0, f"its data again in a worker {_gib(need.data)}")
    if need.activations >= need.model:
        lower = need.batch_key
    else:
        row = plan.suite.methods.index(need.cell.method) if need.cell.method in plan.suite.methods else None
        lower = f"the model's widths (methods[{row}].params, backbone.params)" if row is not None else "the model"
    return (
        f"{plan.source}: cell {need.cell.id} needs about {_gib(total)} of memory ({', '.join(parts)}), "
        f"{device.type} has {_gib(free)} available; lower {lower}"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / (1 << 20):.0f} MiB"
