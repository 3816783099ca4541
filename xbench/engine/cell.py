"""One cell, one function: train (or load) a (dataset, method, seed) and measure it.

:func:`run_cell` takes the resolved cell (:class:`~xbench.engine.resolved.ResolvedCell`), its
data, the process's :class:`CellServices` and the :class:`~xbench.engine.resolved.Pass` to run,
and returns a :class:`CellOutcome`; everything the cell accumulates (where its time went, the
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
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from xbench.engine.cache import Cache
from xbench.engine.checkpoints import CachedEpochs
from xbench.engine.keys import explanations_key, metric_key, reference_key
from xbench.engine.recording import Provenance, cell_identity, error_text, failed_records, make_record
from xbench.engine.reference import ReferenceModels
from xbench.engine.resolved import MEASURE, PROBE, CellData, Pass, ResolvedCell
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
        cache: trained models, maps and metric values.
        device: where to train and measure.
        provenance: what every record says about where it was computed.
        reference: load every cell's weights from this reference folder instead of training.
        progress: show progress bars.
        fail_fast: a failing metric raises instead of failing its own records.
        export: return the trained models' weights (``--export-reference``).
        saliency_images: explained images per dataset kept for the report's grid.
    """

    cache: Cache
    device: torch.device
    provenance: Provenance
    reference: ReferenceModels | None = None
    progress: bool = True
    fail_fast: bool = False
    export: bool = False
    saliency_images: int = 8


class NotCached(Exception):
    """A probe (:data:`~xbench.engine.resolved.PROBE`) of a cell needs something the cache lacks."""


@dataclass
class CellOutcome:
    """What a cell sends back to the driver (it pickles: records, small arrays, numbers)."""

    index: int | None
    records: list[Record]
    note: str
    failed: bool = False
    error: str | None = None  # "Type: message" of a cell that failed as a whole
    wall_s: float = 0.0
    stages: dict[str, Any] = field(default_factory=dict)  # seconds: train, explain, per metric
    saliency: dict[str, Any] | None = None
    exports: Exports = field(default_factory=list)
    worker: str = ""  # host:pid (and Ray node) that ran the cell
    policy: ExitPolicy | None = None  # the exit policy the measure pass calibrated; the time pass reuses it
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


def run_cell(cell: ResolvedCell, data: CellData, services: CellServices, run: Pass = MEASURE) -> CellOutcome:
    """Run one pass of ``cell`` (see :class:`~xbench.engine.resolved.Pass`); whatever goes wrong ends up in its records.

    A probe raises :class:`NotCached` at the first thing the cache lacks.
    """
    start = time.perf_counter()
    state = CellState()
    try:
        records, note, saliency, calibrated = _measure_cell(cell, data, services, state, run)
        outcome = CellOutcome(cell.index, records, note, any(r.status == "failed" for r in records), saliency=saliency)
        outcome.policy = calibrated
    except NotCached:
        raise
    except Exception as err:  # each cell fails on its own; a bug in a method must not sink the sweep
        log.debug("cell %s failed", cell.id, exc_info=True)
        outcome = failed_outcome(cell, err, services, data.source, state.uses_masks, run)
    outcome.wall_s = time.perf_counter() - start
    stages = state.stages
    outcome.stages = {**stages, "explain": dict(stages["explain"]), "metrics": dict(stages["metrics"])}
    outcome.exports = state.exports
    outcome.worker = worker_name()
    return outcome


def probe(cell: ResolvedCell, data: CellData, services: CellServices) -> CellOutcome | None:
    """The cell's measure-pass outcome if the cache holds everything it needs (nothing is computed), else None.

    A failing cell is not served from here: its records are recomputed by the measure pass,
    which reports the failure.
    """
    try:
        outcome = run_cell(cell, data, replace(services, progress=False), PROBE)
    except NotCached as missing:
        log.debug("cell %s: not all cached (%s)", cell.id, missing)
        return None
    return None if outcome.failed else outcome


