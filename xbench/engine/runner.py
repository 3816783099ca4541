"""Run a suite: expand it into cells, train or load each, measure, write results.

A cell is one (dataset, method, seed). Each cell fails on its own: its error
and traceback go into its records and the sweep goes on. Results are first
written to a hidden folder next to the output folder and moved into place only
when the run ends, so an interrupted or rejected run never leaves a
half-written output folder; trained models and metric values are in the cache
by then, so running the same command again resumes where the run stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xbench.data.base import ImageSplit
from xbench.engine import exits as exits_module
from xbench.engine import train as train_module
from xbench.engine.cache import Cache, atomic_write_text, cache_key, default_cache_dir
from xbench.engine.evaluate import EvalContext
from xbench.engine.provenance import code_fingerprint, device_description, git_revision, resolve_device, versions
from xbench.engine.reference import ReferenceModels, ReferenceWriter
from xbench.engine.train import train
from xbench.errors import CheckpointError, ConfigError, OutputError, XBenchError
from xbench.explain.base import Explainer
from xbench.methods.base import Method, MethodContext
from xbench.metrics.base import Metric, MetricResult
from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS
from xbench.report.records import Record, write_records
from xbench.suite import PluginSpec, Suite, dump_suite, validate_plugins

log = logging.getLogger(__name__)

RESULT_MARKER = "run.json"


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


@dataclass
class RunResult:
    out_dir: Path
    records: list[Record]
    failed_cells: list[str] = field(default_factory=list)
    time_s: float = 0.0


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


def _prepare_output(out: Path) -> Path:
    """Check that ``out`` can be (re)written and create the hidden staging folder."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RESULT_MARKER).exists():
        raise OutputError(f"{out}: output folder is not empty and holds no xbench results; choose another output")
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"{out}: cannot create the output folder: {blocker} is a file")
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
        self.exporter = (
            ReferenceWriter(options.export_reference, suite.name, self.git, self.versions)
            if options.export_reference is not None
            else None
        )
        self._identities: dict[str, tuple[dict[str, Any], str]] = {}
        self._mask_cells: set[str] = set()  # cells whose training used ground-truth masks
        self._saliency: dict[str, dict[str, Any]] = {}  # per dataset: images and maps for the report's grid
        self.saliency_images = 8

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
            maps: torch.Tensor | None = compute()
            payload = {"maps": maps} if maps is not None else {"absent": torch.ones(())}
            self.cache.save_model(key, payload, {"cell": cell.id, "explainer": name}, kind="explanations")
            return maps

        return store

    # one cell --------------------------------------------------------------------
    def trained_model(self, cell: CellSpec, data: CellData) -> tuple[Method, torch.nn.Module, str, str]:
        """``(method, model in eval mode on the device, model key, note)``: loaded from the cache or trained.

        A method that ``requires`` another cell (TAME: the baseline) gets that cell's
        model first, trained or loaded the same way.
        """
        train_split = data.train
        method_params = self._params("methods", cell.method)
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
        method: Method = METHODS.get(cell.method.name)(method_params, ctx)
        if method.uses_masks(train_split):
            self._mask_cells.add(cell.id)
        torch.manual_seed(cell.seed)
        model = method.build()
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
            stats = train(
                method, model, train_split, self.suite.training, self.device, cell.seed,
                desc=cell.id, progress=self.opt.progress,
            )  # fmt: skip
            self.cache.save_model(key, model.state_dict(), {"cell": cell.id, "train": stats.__dict__})
            train_note = f"trained {stats.time_s:.1f}s"
        model.to(self.device).eval()
        if self.exporter is not None:
            self.exporter.add(cell.id, model.state_dict(), self.identity(cell)[0])
        return method, model, key, train_note

    def run_cell(self, cell: CellSpec, data: CellData) -> tuple[list[Record], str]:
        method, model, key, train_note = self.trained_model(cell, data)
        ectx = EvalContext(
            model, method, data.test, self.device, self.suite.evaluation.batch_size,
            desc=cell.id, progress=self.opt.progress, train=data.train, holdout=data.holdout,
            explainers=self.explainers, explain_limit=self.suite.evaluation.explain_limit,
            seed=cell.seed, store=self.map_store(cell, key),
        )  # fmt: skip
        records: list[Record] = []
        for spec, metric in self.metrics:
            try:
                records.extend(self.measure(cell, key, spec, metric, ectx))
            except Exception as err:  # one broken metric fails its own column, not the cell's other numbers
                if self.opt.fail_fast:
                    raise
                log.debug("cell %s: metric %s failed", cell.id, spec.display, exc_info=True)
                records.append(self.record(cell, spec, metric, None, None, error=_error_text(err)))
        self.keep_saliency(cell, ectx)
        failed = [r.metric for r in records if r.status == "failed"]
        if failed:
            train_note += f"; FAILED metrics: {', '.join(dict.fromkeys(failed))}"
        return records, train_note

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
            ctx = ectx.with_explainer(name)
            if ctx.explanations() is None:
                log.info("%s: explainer %s does not apply to %s, skipped", cell.id, name, cell.method.display)
                continue
            records.extend(self._measure(cell, model_key, spec, metric, ctx, name))
        return records

    def _measure(
        self, cell: CellSpec, model_key: str, spec: PluginSpec, metric: Metric, ectx: EvalContext, explainer: str | None
    ) -> list[Record]:
        key = self.metric_key(model_key, cell, spec, metric, explainer)
        cached = self.cache.load_json("metrics", key)
        if cached is not None:
            results = [MetricResult(**r) for r in cached["results"]]
            elapsed = float(cached["time_s"])
        else:
            start = time.perf_counter()
            results = metric.compute(ectx)
            elapsed = time.perf_counter() - start
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
        # Load every dataset before creating or training anything: missing data is an
        # input error and must stop the run before it spends time or writes folders.
        data = {spec.display: self.load_data(i, spec) for i, spec in enumerate(self.suite.datasets)}
        staging = _prepare_output(out)
        try:
            result = self._run_cells(out, data)
            self._write(staging, result.records)
            result.time_s = time.perf_counter() - start
            summary = {
                "suite": self.suite.name,
                "source": self.source,
                "cells": len(self.cells()),
                "failed_cells": result.failed_cells,
                "time_s": result.time_s,
                "device": device_description(self.device),
                "data_sources": self.sources,
                "cache_dir": str(self.cache.root),
                "versions": self.versions,
                "git": self.git,
            }
            atomic_write_text(staging / RESULT_MARKER, json.dumps(summary, indent=1))
            _publish(staging, out)
            if self.exporter is not None:
                self.exporter.write()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return result

    def cells(self) -> list[CellSpec]:
        return [CellSpec(d, m, s) for d in self.suite.datasets for m in self.suite.methods for s in self.suite.seeds]

    def _run_cells(self, out: Path, data: dict[str, CellData]) -> RunResult:
        records: list[Record] = []
        failed: list[str] = []
        cells = self.cells()
        for i, cell in enumerate(cells, 1):
            start = time.perf_counter()
            try:
                cell_records, note = self.run_cell(cell, data[cell.dataset.display])
            except Exception as err:  # each cell fails on its own; a bug in a method must not sink the sweep
                if self.opt.fail_fast:
                    raise CellFailed(f"cell {cell.id} failed: {type(err).__name__}: {err}") from err
                log.debug("cell %s failed", cell.id, exc_info=True)
                cell_records, note = self.failed_records(cell, err), f"FAILED: {type(err).__name__}: {err}"
                failed.append(cell.id)
            if cell.id not in failed and any(r.status == "failed" for r in cell_records):
                failed.append(cell.id)  # a metric failed: the run's exit code says so
            records.extend(cell_records)
            self.opt.echo(
                f"[{i}/{len(cells)}] {cell.id}: {_summary(cell_records)} ({note}; {time.perf_counter() - start:.1f}s)"
            )
        return RunResult(out, records, failed)

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

    def keep_saliency(self, cell: CellSpec, ectx: EvalContext) -> None:
        """Keep the first explained images' maps of every explainer the cell computed (for the report's grid)."""
        n = self.saliency_images
        done = [name for name in self.explainers if ectx.has_explanations(name)]
        if not done:
            return
        data = ectx.explain_data()
        sample = self._saliency.setdefault(
            cell.dataset.display,
            {
                "images": data.images[:n].numpy(),
                "labels": data.labels[:n].numpy(),
                "masks": None if data.masks is None else data.masks[:n].numpy(),
                "maps": {},
            },
        )
        for name in done:
            maps = ectx.explanations(name)
            if maps is not None and cell.seed == self.suite.seeds[0]:
                sample["maps"][(cell.method.display, name)] = maps[:n].numpy().clip(0, 1)


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
