"""A process that runs cells: the suite's plan, its services and the data it loaded once.

The driver has one for serial runs and for its timing pass; every worker process (``--jobs``,
Ray) builds its own from the pickled plan (whose cells are resolved) and options, so a cell
computes exactly what it computes in a serial run.
"""

from __future__ import annotations

from xbench.engine.cache import Cache, default_cache_dir
from xbench.engine.cell import CellOutcome, CellServices, failed_outcome, probe, run_cell
from xbench.engine.options import RunOptions
from xbench.engine.plan import CellData, Plan
from xbench.engine.provenance import git_revision, resolve_device, versions
from xbench.engine.recording import Provenance
from xbench.engine.reference import ReferenceModels
from xbench.engine.resolved import MEASURE, Pass
from xbench.errors import ConfigError
from xbench.suite import PluginSpec


def make_services(plan: Plan, options: RunOptions) -> CellServices:
    """The services a cell of ``plan`` runs with, from the run's options."""
    suite = plan.suite
    try:
        device = resolve_device(suite.device)
    except ConfigError as err:
        raise ConfigError(f"{plan.source}: {err}") from err
    return CellServices(
        cache=Cache(options.cache_dir or suite.cache_dir or default_cache_dir()),
        device=device,
        provenance=Provenance(suite.name, versions(), git_revision(), str(device)),
        reference=ReferenceModels(options.reference) if options.reference is not None else None,
        progress=options.progress,
        fail_fast=options.fail_fast,
        export=options.export_reference is not None,
    )


class Worker:
    """Runs cells of one plan in this process, loading each dataset once."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.options = options
        self.services = make_services(self.plan, options)
        self._data: dict[str, CellData] = {}

    def data_for(self, spec: PluginSpec) -> CellData:
        """The dataset row's splits, loaded once per process."""
        if spec.display not in self._data:
            self._data[spec.display] = self.plan.load_data(spec, self.options.data_dir)
        return self._data[spec.display]

    def outcome(self, index: int, run: Pass = MEASURE) -> CellOutcome:
        """Run one pass of cell ``index`` of the plan here (see :func:`~xbench.engine.cell.run_cell`)."""
        cell = self.plan.resolved[index]
        try:
            data = self.data_for(cell.dataset)
        except Exception as err:  # the driver loaded it; a worker that cannot fails this cell only
            return failed_outcome(cell, err, self.services, run=run)
        return run_cell(cell, data, self.services, run)

    def cached_outcome(self, index: int) -> CellOutcome | None:
        """Cell ``index``'s measure-pass outcome if the cache holds all of it; else None (nothing is computed)."""
        cell = self.plan.resolved[index]
        return probe(cell, self.data_for(cell.dataset), self.services)

    def lost_outcome(self, index: int, err: BaseException) -> CellOutcome:
        """The outcome of a cell whose worker died (killed, out of memory) before it could report."""
        cell = self.plan.resolved[index]
        line = f"worker lost: {type(err).__name__}: {err}"
        loaded = self._data.get(cell.dataset.display)
        source = None if loaded is None else loaded.source
        failed = failed_outcome(cell, RuntimeError(line), self.services, source)
        return CellOutcome(index, failed.records, f"FAILED: {line}", True, line)