def failed_outcome(
    cell: ResolvedCell,
    err: BaseException,
    services: CellServices,
    data_source: str | None = None,
    uses_masks: bool = False,
    run: Pass = MEASURE,
) -> CellOutcome:
    """The outcome of a cell that failed as a whole: one failed record per metric (of the time pass: timing metric)."""
    line = f"{type(err).__name__}: {err}"
    identity = cell_identity(cell, data_source, uses_masks)
    records = failed_records(cell, services.provenance, identity, err, timing_only=run.timing)
    return CellOutcome(cell.index, records, f"FAILED: {line}", True, line, exception=err)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _measure_cell(
    cell: ResolvedCell, data: CellData, services: CellServices, state: CellState, run: Pass
) -> tuple[list[Record], str, dict[str, Any] | None, ExitPolicy | None]:
    """``(records, note, saliency sample, calibrated policy)``; a failing metric fails its own records only."""
    trained = trained_model(cell, data, services, state, run)
    evaluation = cell.evaluation
    ectx = EvalContext(
        trained.model, trained.method, data.test, services.device, evaluation.batch_size,
        desc=cell.id, progress=services.progress, train=data.train, holdout=data.holdout,
        explainers=dict(cell.explainers), explain_limit=evaluation.explain_limit,
        seed=cell.seed, store=map_store(cell, trained.key, services, state, run),
    )  # fmt: skip
    if run.policy is not None:
        ectx.memo("policy", lambda: run.policy)
    identity = cell_identity(cell, data.source, state.uses_masks)
    records: list[Record] = []
    for spec, metric in cell.metrics:
        if not run.runs(metric):
            continue
        try:
            records.extend(measure(cell, trained.key, spec, metric, ectx, services, state, identity, run))
        except NotCached:
            raise
        except Exception as err:  # one broken metric fails its own column, not the cell's other numbers
            if services.fail_fast:
                raise
            log.debug("cell %s: metric %s failed", cell.id, spec.display, exc_info=True)
            provenance = services.provenance
            records.append(make_record(cell, provenance, identity, spec, metric, None, None, error_text(err)))
    saliency = None if run.timing else cell_saliency(cell, ectx, services)
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
    cell: ResolvedCell,
    data: CellData,
    services: CellServices,
    state: CellState,
    run: Pass = MEASURE,
    required_by: ResolvedCell | None = None,
) -> TrainedModel:
    """The cell's model in eval mode on the device: loaded from the reference or the cache, or trained.

    A method that ``requires`` another cell (TAME: the baseline) gets that cell's model
    first, trained or loaded the same way (``required_by``: the cell it is loaded for).
    ``state`` collects the training time, the exported weights and whether the training
    of the cell itself used masks.
    """
    cache, reference = services.cache, services.reference
    train_split = data.train
    method = cell.method_for(data)
    uses_masks = method.uses_masks(train_split)
    if required_by is None:
        state.uses_masks = uses_masks
    torch.manual_seed(cell.seed)
    model = build_model(method, cell.channels_last)
    key = cell.model_key
    if reference is not None:
        key = reference_key(key, reference.sha256(cell.id))
    saved = reference.load(cell.id) if reference is not None else cache.load_model(key)
    if saved is not None:
        try:
            model.load_state_dict(saved)
        except RuntimeError as err:
            source = f"reference weights {reference.path(cell.id)}" if reference is not None else "cached model"
            detail = " ".join(str(err).split())[:300]  # torch's first line names only the model; the tensor is next
            raise CheckpointError(f"{cell.id}: {source}: does not fit the model: {detail}") from err
        note = "reference" if reference is not None else "cached"
    elif not run.computes:
        raise NotCached(f"{cell.id}: model")
    else:
        if cell.required is not None:
            base = trained_model(cell.required, data, services, state, run, required_by=cell)
            method.load_required(model, {k: v.detach().cpu() for k, v in base.model.state_dict().items()})
            log.info("%s: builds on %s (%s)", cell.id, cell.required.id, base.note)
        cell.load_checkpoint(model)
        epochs = CachedEpochs(cache, key, cell.id)
        stats = train(
            method, model, train_split, cell.training, services.device, cell.seed,
            desc=cell.id, progress=services.progress, checkpoint=epochs,
        )  # fmt: skip
        cache.save_model(key, model.state_dict(), {"cell": cell.id, "train": stats.__dict__})
        epochs.discard()
        state.stages["train"] += stats.time_s
        note = f"trained {stats.time_s:.1f}s"
        if stats.resumed_from:
            note += f", resumed after epoch {stats.resumed_from}"
    model.to(services.device).eval()
    if services.export and not run.timing:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        state.exports.append((cell.id, weights, cell_identity(cell, data.source, uses_masks)[0]))
    return TrainedModel(method, model, key, note)


