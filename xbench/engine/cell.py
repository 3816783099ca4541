"""One cell, one function: train (or load) a (dataset, method, seed) and measure it.

:func:`run_cell` takes the cell, its data and the process's :class:`CellServices` and
returns a :class:`CellOutcome`; everything the cell accumulates (where its time went, the
models it exports, the exit policy it calibrated) lives in that call and comes back in
the outcome, so a cell runs the same in the driver, in a worker process or on a Ray node,
and can be tested without a suite run. A cell fails on its own: its error and traceback go
into its records. Trained models, maps and metric values go to the cache as they are
computed, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from xbench.engine.cache import Cache
from xbench.engine.checkpoints import CachedEpochs
from xbench.engine.keys import explanations_key, metric_key, model_key, reference_key
from xbench.engine.plan import CellData, CellSpec, Plan
from xbench.engine.recording import Provenance, cell_identity, error_text, failed_records, make_record
from xbench.engine.reference import ReferenceModels
from xbench.engine.train import train
from xbench.errors import CheckpointError
from xbench.methods.base import Method
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.models.exits import ExitPolicy
from xbench.report.records import Record
from xbench.suite import PluginSpec

log = logging.getLogger(__name__)

Exports = list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]


@dataclass
class CellServices:
    """What running a cell needs besides the cell and its data; one per process.

    Attributes:
        plan: the suite's cells and settings.
        cache: trained models, maps and metric values.
        device: where to train and measure.
        provenance: what every record says about where it was computed.
        reference: load every cell's weights from this reference folder instead of training.
        progress: show progress bars.
        fail_fast: a failing metric raises instead of failing its own records.
        timings: measure timing metrics (a parallel run's workers leave them to the driver).
        export: return the trained models' weights (``--export-reference``).
        saliency_images: explained images per dataset kept for the report's grid.
        cached_only: compute nothing: raise :class:`NotCached` at the first model, set of maps or
            metric value the cache lacks (the driver's probe of a re-run's cells, see
            :func:`cached_outcome`).
    """

    plan: Plan
    cache: Cache
    device: torch.device
    provenance: Provenance
    reference: ReferenceModels | None = None
    progress: bool = True
    fail_fast: bool = False
    timings: bool = True
    export: bool = False
    saliency_images: int = 8
    cached_only: bool = False


class NotCached(Exception):
    """A cache-only run of a cell (``CellServices.cached_only``) needs something the cache lacks."""


@dataclass
class CellOutcome:
    """What a cell sends back to the driver (it pickles: records, small arrays, numbers)."""

    index: int
    records: list[Record]
    note: str
    failed: bool = False
    error: str | None = None  # "Type: message" of a cell that failed as a whole
    wall_s: float = 0.0
    stages: dict[str, Any] = field(default_factory=dict)  # seconds: train, explain, per metric
    saliency: dict[str, Any] | None = None
    exports: Exports = field(default_factory=list)
    worker: str = ""  # host:pid (and Ray node) that ran the cell
    policy: ExitPolicy | None = None  # the exit policy the cell's metrics calibrated; the driver's timing run reuses it
    exception: BaseException | None = field(default=None, repr=False)  # serial runs only (not shipped)


@dataclass
class CellState:
    """What one run of a cell accumulates; created by :func:`run_cell`, returned in its outcome."""

    stages: dict[str, Any] = field(
        default_factory=lambda: {"train": 0.0, "explain": defaultdict(float), "metrics": defaultdict(float)}
    )
    exports: Exports = field(default_factory=list)
    uses_masks: bool = False  # the cell's training used ground-truth masks
    explainer_errors: dict[str, Exception] = field(default_factory=dict)  # explainers whose maps failed


@dataclass
class TrainedModel:
    method: Method
    model: torch.nn.Module  # in eval mode on the device
    key: str
    note: str  # "trained 12.3s", "cached", "reference"


def run_cell(
    cell: CellSpec,
    data: CellData,
    services: CellServices,
    index: int = 0,
    only_timings: bool = False,
    policy: ExitPolicy | None = None,
) -> CellOutcome:
    """Train or load ``cell``'s model and measure every metric; whatever goes wrong ends up in its records.

    Args:
        index: the cell's position in the plan (carried by the outcome).
        only_timings: measure the timing metrics only (the driver's timing phase).
        policy: an exit policy the cell already calibrated (in a worker), reused instead of calibrating.
    """
    start = time.perf_counter()
    state = CellState()
    try:
        records, note, saliency, calibrated = _measure_cell(cell, data, services, state, only_timings, policy)
        outcome = CellOutcome(index, records, note, any(r.status == "failed" for r in records), saliency=saliency)
        outcome.policy = calibrated
    except NotCached:
        raise
    except Exception as err:  # each cell fails on its own; a bug in a method must not sink the sweep
        log.debug("cell %s failed", cell.id, exc_info=True)
        outcome = failed_outcome(cell, index, err, services, data.source, state.uses_masks, only_timings)
    outcome.wall_s = time.perf_counter() - start
    stages = state.stages
    outcome.stages = {**stages, "explain": dict(stages["explain"]), "metrics": dict(stages["metrics"])}
    outcome.exports = state.exports
    outcome.worker = worker_name()
    return outcome


def cached_outcome(cell: CellSpec, data: CellData, services: CellServices, index: int) -> CellOutcome | None:
    """The cell's outcome if the cache holds everything it needs (nothing is trained or computed), else None.

    ``services`` must say ``cached_only``. A failing cell is not served from here: its records
    are recomputed by the normal run, which reports the failure.
    """
    assert services.cached_only
    try:
        outcome = run_cell(cell, data, services, index)
    except NotCached as missing:
        log.debug("cell %s: not all cached (%s)", cell.id, missing)
        return None
    return None if outcome.failed else outcome


def failed_outcome(
    cell: CellSpec,
    index: int,
    err: BaseException,
    services: CellServices,
    data_source: str | None = None,
    uses_masks: bool = False,
    only_timings: bool = False,
) -> CellOutcome:
    """The outcome of a cell that failed as a whole: one failed record per metric."""
    line = f"{type(err).__name__}: {err}"
    identity = cell_identity(services.plan, cell, data_source, uses_masks)
    records = failed_records(services.plan, services.provenance, cell, identity, err, only_timings)
    return CellOutcome(index, records, f"FAILED: {line}", True, line, exception=err)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _measure_cell(
    cell: CellSpec,
    data: CellData,
    services: CellServices,
    state: CellState,
    only_timings: bool,
    policy: ExitPolicy | None,
) -> tuple[list[Record], str, dict[str, Any] | None, ExitPolicy | None]:
    """``(records, note, saliency sample, calibrated policy)``; a failing metric fails its own records only."""
    plan = services.plan
    trained = trained_model(cell, data, services, state)
    evaluation = plan.suite.evaluation
    ectx = EvalContext(
        trained.model, trained.method, data.test, services.device, evaluation.batch_size,
        desc=cell.id, progress=services.progress, train=data.train, holdout=data.holdout,
        explainers=plan.explainers, explain_limit=evaluation.explain_limit,
        seed=cell.seed, store=map_store(cell, trained.key, services, state),
    )  # fmt: skip
    if policy is not None:
        ectx.memo("policy", lambda: policy)
    identity = cell_identity(plan, cell, data.source, state.uses_masks)
    records: list[Record] = []
    for spec, metric in plan.metrics:
        if (only_timings and not metric.measures_time) or (metric.measures_time and not services.timings):
            continue
        try:
            records.extend(measure(cell, trained.key, spec, metric, ectx, services, state, identity))
        except NotCached:
            raise
        except Exception as err:  # one broken metric fails its own column, not the cell's other numbers
            if services.fail_fast:
                raise
            log.debug("cell %s: metric %s failed", cell.id, spec.display, exc_info=True)
            provenance = services.provenance
            records.append(make_record(plan, provenance, cell, identity, spec, metric, None, None, error_text(err)))
    saliency = cell_saliency(cell, ectx, services)
    calibrated = ectx.exit_policy() if ectx.has("policy") else None  # None also for models without exits
    note = trained.note
    failed = [r.metric + ("" if r.explainer is None else f" ({r.explainer})") for r in records if r.status == "failed"]
    if failed:
        note += f"; FAILED metrics: {', '.join(dict.fromkeys(failed))}"
    return records, note, saliency, calibrated


# -- the model -------------------------------------------------------------------------
def build_model(method: Method, channels_last: bool) -> torch.nn.Module:
    """``method.build()`` in the suite's weight layout (``resources.channels_last``).

    Loading a state dict and training keep the parameters' layout (``copy_``, ``.to(device)``).
    """
    model = method.build()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def trained_model(
    cell: CellSpec, data: CellData, services: CellServices, state: CellState, required_by: CellSpec | None = None
) -> TrainedModel:
    """The cell's model in eval mode on the device: loaded from the reference or the cache, or trained.

    A method that ``requires`` another cell (TAME: the baseline) gets that cell's model
    first, trained or loaded the same way (``required_by``: the cell it is loaded for).
    ``state`` collects the training time, the exported weights and whether the training
    of the cell itself used masks.
    """
    plan, cache, reference = services.plan, services.cache, services.reference
    train_split = data.train
    method = plan.method_for(cell, data)
    uses_masks = method.uses_masks(train_split)
    if required_by is None:
        state.uses_masks = uses_masks
    torch.manual_seed(cell.seed)
    model = build_model(method, plan.suite.resources.channels_last)
    key = model_key(plan, cell, services.provenance.versions["torch"])
    if reference is not None:
        key = reference_key(key, reference.sha256(cell.id))
    saved = reference.load(cell.id) if reference is not None else cache.load_model(key)
    if saved is not None:
        try:
            model.load_state_dict(saved)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{cell.id}: the reference weights do not fit the model: {first}") from err
        note = "reference" if reference is not None else "cached"
    elif services.cached_only:
        raise NotCached(f"{cell.id}: model")
    else:
        required = plan.required_cell(cell)
        if required is not None:
            base = trained_model(required, data, services, state, required_by=cell)
            method.load_required(model, {k: v.detach().cpu() for k, v in base.model.state_dict().items()})
            log.info("%s: builds on %s (%s)", cell.id, required.id, base.note)
        plan.load_checkpoint(cell, model)
        epochs = CachedEpochs(cache, key, cell.id)
        stats = train(
            method, model, train_split, plan.training(cell), services.device, cell.seed,
            desc=cell.id, progress=services.progress, checkpoint=epochs,
        )  # fmt: skip
        cache.save_model(key, model.state_dict(), {"cell": cell.id, "train": stats.__dict__})
        epochs.discard()
        state.stages["train"] += stats.time_s
        note = f"trained {stats.time_s:.1f}s"
        if stats.resumed_from:
            note += f", resumed after epoch {stats.resumed_from}"
    model.to(services.device).eval()
    if services.export:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        state.exports.append((cell.id, weights, cell_identity(plan, cell, data.source, uses_masks)[0]))
    return TrainedModel(method, model, key, note)


# -- measuring -------------------------------------------------------------------------
def measure(
    cell: CellSpec,
    key: str,
    spec: PluginSpec,
    metric: Metric,
    ectx: EvalContext,
    services: CellServices,
    state: CellState,
    identity: tuple[dict[str, Any], str],
) -> list[Record]:
    """The records of one metric of the cell: once, or once per explainer the suite scores for it."""
    plan = services.plan
    if metric.requires_masks and ectx.data.masks is None:
        log.info("%s: %s needs masks; %s has none, skipped", cell.id, spec.display, cell.dataset.display)
        return []
    if not metric.uses_explanations:
        return _measure(cell, key, spec, metric, ectx, services, state, identity, None)
    if not plan.explained_on(cell):
        return []
    records = []
    for name in plan.explainers:
        if not plan.explains(name, cell):
            continue
        ctx = ectx.with_explainer(name)
        try:
            if name in state.explainer_errors:
                raise state.explainer_errors[name]
            try:
                maps = ctx.explanations()
            except NotCached:
                raise
            except Exception as err:  # remembered: the cell's other metrics need not compute the maps again
                state.explainer_errors[name] = err
                raise
            if maps is None:
                log.info("%s: explainer %s does not apply to %s, skipped", cell.id, name, cell.method.display)
                continue
            records.extend(_measure(cell, key, spec, metric, ctx, services, state, identity, name))
        except NotCached:
            raise
        except Exception as err:  # an explainer that cannot run on this model fails its own values only
            if services.fail_fast:
                raise
            log.debug("%s: explainer %s, metric %s failed", cell.id, name, spec.display, exc_info=True)
            text = error_text(err)
            records.append(
                make_record(plan, services.provenance, cell, identity, spec, metric, None, None, text, explainer=name)
            )
    return records


def _measure(
    cell: CellSpec,
    key: str,
    spec: PluginSpec,
    metric: Metric,
    ectx: EvalContext,
    services: CellServices,
    state: CellState,
    identity: tuple[dict[str, Any], str],
    explainer: str | None,
) -> list[Record]:
    """One metric's values: from the cache, or computed (and cached) with the time it took."""
    plan, cache = services.plan, services.cache
    entry = metric_key(plan, key, cell, spec, metric, services.device.type, explainer)
    cached = cache.load_json("metrics", entry)
    if cached is not None:
        results = [MetricResult(**r) for r in cached["results"]]
        elapsed = float(cached["time_s"])
    elif services.cached_only:
        raise NotCached(f"{cell.id}: {spec.display}")
    else:
        explain = state.stages["explain"]
        explained = sum(explain.values())
        start = time.perf_counter()
        results = metric.compute(ectx)
        # The explanation maps a metric is the first to ask for are the explain stage's, not its own.
        elapsed = time.perf_counter() - start - (sum(explain.values()) - explained)
        state.stages["metrics"][spec.display] += elapsed
        payload = {"results": [r.__dict__ for r in results], "time_s": elapsed}
        cache.save_json("metrics", entry, payload, {"cell": cell.id, "metric": spec.display})
    provenance = services.provenance
    return [
        make_record(plan, provenance, cell, identity, spec, metric, r, elapsed, explainer=explainer) for r in results
    ]


def map_store(
    cell: CellSpec, key: str, services: CellServices, state: CellState
) -> Callable[[str, Callable[[], torch.Tensor | None]], torch.Tensor | None]:
    """A persistent store of a cell's explanation maps, keyed by model, explainer and images."""
    cache = services.cache

    def store(name: str, compute: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        entry = explanations_key(services.plan, key, cell, name, services.device.type)
        cached = cache.load_model(entry, kind="explanations")
        if cached is not None and isinstance(cached.get("maps"), torch.Tensor):
            return cached["maps"]  # type: ignore[no-any-return]
        if cached is not None and "absent" in cached:
            return None
        if services.cached_only:
            raise NotCached(f"{cell.id}: {name} maps")
        start = time.perf_counter()
        maps = compute()
        state.stages["explain"][name] += time.perf_counter() - start
        payload = {"maps": maps} if maps is not None else {"absent": torch.ones(())}
        cache.save_model(entry, payload, {"cell": cell.id, "explainer": name}, kind="explanations")
        return maps

    return store


def cell_saliency(cell: CellSpec, ectx: EvalContext, services: CellServices) -> dict[str, Any] | None:
    """The first explained images and their maps from every explainer the cell computed (first seed only)."""
    n, plan = services.saliency_images, services.plan
    done = [name for name in plan.explainers if ectx.has_explanations(name)]
    if not done or cell.seed != plan.suite.seeds[0]:
        return None
    data = ectx.explain_data()
    maps = {}
    for name in done:
        m = ectx.explanations(name)
        if m is not None:
            maps[(cell.method.display, name)] = m[:n].numpy().clip(0, 1)
    return {
        "images": data.images[:n].numpy(),
        "labels": data.labels[:n].numpy(),
        "masks": None if data.masks is None else data.masks[:n].numpy(),
        "maps": maps,
    }
