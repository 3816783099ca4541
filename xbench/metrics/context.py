"""Evaluation: one pass of the model over the test split, shared by every metric."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xbench.data.base import ImageSplit
from xbench.explain.base import METHOD_DEFAULT, Explainer, MethodDefault
from xbench.methods.base import Method
from xbench.models.exits import ExitPolicy, calibrate_thresholds
from xbench.models.maps import normalise
from xbench.models.output import LogitsOnly, OutputField

T = TypeVar("T")
#: ``store(name, compute)``: a persistent cache of explanation maps (the engine's disk cache);
#: ``compute`` returns None when the explainer does not apply, and the store remembers that too.
MapStore = Callable[[str, Callable[[], Tensor | None]], Tensor | None]


@dataclass
class Predictions:
    """Logits of the final exit (and of every exit, final last) and the labels, on CPU.

    ``fields``: the method's :class:`~xbench.models.output.OutputField` values over the whole split
    (read with :meth:`get`), kept so that metrics reading them need no second pass.
    """

    logits: Tensor
    labels: Tensor
    exit_logits: list[Tensor] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: OutputField[T]) -> T | None:
        """The merged value of ``key`` over the split; None when the model does not produce it."""
        value: T | None = self.fields.get(key.name)
        return value


@torch.no_grad()
def predict(
    model: nn.Module,
    data: ImageSplit,
    device: torch.device,
    batch_size: int,
    desc: str = "eval",
    progress: bool = True,
    fields: Sequence[OutputField[Any]] = (),
) -> Predictions:
    """Run ``model`` in eval mode over ``data`` in batches, keeping ``fields`` of each output."""
    model.to(device).eval()
    logits, exits = [], []
    parts: dict[str, list[Any]] = {f.name: [] for f in fields}
    starts = range(0, len(data), batch_size)
    for s in tqdm(starts, desc=desc, leave=False, disable=not progress, unit="batch", dynamic_ncols=True):
        out = model(data.images[s : s + batch_size].to(device, non_blocking=True))
        logits.append(out.logits.float().cpu())
        if out.exit_logits:
            exits.append([e.float().cpu() for e in out.exit_logits])
        for f in fields:
            value = f.read(out)
            if value is not None:
                parts[f.name].append(value)
    return Predictions(
        torch.cat(logits),
        data.labels.clone(),
        [torch.cat(per_exit) for per_exit in zip(*exits, strict=True)] if exits else [],
        {f.name: f.merge(parts[f.name]) for f in fields if parts[f.name]},
    )


@dataclass
class EvalContext:
    """Everything a metric may use; expensive shared results are computed once.

    Attributes:
        model: the trained model, in eval mode on ``device``.
        method: the method instance that built it.
        data: the (possibly limited) test split.
        device: where to compute.
        batch_size: evaluation batch size from the suite.
        desc: a label for progress bars.
        progress: whether to show progress bars.
        train, holdout: training and held-out splits (exit calibration).
        explainers: the suite's explainers by row label; ``explainer`` is the one the
            current explanation metric is computed for (see :meth:`with_explainer`).
        explain_limit: explanation metrics use this many test images (a seeded subset).
        seed: the cell's seed (random explainer).
        store: persistent cache for explanation maps, or None to keep them in memory only.
    """

    model: nn.Module
    method: Method
    data: ImageSplit
    device: torch.device
    batch_size: int
    desc: str = "eval"
    progress: bool = True
    train: ImageSplit | None = None
    holdout: ImageSplit | None = None
    explainers: dict[str, Explainer] = field(default_factory=dict)
    explainer: str | None = None
    explain_limit: int | None = 1000
    seed: int = 0
    store: MapStore | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    # At most this many training images calibrate exit thresholds when there is no holdout.
    calibration_limit = 5000

    def predictions(self) -> Predictions:
        """The model's outputs on the test split: one forward pass per cell, shared by every metric."""

        def run() -> Predictions:
            desc = f"{self.desc} predict"
            fields = self.method.output_fields
            return predict(self.model, self.data, self.device, self.batch_size, desc, self.progress, fields)

        return self.memo("predictions", run)

    def exit_policy(self) -> ExitPolicy | None:
        """The method's early-exit policy, calibrated once per cell; None without exits.

        Thresholds given in the method's params are used as they are. Otherwise one shared
        threshold is calibrated on the held-out split (``training.holdout``), or, without one,
        on training images, which are over-confident; the source is recorded either way.
        """
        return self.memo("policy", self._exit_policy)

    def _exit_policy(self) -> ExitPolicy | None:
        if not self.predictions().exit_logits:
            return None
        settings = self.method.exit_settings()
        if settings.thresholds is not None:
            return ExitPolicy(list(settings.thresholds), "given")
        drop = float(settings.max_accuracy_drop)
        source, calib = ("holdout", self.holdout) if self.holdout is not None else ("train", self.train)
        if calib is None:
            raise ValueError("exit thresholds need a holdout or training split to calibrate on")
        calib = calib.subset(self.calibration_limit, seed=0)
        pred = predict(self.model, calib, self.device, self.batch_size, f"{self.desc} calibrate", self.progress)
        return ExitPolicy(calibrate_thresholds(pred.exit_logits, pred.labels, drop), source, drop)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per cell; metrics share the result under ``key``."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    # -- explanations -------------------------------------------------------------------
    def with_explainer(self, name: str) -> EvalContext:
        """This context, sharing every computed result, with ``name`` as the current explainer."""
        if name not in self.explainers:
            raise KeyError(f"unknown explainer {name!r}; the suite lists {sorted(self.explainers)}")
        return dataclasses.replace(self, explainer=name)

    def explain_index(self) -> Tensor:
        """Positions in ``data`` of the images explanation metrics use (sorted, seeded, fixed per suite)."""

        def pick() -> Tensor:
            n = len(self.data)
            if self.explain_limit is None or self.explain_limit >= n:
                return torch.arange(n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
            return perm[: self.explain_limit].sort().values

        return self.memo("explain_index", pick)

    def explain_data(self) -> ImageSplit:
        """The test images (with labels and masks) that explanation metrics use."""
        return self.memo("explain_data", lambda: self.data.take(self.explain_index()))

    def explain_targets(self) -> Tensor:
        """The class each map explains: the model's prediction (as TAME's and AD/IC's protocols do)."""
        return self.predictions().logits[self.explain_index()].argmax(dim=1)

    def explanations(self, explainer: str | None = None) -> Tensor | None:
        """(N, H, W) maps in [0, 1] on CPU for :meth:`explain_data`; None if the explainer does not apply.

        Computed once per cell and explainer, shared by every metric and kept in ``store``.
        """
        name = explainer or self.explainer
        if name is None:
            raise ValueError("no explainer selected; use ctx.with_explainer(name)")
        return self.memo(f"explanations:{name}", lambda: self._explanations(name))

    def has(self, key: str) -> bool:
        """Whether :meth:`memo` holds ``key`` for this cell (e.g. ``"policy"`` once calibrated)."""
        return key in self._memo

    def has_explanations(self, name: str) -> bool:
        """Whether the maps of explainer ``name`` were computed for this cell (by some metric)."""
        return f"explanations:{name}" in self._memo

    def _explanations(self, name: str) -> Tensor | None:
        explainer = self.explainers[name]
        data = self.explain_data()

        def compute() -> Tensor | None:
            targets = self.explain_targets()  # only here: maps from the store need no forward pass
            maps = []
            starts = range(0, len(data), self.batch_size)
            for s in tqdm(
                starts, desc=f"{self.desc} explain {name}", leave=False, disable=not self.progress, unit="batch"
            ):
                x = data.images[s : s + self.batch_size].to(self.device)
                t = targets[s : s + self.batch_size].to(self.device)
                m = explainer.explain(self.method, self.model, x, t, self.seed * 1_000_003 + s)
                if m is None:
                    return None  # the explainer does not apply to this model (no native maps)
                if m.shape != (x.shape[0], *x.shape[-2:]):
                    raise ValueError(f"explainer {name!r} returned maps of shape {tuple(m.shape)} for {tuple(x.shape)}")
                maps.append(normalise(m.detach()).cpu())
            return torch.cat(maps)

        return self.store(name, compute) if self.store is not None else compute()

    def logits_model(self) -> nn.Module:
        """The model as a plain ``x -> logits`` module (for Quantus, captum and FLOP counters)."""
        return self.memo("logits_model", lambda: LogitsOnly(self.model).eval())

    def example_input(self, batch: int = 1) -> Tensor:
        """A batch of real test images on the device (for FLOP counting and timing)."""
        return self.data.images[:batch].to(self.device)


def explained(ctx: EvalContext) -> EvalContext:
    """``ctx`` itself when it selects an explainer, else ``ctx`` explaining with the method's default.

    The engine always selects one (it computes explanation metrics once per suite explainer);
    a context built by hand without explainers scores the method's native maps, else Grad-CAM
    (:func:`xbench.explain.base.default_explanation`). The fallback's maps are memoised with the
    cell's other results but never written to ``ctx.store``, which knows only the suite's explainers.
    """
    if ctx.explainer is not None:
        return ctx
    explainers = {**ctx.explainers, METHOD_DEFAULT: MethodDefault()}
    return dataclasses.replace(ctx, explainers=explainers, explainer=METHOD_DEFAULT, store=None)
