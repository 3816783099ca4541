"""Run a suite: expand it into cells, train or load each, measure, write results.

A cell is one (dataset, method, seed). Each cell fails on its own: its error
and traceback go into its records and the sweep goes on. Results are first
written to a hidden folder next to the output folder and moved into place only
when the run ends, so an interrupted or rejected run never leaves a
half-written output folder; trained models and metric values are in the cache
by then, so running the same command again resumes where the run stopped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from xbench.data.base import ImageSplit
from xbench.engine import train as train_module
from xbench.engine.cache import Cache, atomic_write_text, cache_key, default_cache_dir
from xbench.engine.executors import CellOutcome, Executor, Job, ProcessExecutor, RayExecutor, SerialExecutor, cpu_count
from xbench.engine.provenance import code_fingerprint, device_description, git_revision, resolve_device, versions
from xbench.engine.reference import ReferenceModels, ReferenceWriter
from xbench.engine.train import train
from xbench.errors import CheckpointError, ConfigError, OutputError, XBenchError
from xbench.explain.base import Explainer
from xbench.methods.base import Method, MethodContext
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.metrics.latency import time_calls
from xbench.models import exits as exits_module
from xbench.models.exits import ExitPolicy
from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS
from xbench.report.records import Record, write_records
from xbench.suite import PluginSpec, Suite, dump_suite, validate_plugins

log = logging.getLogger(__name__)

RESULT_MARKER = "run.json"
#: Forward passes per explained image and explainer that a suite's explanation metrics make (the
#: quick suite's faithfulness metrics make about 150); only the scheduler's cost estimate uses it.
EXPLAIN_FORWARDS = 150


@dataclass
class RunOptions:
    """How to run, as opposed to what to run (the suite)."""

    data_dir: Path | None = None
    cache_dir: Path | None = None
    progress: bool = True
    fail_fast: bool = False
    echo: Any = print  # where one-line cell summaries go
    reference: Path | None = None  # load every cell's weights from this reference folder, never train
    export_reference: Path | None = None  # write the run's trained models as a reference folder
    executor: str = "local"  # "local" or "ray"
    jobs: int | None = None  # local executor: cells at a time (worker processes when > 1); None: resources.jobs
    address: str | None = None  # Ray cluster address ("auto", "HOST:PORT"); None starts a local Ray
    timings: bool = True  # measure timing metrics (workers of a parallel run leave them to the driver)


@dataclass
class RunResult:
    out_dir: Path
    records: list[Record]
    failed_cells: list[str] = field(default_factory=list)
    time_s: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)


# -- output folder ---------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of runs that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _check_output(out: Path) -> None:
    """Raise OutputError unless ``out`` can be (re)written."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RESULT_MARKER).exists():
        raise OutputError(f"{out}: output folder is not empty and holds no xbench results; choose another output")
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"{out}: cannot create the output folder: {blocker} is a file")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for a whole run; a second run gets a clear OutputError.

    ``flock`` on a hidden file next to the folder: the kernel drops the lock when the
    process dies, so a killed run never blocks the next one (its lock file stays and is
    reused). A finished run removes the file; the inode check guards against locking a
    file that the run holding it has just removed.
    """
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")  # noqa: SIM115 -- held open for the whole run
        except OSError as err:
            raise OutputError(f"{out}: output folder is not writable ({err.strerror or err})") from err
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(
                f"{out}: another xbench run ({holder}) is writing to this output folder; "
                "wait for it to finish or choose another --output"
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # locked a file that was removed meanwhile: take the new one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()  # releases the lock


def _prepare_output(out: Path) -> Path:
    """Create the hidden staging folder for ``out`` (checked by :func:`_check_output`, locked by the caller)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        staging = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        probe = staging / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{out}: output folder is not writable ({err.strerror or err})") from err
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (old results are removed only after the swap)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class EpochCheckpoints:
    """A cell's training state after its last finished epoch, in the cache next to its model.

    A run killed in the middle of training resumes from the last finished epoch; the
    state is removed once the model is saved.
    """

    cache: Cache
    key: str
    cell: str
    kind: str = "train-state"

    def load(self) -> dict[str, Any] | None:
        return self.cache.load_model(self.key, kind=self.kind)

    def save(self, state: dict[str, Any]) -> None:
        self.cache.save_model(self.key, state, {"cell": self.cell, "epoch": state["epoch"]}, kind=self.kind)

    def discard(self) -> None:
        self.cache.discard(self.key, kind=self.kind)


