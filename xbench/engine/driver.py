"""Run a suite: load its data, run its cells on an executor, write the results folder.

The driver decides *when* a cell may start (after the cell it builds on, longest critical
path first), measures timing metrics alone once the parallel phase is over, and writes every
output; cells themselves run in :func:`xbench.engine.cell.run_cell`, here or in worker
processes. Results are staged in a hidden folder and published at the end
(:mod:`xbench.engine.output`), so an interrupted or rejected run never leaves a half-written
output folder; trained models and metric values are in the cache by then, so running the same
command again resumes where the run stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from xbench.engine import memory
from xbench.engine.cache import atomic_write_text
from xbench.engine.cell import CellOutcome
from xbench.engine.executors import Executor, Job, ProcessExecutor, RayExecutor, SerialExecutor, cpu_count
from xbench.engine.options import RunOptions
from xbench.engine.output import RESULT_MARKER, check_folder, check_output, output_lock, prepare_output, publish
from xbench.engine.plan import Plan
from xbench.engine.provenance import device_description
from xbench.engine.reference import ReferenceWriter
from xbench.engine.reports import cached_report, report_key
from xbench.engine.resolved import ResolvedCell, timing_pass
from xbench.engine.schedule import CostModel
from xbench.engine.worker import Worker
from xbench.errors import ConfigError, XBenchError
from xbench.report.records import Record, write_records
from xbench.suite import Suite, dump_suite

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    records: list[Record]
    failed_cells: list[str] = field(default_factory=list)
    time_s: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)


class CellFailed(XBenchError):
    """With ``--fail-fast``: the first failing cell stops the run."""

    exit_code = 1


class Driver:
    """Runs every cell of a suite and publishes its results folder; see :func:`run_suite`."""

    def __init__(self, suite: Suite, options: RunOptions, source: str = "suite") -> None:
        self.suite = suite
        self.opt = options
        self.worker = Worker(Plan(suite, source), options)  # serial cells and the timing pass run here
        self.plan = self.worker.plan
        self.costs = CostModel(self.worker)
        self._saliency: dict[str, dict[str, Any]] = {}  # per dataset: images and maps for the report's grid

    def cells(self) -> list[ResolvedCell]:
        """The plan's cells, resolved (once, on the first call; after :meth:`Plan.check_weights` in a run)."""
        return self.plan.resolved

    @property
    def jobs(self) -> int:
        """Cells at a time with the local executor: ``--jobs``, else the suite's ``resources.jobs``."""
        if self.opt.jobs is not None:
            return self.opt.jobs
        jobs, cpus = self.suite.resources.jobs, self.suite.resources.cpus
        return max(1, cpu_count() // (cpus or 1)) if jobs == "auto" else jobs

    def _executor(self) -> Executor:
        """The executor the options ask for; worker threads per cell follow ``resources.cpus``."""
        cpus = self.suite.resources.cpus
        if self.opt.executor == "local" and self.jobs <= 1:
            if cpus is not None:
                torch.set_num_threads(cpus)
            return SerialExecutor(self.worker)
        # Workers print nothing (the driver echoes one line per finished cell) and export through the driver.
        # They run the measure pass; the driver runs the time pass alone (see _measure_timings).
        options = replace(self.opt, progress=False, echo=_silent)
        if self.opt.executor == "ray":
            return RayExecutor(Job(self.plan, options, cpus or 1), self.opt.address)
        threads = cpus or max(1, cpu_count() // self.jobs)
        return ProcessExecutor(Job(self.plan, options, threads), self.jobs)

    # -- the sweep -----------------------------------------------------------------------
    def run(self) -> RunResult:
        start = time.perf_counter()
        out = self.suite.output_dir
        timings: dict[str, Any] = {"data": {}}
        memory.check_data_memory(self.plan)  # data that cannot fit in memory: exit 2 before loading it
        # Load every dataset before creating or training anything: missing data is an
        # input error and must stop the run before it spends time or writes folders.
        for spec in self.suite.datasets:
            t0 = time.perf_counter()
            self.worker.data_for(spec)
            timings["data"][spec.display] = time.perf_counter() - t0
        self.plan.check_weights(self.worker.data_for)  # bad weights or checkpoints: exit 2, nothing written
        memory.check_cell_memory(self.plan, self.worker.data_for, self.jobs if self.opt.executor == "local" else None)
        self.cells()  # resolved once, here; workers get the resolved cells with the plan
        check_output(out)
        services = self.worker.services
        check_folder(services.cache.root, self._cache_flag())
        if self.opt.export_reference is not None:
            check_folder(self.opt.export_reference, "--export-reference")
        threads = torch.get_num_threads()
        with output_lock(out):
            executor = self._executor()
            staging = prepare_output(out)
            try:
                exporter = None
                if self.opt.export_reference is not None:
                    provenance = services.provenance
                    exporter = ReferenceWriter(
                        self.opt.export_reference, self.suite.name, provenance.git, provenance.versions
                    )
                result = self._run_cells(out, executor, exporter)
                t0 = time.perf_counter()
                self._write(staging, result.records)
                timings["report"] = time.perf_counter() - t0
                result.time_s = time.perf_counter() - start
                result.timings = {**timings, **result.timings, "total": result.time_s}
                atomic_write_text(staging / "timings.json", json.dumps(result.timings, indent=1))
                atomic_write_text(staging / RESULT_MARKER, json.dumps(self._summary(result, executor), indent=1))
                publish(staging, out)
                if exporter is not None:
                    exporter.write()
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                torch.set_num_threads(threads)  # resources.cpus applies to this run only
        return result

    def _cache_flag(self) -> str:
        """What set the cache folder, for error messages."""
        if self.opt.cache_dir is not None:
            return "--cache-dir"
        return f"{self.plan.source}: cache_dir" if self.suite.cache_dir is not None else "cache folder ($XBENCH_CACHE)"

    def _summary(self, result: RunResult, executor: Executor) -> dict[str, Any]:
        services = self.worker.services
        return {
            "suite": self.suite.name,
            "source": self.plan.source,
            "cells": len(self.cells()),
            "failed_cells": result.failed_cells,
            "time_s": result.time_s,
            "executor": executor.name,
            "jobs": self.jobs if executor.name == "local" else None,
            "device": device_description(services.device),
            "data_sources": {spec.display: self.worker.data_for(spec).source for spec in self.suite.datasets},
            "cache_dir": str(services.cache.root),
            "versions": services.provenance.versions,
            "git": services.provenance.git,
        }

    def _run_cells(self, out: Path, executor: Executor, exporter: ReferenceWriter | None) -> RunResult:
        """Run every cell's measure pass on ``executor``, longest first, then its time pass here.

        A cell starts once the cell it builds on has finished.
        """
        cells = self.cells()
        needs = {i: None if c.required is None else c.required.index for i, c in enumerate(cells)}
        capacity = {"local": max(1, self.jobs)}.get(executor.name, len(cells))
        outcomes: dict[int, CellOutcome] = {}
        # Order only matters when several cells run at once; one at a time keeps the suite's order.
        parallel = not isinstance(executor, SerialExecutor) and capacity > 1 and len(cells) > 1
        waiting = self.costs.start_order(cells, needs) if parallel else list(range(len(cells)))
        running: list[tuple[Any, int]] = []
        try:
            if not isinstance(executor, SerialExecutor):
                # A cell the cache holds whole is read here: no worker process or task to start for it.
                for i in list(waiting):
                    cached = self.worker.cached_outcome(i)
                    if cached is not None:
                        waiting.remove(i)
                        outcomes[i] = cached
                        self._echo_done(cells, outcomes, i)
            while waiting or running:
                for i in list(waiting):
                    if len(running) >= capacity:
                        break
                    if needs[i] is None or needs[i] in outcomes:
                        waiting.remove(i)
                        running.append((executor.submit(i), i))
                if not running:  # nothing can start: a method requires itself, directly or through others
                    raise ConfigError(f"cells {[cells[i].id for i in waiting]} require each other (Method.requires)")
                for handle, result in executor.wait([h for h, _ in running]):
                    i = next(j for h, j in running if h is handle)
                    running = [(h, j) for h, j in running if h is not handle]
                    outcome = result if isinstance(result, CellOutcome) else self.worker.lost_outcome(i, result)
                    outcomes[i] = outcome
                    self._echo_done(cells, outcomes, i)
                    if self.opt.fail_fast and outcome.failed:
                        raise CellFailed(
                            f"cell {cells[i].id} failed: {outcome.error or outcome.note}"
                        ) from outcome.exception
        except BaseException:
            executor.close(cancel=True)
            raise
        executor.close()
        self._measure_timings(cells, outcomes)
        records: list[Record] = []
        failed: list[str] = []
        timings: dict[str, Any] = {"cells": {}}
        for i in range(len(cells)):  # cell order, whatever order they finished in
            outcome = outcomes[i]
            records.extend(outcome.records)
            if outcome.failed:
                failed.append(cells[i].id)
            self.merge_saliency(cells[i], outcome.saliency)
            for cell_id, state, config in outcome.exports:
                if exporter is not None and cell_id not in exporter.manifest["cells"]:
                    exporter.add(cell_id, state, config)
            timings["cells"][cells[i].id] = {"wall": outcome.wall_s, **outcome.stages, "worker": outcome.worker}
        return RunResult(out, records, failed, timings=timings)

    def _echo_done(self, cells: list[ResolvedCell], outcomes: dict[int, CellOutcome], i: int) -> None:
        """The line of a finished cell: ``[done/all] cell: summary (note; seconds)``."""
        outcome = outcomes[i]
        self.opt.echo(
            f"[{len(outcomes)}/{len(cells)}] {cells[i].id}: {_summary(outcome.records)} "
            f"({outcome.note}; {outcome.wall_s:.1f}s)"
        )

    def _measure_timings(self, cells: list[ResolvedCell], outcomes: dict[int, CellOutcome]) -> None:
        """The time pass: timing metrics, measured here one cell at a time once every cell has finished.

        A latency measured while other cells train on the same machine measures the load, not the
        model; so the measure pass skips timing metrics and the driver measures them on an otherwise
        idle machine (each model comes from the cache), whichever executor ran the cells. Records
        keep the suite's metric order.
        """
        metrics = self.plan.metrics
        if not any(metric.measures_time for _, metric in metrics):
            return
        order = {spec.display: i for i, (spec, _) in enumerate(metrics)}
        timed = [i for i in sorted(outcomes) if not outcomes[i].error]
        # The workers' thread count (resources.cpus), so that a latency means the same in a serial and a
        # parallel run; more threads than that would also spin-wait badly on a machine that is not idle.
        threads = torch.get_num_threads()
        torch.set_num_threads(self.suite.resources.cpus or max(1, cpu_count() // self.jobs))
        try:
            self._time_cells(cells, outcomes, timed, order)
        finally:
            torch.set_num_threads(threads)

    def _time_cells(
        self, cells: list[ResolvedCell], outcomes: dict[int, CellOutcome], timed: list[int], order: dict[str, int]
    ) -> None:
        for n, i in enumerate(timed, 1):
            cell, outcome = cells[i], outcomes[i]
            start = time.perf_counter()
            # The measure pass's calibrated policy: the same model, the same thresholds.
            timing = self.worker.outcome(i, timing_pass(outcome.policy))
            if timing.error:  # the model was trained; only its timing failed
                log.debug("cell %s: timing failed: %s", cell.id, timing.error)
            records = timing.records
            outcome.records = sorted(outcome.records + records, key=lambda r: order.get(r.metric, len(order)))
            outcome.failed = outcome.failed or any(r.status == "failed" for r in records)
            for name, sec in timing.stages.get("metrics", {}).items():
                outcome.stages.setdefault("metrics", {})[name] = sec
            self.opt.echo(
                f"[timings {n}/{len(timed)}] {cell.id}: {_summary([r for r in records if r.exit is None])} "
                f"({time.perf_counter() - start:.1f}s)"
            )

    def _write(self, staging: Path, records: list[Record]) -> None:
        # Imported here: matplotlib (plots) writes a font cache under $HOME on import, which a
        # run rejected for bad input must not do.
        from xbench.report.outputs import write_report
        from xbench.report.plots import write_saliency

        resolved = self.suite.model_copy(update={"output": self.suite.output_dir})
        atomic_write_text(staging / "config.yaml", dump_suite(resolved))
        write_records(staging / "records.jsonl", records)
        for dataset, sample in self._saliency.items():
            if sample["maps"]:
                write_saliency(
                    staging / "saliency" / f"{dataset}.npz",
                    sample["images"], sample["labels"], sample["masks"], sample["maps"],
                )  # fmt: skip
        title, view = f"xbench: {self.suite.name}", self.suite.report.view
        key = report_key(staging / "records.jsonl", staging / "saliency", title, view)
        _, cached = cached_report(
            self.worker.services.cache, key, staging,
            lambda: write_report(records, staging, title, staging / "saliency", view),
        )  # fmt: skip
        if cached:
            log.info("report: the same records as an earlier run; its files come from the cache")

    def merge_saliency(self, cell: ResolvedCell, sample: dict[str, Any] | None) -> None:
        """Add a cell's saliency sample to its dataset's grid (every cell of a dataset explains the same images)."""
        if sample is None:
            return
        grid = self._saliency.setdefault(cell.dataset.display, {**sample, "maps": {}})
        grid["maps"].update(sample["maps"])


def _silent(_: str) -> None:
    pass


def stage_summary(timings: dict[str, Any], top: int = 4) -> str:
    """One line saying where a run's time went (stages summed over cells; seconds actually spent)."""
    cells = timings.get("cells", {}).values()
    train = sum(c["train"] for c in cells)
    explain = sum(sum(c["explain"].values()) for c in cells)
    per_metric: dict[str, float] = defaultdict(float)
    for c in cells:
        for name, sec in c["metrics"].items():
            per_metric[name] += sec
    biggest = sorted(per_metric.items(), key=lambda kv: -kv[1])[:top]
    detail = ", ".join(f"{name} {sec:.0f}s" for name, sec in biggest if sec >= 0.5)
    return (
        f"time by stage: data {sum(timings.get('data', {}).values()):.1f}s, train {train:.1f}s, "
        f"explain {explain:.1f}s, metrics {sum(per_metric.values()):.1f}s"
        + (f" ({detail})" if detail else "")
        + f", report {timings.get('report', 0.0):.1f}s; wall {timings.get('total', 0.0):.1f}s (timings.json)"
    )


def _summary(records: list[Record]) -> str:
    parts = []
    explained = sum(r.explainer is not None and r.value is not None for r in records)
    for r in records:
        if r.exit is not None or r.value is None or r.explainer is not None:
            continue
        d = r.display
        parts.append(
            f"{d.get('label', r.metric)} {r.value * d.get('scale', 1.0):.{d.get('decimals', 2)}f}{d.get('unit', '')}"
        )
    if explained:
        parts.append(f"{explained} explanation values")
    return ", ".join(parts) if parts else "no values"


def run_suite(suite: Suite, options: RunOptions | None = None, source: str = "suite") -> RunResult:
    """Run every cell of ``suite`` and publish its results folder."""
    return Driver(suite, options or RunOptions(), source).run()