# -- measuring -------------------------------------------------------------------------
def measure(
    cell: ResolvedCell,
    key: str,
    spec: PluginSpec,
    metric: Metric,
    ectx: EvalContext,
    services: CellServices,
    state: CellState,
    identity: tuple[dict[str, Any], str],
    run: Pass = MEASURE,
) -> list[Record]:
    """The records of one metric of the cell: once, or once per explainer the cell scores."""
    if metric.requires_masks and ectx.data.masks is None:
        log.info("%s: %s needs masks; %s has none, skipped", cell.id, spec.display, cell.dataset.display)
        return []
    if not metric.uses_explanations:
        return _measure(cell, key, spec, metric, ectx, services, state, identity, None, run)
    records = []
    for name in cell.scored:
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
            records.extend(_measure(cell, key, spec, metric, ctx, services, state, identity, name, run))
        except NotCached:
            raise
        except Exception as err:  # an explainer that cannot run on this model fails its own values only
            if services.fail_fast:
                raise
            log.debug("%s: explainer %s, metric %s failed", cell.id, name, spec.display, exc_info=True)
            text = error_text(err)
            records.append(make_record(cell, services.provenance, identity, spec, metric, None, None, text, name))
    return records


def _measure(
    cell: ResolvedCell,
    key: str,
    spec: PluginSpec,
    metric: Metric,
    ectx: EvalContext,
    services: CellServices,
    state: CellState,
    identity: tuple[dict[str, Any], str],
    explainer: str | None,
    run: Pass,
) -> list[Record]:
    """One metric's values: from the cache, or computed (and cached) with the time it took."""
    cache = services.cache
    entry = metric_key(cell, key, spec, metric, services.device.type, explainer)
    cached = cache.load_json("metrics", entry)
    if cached is not None:
        results = [MetricResult(**r) for r in cached["results"]]
        elapsed = float(cached["time_s"])
    elif not run.computes:
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
    return [make_record(cell, provenance, identity, spec, metric, r, elapsed, explainer=explainer) for r in results]


def map_store(
    cell: ResolvedCell, key: str, services: CellServices, state: CellState, run: Pass = MEASURE
) -> Callable[[str, Callable[[], torch.Tensor | None]], torch.Tensor | None]:
    """A persistent store of a cell's explanation maps, keyed by model, explainer and images."""
    cache = services.cache

    def store(name: str, compute: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        entry = explanations_key(cell, key, name, services.device.type)
        cached = cache.load_model(entry, kind="explanations")
        if cached is not None and isinstance(cached.get("maps"), torch.Tensor):
            return cached["maps"]  # type: ignore[no-any-return]
        if cached is not None and "absent" in cached:
            return None
        if not run.computes:
            raise NotCached(f"{cell.id}: {name} maps")
        start = time.perf_counter()
        maps = compute()
        state.stages["explain"][name] += time.perf_counter() - start
        payload = {"maps": maps} if maps is not None else {"absent": torch.ones(())}
        cache.save_model(entry, payload, {"cell": cell.id, "explainer": name}, kind="explanations")
        return maps

    return store


def cell_saliency(cell: ResolvedCell, ectx: EvalContext, services: CellServices) -> dict[str, Any] | None:
    """The first explained images and their maps from every explainer the cell computed (first seed only)."""
    n = services.saliency_images
    done = [name for name in cell.explainers if ectx.has_explanations(name)]
    if not done or not cell.saliency:
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
