"""Where cells run: in this process, in a few local worker processes, or as Ray tasks.

The driver (:class:`xbench.engine.driver.Driver`) decides *when* a cell may start
(after the cells it builds on) and writes every output; an executor only runs
cells. A worker builds its own :class:`~xbench.engine.worker.Worker` from the driver's plan
(its cells resolved there) and loads the data itself, so a cell computes exactly what it
computes in a serial run, and it shares trained models and metric values with every other worker through the
on-disk cache (which must therefore be on a file system all workers see).

Numbers are bitwise reproducible for a given device and torch thread count:
``resources.cpus`` fixes the thread count of every cell whichever executor runs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from xbench.engine.cell import CellOutcome
from xbench.engine.worker import Worker
from xbench.errors import ConfigError

if TYPE_CHECKING:
    from xbench.engine.options import RunOptions
    from xbench.engine.plan import Plan


@dataclass
class Job:
    """Everything a worker process needs to run the driver's cells: its plan, resolved cells included."""

    plan: Plan
    options: RunOptions
    threads: int | None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class Executor(Protocol):
    name: str

    def submit(self, index: int) -> Any:
        """Start cell ``index``; returns a handle."""
        ...

    def wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome | BaseException]]:
        """Block until at least one handle is done; return the finished ones with their outcomes.

        A worker that died (killed, out of memory) gives the exception instead of an outcome.
        """
        ...

    def close(self, cancel: bool = False) -> None: ...


# -- worker side ----------------------------------------------------------------------
_WORKERS: dict[str, Worker] = {}  # one per job and worker process: it keeps the loaded data


def run_cell_task(job: Job, index: int) -> CellOutcome:
    """Run cell ``index`` of ``job`` in this (worker) process."""
    worker = _WORKERS.get(job.token)
    if worker is None:
        if job.threads is not None:
            torch.set_num_threads(job.threads)
        _WORKERS.clear()  # a new run: drop the previous one's data
        worker = _WORKERS[job.token] = Worker(job.plan, job.options)
    outcome = worker.outcome(index)
    outcome.exception = None  # not every exception pickles; the error text is in the records
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        outcome.worker += f" ray-node:{ray.get_runtime_context().get_node_id()}"
    return outcome


# -- executors ------------------------------------------------------------------------
class SerialExecutor:
    """Runs each cell when it is submitted, in the driver's process (the default)."""

    name = "local"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def submit(self, index: int) -> CellOutcome:
        return self.worker.outcome(index)

    def wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome | BaseException]]:
        return [(handles[0], handles[0])]

    def close(self, cancel: bool = False) -> None:
        pass


class ProcessExecutor:
    """``--jobs N``: N local worker processes (spawned, so no forked torch thread pools)."""

    name = "local"

    def __init__(self, job: Job, jobs: int) -> None:
        self.job = job
        self.pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, index: int) -> cf.Future[CellOutcome]:
        return self.pool.submit(run_cell_task, self.job, index)

    def wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome | BaseException]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [(h, h.exception() or h.result()) for h in handles if h in done]

    def close(self, cancel: bool = False) -> None:
        if cancel:  # --fail-fast or Ctrl-C: stop running cells now (cache writes are atomic, so this is safe)
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayExecutor:
    """``--executor ray``: each cell is a Ray task requesting the suite's ``resources``."""

    name = "ray"

    def __init__(self, job: Job, address: str | None) -> None:
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "--executor ray: Ray is not installed; install it with: pip install 'xbench[ray]'"
            ) from err
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False, configure_logging=False)
            except (ConnectionError, ValueError) as err:  # ValueError: not an address Ray can parse
                raise ConfigError(f"--address {address}: cannot connect to a Ray cluster: {err}") from err
        res = job.plan.suite.resources
        options: dict[str, Any] = {"num_cpus": res.cpus or 1, "max_retries": 0}
        if res.gpus:
            options["num_gpus"] = res.gpus
        self.task = ray.remote(run_cell_task).options(**options)
        self.job_ref = ray.put(job)

    def submit(self, index: int) -> Any:
        return self.task.remote(self.job_ref, index)

    def wait(self, handles: list[Any]) -> list[tuple[Any, CellOutcome | BaseException]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        finished: list[tuple[Any, CellOutcome | BaseException]] = []
        for h in done:
            try:
                finished.append((h, self.ray.get(h)))
            except Exception as err:  # the worker died (RayTaskError, WorkerCrashedError, OOM kill)
                finished.append((h, err))
        return finished

    def close(self, cancel: bool = False) -> None:
        pass  # the cluster (and a local one ray.init started) outlives the run; Ray stops it at exit


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