class CellFailed(XBenchError):
    """With ``--fail-fast``: the first failing cell stops the run."""

    exit_code = 1


# -- cells ------------------------------------------------------------------------
@dataclass
class CellData:
    train: ImageSplit
    test: ImageSplit
    holdout: ImageSplit | None = None


@dataclass
class CellSpec:
    dataset: PluginSpec
    method: PluginSpec
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset.display}/{self.method.display}/seed{self.seed}"


class Runner:
    """Runs every cell of a suite; see :func:`run_suite`."""

    def __init__(self, suite: Suite, options: RunOptions, source: str = "suite") -> None:
        self.suite = suite
        self.opt = options
        self.source = source
        self.params = validate_plugins(suite, source)
        self.cache = Cache(options.cache_dir or suite.cache_dir or default_cache_dir())
        try:
            self.device = resolve_device(suite.device)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
        self.versions = versions()
        self.git = git_revision()
        self.metrics: list[tuple[PluginSpec, Metric]] = [
            (spec, METRICS.get(spec.name)(self.params["metrics"][spec.display])) for spec in suite.metrics
        ]
        self.explainers: dict[str, Explainer] = {
            spec.display: EXPLAINERS.get(spec.name)(self.params["explainers"][spec.display])
            for spec in suite.explainers
        }
        self.sources: dict[str, str] = {}
        self.reference = ReferenceModels(options.reference) if options.reference is not None else None
        self._identities: dict[str, tuple[dict[str, Any], str]] = {}
        self._mask_cells: set[str] = set()  # cells whose training used ground-truth masks
        self._saliency: dict[str, dict[str, Any]] = {}  # per dataset: images and maps for the report's grid
        self.saliency_images = 8
        self._data: dict[str, CellData] = {}  # loaded datasets, by row label
        self._exports: list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]] = []  # the current cell's models
        self._stage = _new_stages()  # where the current cell's time goes (seconds actually spent)
        self._per_image: dict[tuple[str, str], float] = {}  # seconds per image, for the start order
        # Exit policies calibrated by a cell's run, by cell id: a worker sends its cell's back
        # (CellOutcome.policy) so that the driver's timing run does not calibrate again.
        self._policies: dict[str, ExitPolicy] = {}

    # data ----------------------------------------------------------------------
    def load_data(self, index: int, spec: PluginSpec) -> CellData:
        """Load a dataset's splits; every cell of the dataset gets the same ones."""
        cls = DATASETS.get(spec.name)
        dataset = cls(
            self.params["datasets"][spec.display], self.opt.data_dir or self.suite.data.dir, self.suite.data.download
        )
        try:
            train_split = dataset.load("train")
            test_split = dataset.load("test").subset(self.suite.evaluation.limit, seed=0)
        except XBenchError as err:
            raise type(err)(f"{self.source}: datasets[{index}] ({spec.name}): {err}") from err
        holdout = None
        if self.suite.training.holdout:
            if self.suite.training.holdout >= len(train_split):
                raise ConfigError(
                    f"{self.source}: training.holdout: {self.suite.training.holdout} is not smaller than "
                    f"the {len(train_split)} training images of {spec.display}"
                )
            train_split, holdout = train_split.split_off(self.suite.training.holdout, seed=0)
        self.sources[spec.display] = train_split.source
        return CellData(train_split.subset(self.suite.training.limit, seed=0), test_split, holdout)

    def data_for(self, spec: PluginSpec) -> CellData:
        """The dataset row's splits, loaded once per process."""
        if spec.display not in self._data:
            index = [d.display for d in self.suite.datasets].index(spec.display)
            self._data[spec.display] = self.load_data(index, spec)
        return self._data[spec.display]

    # identity of a cell ---------------------------------------------------------------
    def cell_config(self, cell: CellSpec) -> dict[str, Any]:
        """Everything a cell's numbers depend on but the seed and the code (recorded in each record)."""
        backbone = self.suite.backbone
        return {
            "dataset": {"name": cell.dataset.name, "params": self._dump("datasets", cell.dataset)},
            "method": {"name": cell.method.name, "params": self._dump("methods", cell.method)},
            "backbone": {"name": backbone.name, "params": self._dump("backbone", backbone)},
            "training": self.suite.training.model_dump(mode="json"),
            "evaluation": self.suite.evaluation.model_dump(mode="json"),
        }

    def identity(self, cell: CellSpec) -> tuple[dict[str, Any], str]:
        """``(config with data source, setup hash)`` of a cell, as every record of it carries."""
        if cell.id not in self._identities:
            config = self.cell_config(cell)
            setup = cache_key(config)[:12]
            extra = {"data_source": self.sources.get(cell.dataset.display), "uses_masks": cell.id in self._mask_cells}
            self._identities[cell.id] = ({**config, **extra}, setup)
        return self._identities[cell.id]

    def _dump(self, kind: str, spec: PluginSpec) -> dict[str, Any]:
        return self._params(kind, spec).model_dump(mode="json")  # type: ignore[no-any-return]

    def _params(self, kind: str, spec: PluginSpec) -> Any:
        """Validated params of a suite row; a required method the suite does not list gets its defaults."""
        if spec.display in self.params[kind]:
            return self.params[kind][spec.display]
        return METHODS.get(spec.name).Params()

    def model_key(self, cell: CellSpec) -> str:
        config = self.cell_config(cell)
        del config["evaluation"]
        code = code_fingerprint(
            METHODS.get(cell.method.name),
            BACKBONES.get(self.suite.backbone.name),
            DATASETS.get(cell.dataset.name),
            train_module,
        )
        torch_version = self.versions["torch"]
        required = self.required_cell(cell)
        base = None if required is None else self.model_key(required)
        return cache_key(
            {"kind": "model", **config, "seed": cell.seed, "code": code, "torch": torch_version, "requires": base}
        )

    def required_cell(self, cell: CellSpec) -> CellSpec | None:
        """The cell whose trained model ``cell``'s method builds on (same dataset and seed), if any."""
        requires = METHODS.get(cell.method.name).requires
        if requires is None:
            return None
        # The suite's own row of that method (its label and params) if it lists one, else the defaults.
        listed = next((m for m in self.suite.methods if m.name == requires), None)
        return CellSpec(cell.dataset, listed or PluginSpec(name=requires), cell.seed)

    def metric_key(
        self, model_key: str, cell: CellSpec, spec: PluginSpec, metric: Metric, explainer: str | None = None
    ) -> str:
        code = code_fingerprint(type(metric), METHODS.get(cell.method.name), EvalContext, exits_module)
        return cache_key(
            {
                "kind": "metric",
                "model": model_key,
                "metric": spec.name,
                "params": metric.param_dict(),
                "evaluation": self.suite.evaluation.model_dump(mode="json"),
                "device": self.device.type,
                "code": code,
                **({} if explainer is None else {"explainer": self.explainer_identity(explainer)}),
            }
        )

    def explainer_identity(self, name: str) -> dict[str, Any]:
        explainer = self.explainers[name]
        return {"name": explainer.name, "params": explainer.param_dict(), "code": code_fingerprint(type(explainer))}

    def map_store(self, cell: CellSpec, model_key: str) -> Any:
        """A persistent store of a cell's explanation maps, keyed by model, explainer and images."""

        def store(name: str, compute: Any) -> torch.Tensor | None:
            key = cache_key(
                {
                    "kind": "explanations",
                    "model": model_key,
                    "explainer": self.explainer_identity(name),
                    "method_code": code_fingerprint(METHODS.get(cell.method.name), EvalContext),
                    "evaluation": self.suite.evaluation.model_dump(mode="json"),
                    "device": self.device.type,
                }
            )
            cached = self.cache.load_model(key, kind="explanations")
            if cached is not None and isinstance(cached.get("maps"), torch.Tensor):
                return cached["maps"]
            if cached is not None and "absent" in cached:
                return None
            start = time.perf_counter()
            maps: torch.Tensor | None = compute()
            self._stage["explain"][name] += time.perf_counter() - start
            payload = {"maps": maps} if maps is not None else {"absent": torch.ones(())}
            self.cache.save_model(key, payload, {"cell": cell.id, "explainer": name}, kind="explanations")
            return maps

        return store

    # one cell --------------------------------------------------------------------
    def method_for(self, cell: CellSpec, data: CellData) -> Method:
        """The cell's method, configured for its data (its model not built yet)."""
        train_split = data.train
        ctx = MethodContext(
            num_classes=train_split.num_classes,
            in_channels=train_split.in_channels,
            image_size=train_split.image_size,
            mean=tuple(train_split.mean),
            std=tuple(train_split.std),
            backbone=self.suite.backbone.name,
            backbone_params=self._dump("backbone", self.suite.backbone),
            seed=cell.seed,
        )
        method: Method = METHODS.get(cell.method.name)(self._params("methods", cell.method), ctx)
        return method

    def trained_model(self, cell: CellSpec, data: CellData) -> tuple[Method, torch.nn.Module, str, str]:
        """``(method, model in eval mode on the device, model key, note)``: loaded from the cache or trained.

        A method that ``requires`` another cell (TAME: the baseline) gets that cell's
        model first, trained or loaded the same way.
        """
        train_split = data.train
        method = self.method_for(cell, data)
        if method.uses_masks(train_split):
            self._mask_cells.add(cell.id)
        torch.manual_seed(cell.seed)
        model = self.build_model(method)
        key = self.model_key(cell)
        if self.reference is not None:
            # Metric values of a reference model are cached under its own weights' hash, never a trained model's.
            key = cache_key({"kind": "reference", "model": key, "sha256": self.reference.sha256(cell.id)})
        state = self.reference.load(cell.id) if self.reference is not None else self.cache.load_model(key)
        if state is not None:
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise CheckpointError(f"{cell.id}: the reference weights do not fit the model: {first}") from err
            train_note = "reference" if self.reference is not None else "cached"
        else:
            required = self.required_cell(cell)
            if required is not None:
                _, base, _, base_note = self.trained_model(required, data)
                method.load_required(model, {k: v.detach().cpu() for k, v in base.state_dict().items()})
                log.info("%s: builds on %s (%s)", cell.id, required.id, base_note)
            epochs = EpochCheckpoints(self.cache, key, cell.id)
            stats = train(
                method, model, train_split, self.suite.training, self.device, cell.seed,
                desc=cell.id, progress=self.opt.progress, checkpoint=epochs,
            )  # fmt: skip
            self.cache.save_model(key, model.state_dict(), {"cell": cell.id, "train": stats.__dict__})
            epochs.discard()
            self._stage["train"] += stats.time_s
            train_note = f"trained {stats.time_s:.1f}s"
            if stats.resumed_from:
                train_note += f", resumed after epoch {stats.resumed_from}"
        model.to(self.device).eval()
        if self.opt.export_reference is not None:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            self._exports.append((cell.id, state, self.identity(cell)[0]))
        return method, model, key, train_note

    def build_model(self, method: Method) -> torch.nn.Module:
        """``method.build()`` in the suite's weight layout (``resources.channels_last``).

        Loading a state dict and training keep the parameters' layout (``copy_``, ``.to(device)``).
        """
        model = method.build()
        if self.suite.resources.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def run_cell(
        self, cell: CellSpec, data: CellData, only_timings: bool = False
    ) -> tuple[list[Record], str, dict[str, Any] | None]:
        """``(records, note, saliency sample)`` of one cell; a failing metric fails its own records only.

        Timing metrics are left out when ``opt.timings`` is off, and are all there is with ``only_timings``.
        """
        method, model, key, train_note = self.trained_model(cell, data)
        ectx = EvalContext(
            model, method, data.test, self.device, self.suite.evaluation.batch_size,
            desc=cell.id, progress=self.opt.progress, train=data.train, holdout=data.holdout,
            explainers=self.explainers, explain_limit=self.suite.evaluation.explain_limit,
            seed=cell.seed, store=self.map_store(cell, key),
        )  # fmt: skip
        known = self._policies.get(cell.id)
        if known is not None:
            ectx.memo("policy", lambda: known)
        records: list[Record] = []
        for spec, metric in self.metrics:
            if (only_timings and not metric.measures_time) or (metric.measures_time and not self.opt.timings):
                continue
            try:
                records.extend(self.measure(cell, key, spec, metric, ectx))
            except Exception as err:  # one broken metric fails its own column, not the cell's other numbers
                if self.opt.fail_fast:
                    raise
                log.debug("cell %s: metric %s failed", cell.id, spec.display, exc_info=True)
                records.append(self.record(cell, spec, metric, None, None, error=_error_text(err)))
        saliency = self.cell_saliency(cell, ectx)
        policy = ectx.exit_policy() if ectx.has("policy") else None  # None also for models without exits
        if policy is not None:
            self._policies[cell.id] = policy
        failed = [r.metric for r in records if r.status == "failed"]
        if failed:
            train_note += f"; FAILED metrics: {', '.join(dict.fromkeys(failed))}"
        return records, train_note, saliency

    def cell_outcome(self, index: int) -> CellOutcome:
        """Run cell ``index`` of :meth:`cells` here; whatever goes wrong ends up in its records."""
        cell = self.cells()[index]
        start = time.perf_counter()
        self._stage, self._exports = _new_stages(), []
        try:
            records, note, saliency = self.run_cell(cell, self.data_for(cell.dataset))
            outcome = CellOutcome(index, records, note, any(r.status == "failed" for r in records), saliency=saliency)
            outcome.policy = self._policies.get(cell.id)
        except Exception as err:  # each cell fails on its own; a bug in a method must not sink the sweep
            log.debug("cell %s failed", cell.id, exc_info=True)
            line = f"{type(err).__name__}: {err}"
            outcome = CellOutcome(index, self.failed_records(cell, err), f"FAILED: {line}", True, line, exception=err)
        outcome.wall_s = time.perf_counter() - start
        stages = self._stage
        outcome.stages = {**stages, "explain": dict(stages["explain"]), "metrics": dict(stages["metrics"])}
        outcome.exports = self._exports
        outcome.worker = f"{socket.gethostname()}:{os.getpid()}"
        return outcome

    def lost_outcome(self, index: int, err: BaseException) -> CellOutcome:
        """The outcome of a cell whose worker died (killed, out of memory) before it could report."""
        cell = self.cells()[index]
        line = f"worker lost: {type(err).__name__}: {err}"
        return CellOutcome(index, self.failed_records(cell, RuntimeError(line)), f"FAILED: {line}", True, line)

    def measure(
        self, cell: CellSpec, model_key: str, spec: PluginSpec, metric: Metric, ectx: EvalContext
    ) -> list[Record]:
        if metric.requires_masks and ectx.data.masks is None:
            log.info("%s: %s needs masks; %s has none, skipped", cell.id, spec.display, cell.dataset.display)
            return []
        if not metric.uses_explanations:
            return self._measure(cell, model_key, spec, metric, ectx, None)
        only = self.suite.evaluation.explain_datasets
        if only is not None and cell.dataset.display not in only:
            return []
        records = []
        for name in self.explainers:
            if not self.explains(name, cell):
                continue
            ctx = ectx.with_explainer(name)
            if ctx.explanations() is None:
                log.info("%s: explainer %s does not apply to %s, skipped", cell.id, name, cell.method.display)
                continue
            records.extend(self._measure(cell, model_key, spec, metric, ctx, name))
        return records

    def explains(self, explainer: str, cell: CellSpec) -> bool:
        """Whether the suite scores ``explainer`` (a row label) for ``cell``'s method.

        No when the explainer row's ``methods`` leave the method out, and no for every explainer
        but ``native`` on a method whose model classifies as the cell it builds on
        (``Method.classifies_as_required``: TAME) when the suite scores that cell with it too:
        the values would repeat that cell's (Grad-CAM of the same frozen weights).
        """
        spec = next(spec for spec in self.suite.explainers if spec.display == explainer)
        if spec.methods is not None and cell.method.display not in spec.methods:
            return False
        if spec.name != "native" and METHODS.get(cell.method.name).classifies_as_required:
            required = self.required_cell(cell)
            if required is not None and required.id in {c.id for c in self.cells()}:
                return not self.explains(explainer, required)
        return True

    def _measure(
        self, cell: CellSpec, model_key: str, spec: PluginSpec, metric: Metric, ectx: EvalContext, explainer: str | None
    ) -> list[Record]:
        key = self.metric_key(model_key, cell, spec, metric, explainer)
        cached = self.cache.load_json("metrics", key)
        if cached is not None:
            results = [MetricResult(**r) for r in cached["results"]]
            elapsed = float(cached["time_s"])
        else:
            explained = sum(self._stage["explain"].values())
            start = time.perf_counter()
            results = metric.compute(ectx)
            # The explanation maps a metric is the first to ask for are the explain stage's, not its own.
            elapsed = time.perf_counter() - start - (sum(self._stage["explain"].values()) - explained)
            self._stage["metrics"][spec.display] += elapsed
            self.cache.save_json(
                "metrics",
                key,
                {"results": [r.__dict__ for r in results], "time_s": elapsed},
                {"cell": cell.id, "metric": spec.display},
            )
        return [self.record(cell, spec, metric, r, elapsed, explainer=explainer) for r in results]

    def record(
        self,
        cell: CellSpec,
        spec: PluginSpec,
        metric: Metric,
        result: MetricResult | None,
        time_s: float | None,
        error: str | None = None,
        explainer: str | None = None,
    ) -> Record:
        config, setup = self.identity(cell)
        return Record(
            suite=self.suite.name,
            dataset=cell.dataset.display,
            method=cell.method.display,
            seed=cell.seed,
            metric=spec.display,
            value=None if result is None else result.value,
            exit=None if result is None else result.exit,
            explainer=explainer,
            n=None if result is None else result.n,
            higher_is_better=metric.higher_is_better,
            category=metric.category,
            display={**metric.display(), **({"label": spec.label} if spec.label else {})},
            params={
                **metric.param_dict(),
                **({} if explainer is None else {"explainer": self.explainer_identity(explainer)["params"]}),
                **({} if result is None else result.params),
            },
            versions=self.versions,
            git=self.git,
            device=str(self.device),
            time_s=time_s,
            status="ok" if error is None else "failed",
            error=error,
            method_name=cell.method.name,
            cell=cell.id,
            config=config,
            setup=setup,
        )

    def failed_records(self, cell: CellSpec, err: BaseException) -> list[Record]:
        text = _error_text(err)
        return [self.record(cell, spec, metric, None, None, error=text) for spec, metric in self.metrics]

    # the sweep -----------------------------------------------------------------------
    def run(self) -> RunResult:
        start = time.perf_counter()
        out = self.suite.output_dir
        timings: dict[str, Any] = {"data": {}}
        # Load every dataset before creating or training anything: missing data is an
        # input error and must stop the run before it spends time or writes folders.
        for spec in self.suite.datasets:
            t0 = time.perf_counter()
            self.data_for(spec)
            timings["data"][spec.display] = time.perf_counter() - t0
        _check_output(out)
        threads = torch.get_num_threads()
        with output_lock(out):
            executor = self._executor()
            staging = _prepare_output(out)
            try:
                exporter = (
                    ReferenceWriter(self.opt.export_reference, self.suite.name, self.git, self.versions)
                    if self.opt.export_reference is not None
                    else None
                )
                result = self._run_cells(out, executor, exporter)
                t0 = time.perf_counter()
                self._write(staging, result.records)
                timings["report"] = time.perf_counter() - t0
                result.time_s = time.perf_counter() - start
                result.timings = {**timings, **result.timings, "total": result.time_s}
                atomic_write_text(staging / "timings.json", json.dumps(result.timings, indent=1))
                summary = {
                    "suite": self.suite.name,
                    "source": self.source,
                    "cells": len(self.cells()),
                    "failed_cells": result.failed_cells,
                    "time_s": result.time_s,
                    "executor": executor.name,
                    "jobs": self.jobs if executor.name == "local" else None,
                    "device": device_description(self.device),
                    "data_sources": self.sources,
                    "cache_dir": str(self.cache.root),
                    "versions": self.versions,
                    "git": self.git,
                }
                atomic_write_text(staging / RESULT_MARKER, json.dumps(summary, indent=1))
                _publish(staging, out)
                if exporter is not None:
                    exporter.write()
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                torch.set_num_threads(threads)  # resources.cpus applies to this run only
        return result

    def cells(self) -> list[CellSpec]:
        """Every (dataset, method, seed), in suite order; a method row with ``datasets`` runs on those only."""
        return [
            CellSpec(d, m, s)
            for d in self.suite.datasets
            for m in self.suite.methods
            if m.datasets is None or d.display in m.datasets
            for s in self.suite.seeds
        ]

    def _executor(self) -> Executor:
        """The executor the options ask for; worker threads per cell follow ``resources.cpus``."""
        cpus = self.suite.resources.cpus
        if self.opt.executor == "local" and self.jobs <= 1:
            if cpus is not None:
                torch.set_num_threads(cpus)
            return SerialExecutor(self)
        # Workers print nothing (the driver echoes one line per finished cell) and export through the driver.
        # They leave timing metrics to the driver, which measures them alone (see _measure_timings).
        options = replace(self.opt, progress=False, echo=_silent, timings=False)
        if self.opt.executor == "ray":
            return RayExecutor(Job(self.suite, options, self.source, cpus or 1), self.opt.address)
        threads = cpus or max(1, cpu_count() // self.jobs)
        return ProcessExecutor(Job(self.suite, options, self.source, threads), self.jobs)

    @property
    def jobs(self) -> int:
        """Cells at a time with the local executor: ``--jobs``, else the suite's ``resources.jobs``."""
        if self.opt.jobs is not None:
            return self.opt.jobs
        jobs, cpus = self.suite.resources.jobs, self.suite.resources.cpus
        return max(1, cpu_count() // (cpus or 1)) if jobs == "auto" else jobs

    def cell_cost(self, cell: CellSpec) -> float:
        """A rough cost of ``cell`` in seconds of one thread, to start the longest cells first.

        :meth:`seconds_per_image` × :meth:`images_through`. Timing the real network sees what a
        MACs count misses: Coded ResNeXt's grouped convolutions take 4–5× the baseline's
        time per image for 2.7× its MACs.
        """
        return self.seconds_per_image(cell) * self.images_through(cell)

    def seconds_per_image(self, cell: CellSpec) -> float:
        """One timed forward pass of the untrained model on 16 test images (CPU, the cells' thread count).

        Measured once per (dataset, method row): seeds change the weights, not the network.
        """
        key = (cell.dataset.display, cell.method.display)
        if key not in self._per_image:
            self._per_image[key] = self._time_forward(cell)
        return self._per_image[key]

    def _time_forward(self, cell: CellSpec) -> float:
        data = self.data_for(cell.dataset)
        method = self.method_for(cell, data)
        threads = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.set_num_threads(self.suite.resources.cpus or 1)
                x = data.test.images[:16]
                model = self.build_model(method).eval()
                (seconds,) = time_calls(model, [x], warmup=1, device=torch.device("cpu"))
                return seconds / len(x)
        finally:
            torch.set_num_threads(threads)

    def images_through(self, cell: CellSpec) -> int:
        """Images the cell pushes through its model, counted in forward passes.

        3 per training image and epoch (forward and backward) unless the model is cached, one
        per test image, and ``EXPLAIN_FORWARDS`` per explained image and explainer.
        """
        data = self.data_for(cell.dataset)
        images = len(data.test)
        if not self.cache.has_model(self.model_key(cell)):
            limit = self.suite.training.limit
            n_train = len(data.train) if limit is None else min(limit, len(data.train))
            images += 3 * n_train * self.suite.training.epochs
        only = self.suite.evaluation.explain_datasets
        if any(m.uses_explanations for _, m in self.metrics) and (only is None or cell.dataset.display in only):
            explained = min(self.suite.evaluation.explain_limit or len(data.test), len(data.test))
            images += EXPLAIN_FORWARDS * explained * sum(self.explains(name, cell) for name in self.explainers)
        return images

    def start_order(self, cells: list[CellSpec], needs: dict[int, int | None]) -> list[int]:
        """Cell indices, longest critical path first: a cell's own cost plus that of what waits on it."""
        try:
            cost = [self.cell_cost(c) for c in cells]
        except Exception:  # an estimate only: a cell that cannot even be built fails in its worker, with its error
            log.debug("cell cost estimate failed; starting cells in suite order", exc_info=True)
            return list(range(len(cells)))
        path = list(cost)
        for _ in cells:  # chains are short; relax until stable (a cycle is reported by the caller)
            for i, parent in needs.items():
                if parent is not None:
                    path[parent] = max(path[parent], cost[parent] + path[i])
        order = sorted(range(len(cells)), key=lambda i: -path[i])
        log.info("start order: %s", ", ".join(f"{cells[i].id} ({path[i]:.0f}s)" for i in order))
        return order

    def _run_cells(self, out: Path, executor: Executor, exporter: ReferenceWriter | None) -> RunResult:
        """Run every cell on ``executor``, longest first; a cell starts once the cell it builds on has finished."""
        cells = self.cells()
        index = {c.id: i for i, c in enumerate(cells)}
        needs = {i: index.get(r.id) if (r := self.required_cell(c)) is not None else None for i, c in enumerate(cells)}
        capacity = {"local": max(1, self.jobs)}.get(executor.name, len(cells))
        outcomes: dict[int, CellOutcome] = {}
        # Order only matters when several cells run at once; one at a time keeps the suite's order.
        parallel = not isinstance(executor, SerialExecutor) and capacity > 1 and len(cells) > 1
        waiting = self.start_order(cells, needs) if parallel else list(range(len(cells)))
        running: list[tuple[Any, int]] = []
        try:
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
                    outcome = result if isinstance(result, CellOutcome) else self.lost_outcome(i, result)
                    outcomes[i] = outcome
                    self.opt.echo(
                        f"[{len(outcomes)}/{len(cells)}] {cells[i].id}: {_summary(outcome.records)} "
                        f"({outcome.note}; {outcome.wall_s:.1f}s)"
                    )
                    if self.opt.fail_fast and outcome.failed:
                        raise CellFailed(
                            f"cell {cells[i].id} failed: {outcome.error or outcome.note}"
                        ) from outcome.exception
        except BaseException:
            executor.close(cancel=True)
            raise
        executor.close()
        if not isinstance(executor, SerialExecutor):
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

    def _measure_timings(self, cells: list[CellSpec], outcomes: dict[int, CellOutcome]) -> None:
        """Timing metrics of a parallel run, measured here one cell at a time once every cell has finished.

        A latency measured while other cells train on the same machine measures the load, not the
        model; so workers skip timing metrics and the driver measures them on an otherwise idle
        machine (each model comes from the cache). Records keep the suite's metric order.
        """
        if not any(metric.measures_time for _, metric in self.metrics):
            return
        order = {spec.display: i for i, (spec, _) in enumerate(self.metrics)}
        timed = [i for i in sorted(outcomes) if not outcomes[i].error]
        for n, i in enumerate(timed, 1):
            cell, outcome = cells[i], outcomes[i]
            start = time.perf_counter()
            self._stage, self._exports = _new_stages(), []
            if outcome.policy is not None:  # calibrated by the worker: the same model, the same thresholds
                self._policies[cell.id] = outcome.policy
            try:
                records, _, _ = self.run_cell(cell, self.data_for(cell.dataset), only_timings=True)
            except Exception as err:  # the model was trained; only its timing failed
                log.debug("cell %s: timing failed", cell.id, exc_info=True)
                records = [
                    self.record(cell, spec, metric, None, None, error=_error_text(err))
                    for spec, metric in self.metrics
                    if metric.measures_time
                ]
            outcome.records = sorted(outcome.records + records, key=lambda r: order.get(r.metric, len(order)))
            outcome.failed = outcome.failed or any(r.status == "failed" for r in records)
            for name, sec in self._stage["metrics"].items():
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
        write_report(records, staging, f"xbench: {self.suite.name}", staging / "saliency")

    def cell_saliency(self, cell: CellSpec, ectx: EvalContext) -> dict[str, Any] | None:
        """The first explained images and their maps from every explainer the cell computed (first seed only)."""
        n = self.saliency_images
        done = [name for name in self.explainers if ectx.has_explanations(name)]
        if not done or cell.seed != self.suite.seeds[0]:
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

    def merge_saliency(self, cell: CellSpec, sample: dict[str, Any] | None) -> None:
        """Add a cell's saliency sample to its dataset's grid (every cell of a dataset explains the same images)."""
        if sample is None:
            return
        grid = self._saliency.setdefault(cell.dataset.display, {**sample, "maps": {}})
        grid["maps"].update(sample["maps"])


def _new_stages() -> dict[str, Any]:
    return {"train": 0.0, "explain": defaultdict(float), "metrics": defaultdict(float)}


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


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}\n{''.join(traceback.format_exception(err))}"


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
    return Runner(suite, options or RunOptions(), source).run()
