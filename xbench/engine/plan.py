"""What a suite asks for: its cells, their settings, which cell builds on which.

A :class:`Plan` is a pure function of the suite (and the plugin registries): it validates
every plugin's parameters once, expands the suite into cells, answers questions about
them (the cell a method requires, whether an explainer is scored for a method, a cell's
settings) and resolves each cell once from those answers into the frozen
:class:`~xbench.engine.resolved.ResolvedCell` the engine runs. Nothing here trains, measures
or writes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from xbench.engine.keys import model_key, setup_hash
from xbench.engine.provenance import versions
from xbench.engine.resolved import CellData, ResolvedCell
from xbench.errors import CheckpointError, ConfigError, XBenchError
from xbench.explain.base import Explainer
from xbench.metrics.base import Metric
from xbench.models.weights import file_sha256
from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS
from xbench.suite import PluginSpec, Suite, TrainingConfig, validate_plugins


@dataclass
class CellSpec:
    dataset: PluginSpec
    method: PluginSpec
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset.display}/{self.method.display}/seed{self.seed}"


class Plan:
    """A validated suite: its cells, metrics and explainers, and each cell's settings.

    Args:
        suite: the resolved suite.
        source: where it came from (a file name), for error messages.
    """

    def __init__(self, suite: Suite, source: str = "suite") -> None:
        self.suite = suite
        self.source = source
        # Validated once: by load_suite when it loaded the suite, else here.
        self.params = suite.validated_plugins() or validate_plugins(suite, source)
        self.metrics: list[tuple[PluginSpec, Metric]] = [
            (spec, METRICS.get(spec.name)(self.params["metrics"][spec.display])) for spec in suite.metrics
        ]
        self.explainers: dict[str, Explainer] = {
            spec.display: EXPLAINERS.get(spec.name)(self.params["explainers"][spec.display])
            for spec in suite.explainers
        }
        self._resolved: dict[str, ResolvedCell] = {}

    # -- cells -----------------------------------------------------------------------
    def cells(self) -> list[CellSpec]:
        """Every (dataset, method, seed), in suite order; a method row with ``datasets`` runs on those only."""
        return [
            CellSpec(d, m, s)
            for d in self.suite.datasets
            for m in self.suite.methods
            if m.datasets is None or d.display in m.datasets
            for s in self.suite.seeds
        ]

    def required_cell(self, cell: CellSpec) -> CellSpec | None:
        """The cell whose trained model ``cell``'s method builds on (same dataset and seed), if any."""
        requires = METHODS.get(cell.method.name).required_method(self.row_params("methods", cell.method))
        if requires is None:
            return None
        # The suite's own row of that method on the same backbone (its label and params) if it lists one,
        # else the defaults on this cell's backbone.
        backbone = self.backbone_identity(cell.method)
        listed = next(
            (m for m in self.suite.methods if m.name == requires and self.backbone_identity(m) == backbone), None
        )
        if listed is not None:
            return CellSpec(cell.dataset, listed, cell.seed)
        spec = PluginSpec(name=requires, backbone=cell.method.backbone)
        if spec.display in {m.display for m in self.suite.methods}:
            # A row of that label on another backbone: its params, row backbone and cell id are not this cell's.
            label = f"{requires} (for {cell.method.display})"
            spec = PluginSpec(name=requires, label=label, backbone=cell.method.backbone)
        return CellSpec(cell.dataset, spec, cell.seed)

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
        method = METHODS.get(cell.method.name)
        if spec.name != "native" and method.classifies_like_required(self.row_params("methods", cell.method)):
            required = self.required_cell(cell)
            if required is not None and required.id in {c.id for c in self.cells()}:
                return not self.explains(explainer, required)
        return True

    def explained_on(self, cell: CellSpec) -> bool:
        """Whether explanation metrics run on ``cell``'s dataset (``evaluation.explain_datasets``)."""
        only = self.suite.evaluation.explain_datasets
        return only is None or cell.dataset.display in only

    # -- settings --------------------------------------------------------------------
    def row_params(self, kind: str, spec: PluginSpec) -> BaseModel:
        """Validated params of a suite row; a required method the suite does not list gets its defaults."""
        if spec.display in self.params[kind]:
            params: BaseModel = self.params[kind][spec.display]
            return params
        return METHODS.get(spec.name).Params()

    def dump(self, kind: str, spec: PluginSpec) -> dict[str, Any]:
        return self.row_params(kind, spec).model_dump(mode="json")

    def backbone_of(self, method: PluginSpec) -> tuple[PluginSpec, BaseModel]:
        """A method row's backbone (its own, or the suite's) and its validated params."""
        if method.backbone is None:
            return self.suite.backbone, self.params["backbone"][self.suite.backbone.display]
        if method.display in self.params["row_backbones"]:
            return method.backbone, self.params["row_backbones"][method.display]
        # A required method the suite does not list, on the requiring row's backbone: validated like it.
        return method.backbone, BACKBONES.get(method.backbone.name).Params.model_validate(method.backbone.params)

    def backbone_identity(self, method: PluginSpec) -> dict[str, Any]:
        """What a cell's numbers depend on of its backbone: name, params, and the weights' name and sha256."""
        spec, params = self.backbone_of(method)
        identity: dict[str, Any] = {"name": spec.name, "params": params.model_dump(mode="json")}
        weights = BACKBONES.get(spec.name).weights_identity(params)
        if weights is not None:  # absent without weights: the records of suites from before weights existed
            identity["weights"] = weights
        return identity

    def checkpoint_identity(self, method: PluginSpec) -> dict[str, Any] | None:
        """A method row's ``checkpoint`` file and its sha256, or None."""
        if method.checkpoint is None:
            return None
        return {"path": str(method.checkpoint), "sha256": file_sha256(method.checkpoint)}

    def cell_config(self, cell: CellSpec) -> dict[str, Any]:
        """Everything a cell's numbers depend on but the seed and the code (recorded in each record)."""
        config = {
            "dataset": {"name": cell.dataset.name, "params": self.dump("datasets", cell.dataset)},
            "method": {"name": cell.method.name, "params": self.dump("methods", cell.method)},
            "backbone": self.backbone_identity(cell.method),
            "training": self.training(cell).model_dump(mode="json"),
            "evaluation": self.suite.evaluation.model_dump(mode="json"),
        }
        checkpoint = self.checkpoint_identity(cell.method)
        if checkpoint is not None:
            config["checkpoint"] = checkpoint
        return config

    def training(self, cell: CellSpec) -> TrainingConfig:
        """The cell's training settings: the suite's, with its method row's ``training`` applied."""
        return self.suite.training_for(cell.method)

    # -- resolution ------------------------------------------------------------------
    @functools.cached_property
    def resolved(self) -> list[ResolvedCell]:
        """Every cell of :meth:`cells`, resolved once (see :mod:`xbench.engine.resolved`).

        Resolving hashes the weights files, so the driver asks for it after :meth:`check_weights`;
        the resolved cells travel to workers with the pickled plan.
        """
        return [self.resolve(cell) for cell in self.cells()]

    def resolve(self, cell: CellSpec) -> ResolvedCell:
        """``cell`` with everything running it needs; the cells it builds on are resolved with it."""
        if cell.id not in self._resolved:
            index = next((i for i, c in enumerate(self.cells()) if c.id == cell.id), None)
            self._resolved[cell.id] = self._resolve(cell, index)
        return self._resolved[cell.id]

    def _resolve(self, cell: CellSpec, index: int | None) -> ResolvedCell:
        required = self.required_cell(cell)
        resolved_required = None if required is None else self.resolve(required)
        backbone, backbone_params = self.backbone_of(cell.method)
        config = self.cell_config(cell)
        method_class = METHODS.get(cell.method.name)
        plugins = (method_class, BACKBONES.get(backbone.name), DATASETS.get(cell.dataset.name))
        requires = None if resolved_required is None else resolved_required.model_key
        scored = [name for name in self.explainers if self.explains(name, cell)] if self.explained_on(cell) else []
        return ResolvedCell(
            index=index,
            dataset=cell.dataset,
            method=cell.method,
            seed=cell.seed,
            method_class=method_class,
            method_params=self.row_params("methods", cell.method),
            backbone=backbone,
            backbone_params=backbone_params,
            training=self.training(cell),
            evaluation=self.suite.evaluation,
            channels_last=self.suite.resources.channels_last,
            config_json=json.dumps(config),  # in the order records have always had
            setup=setup_hash(config),
            claims=tuple(c.model_dump(mode="json") for c in method_class.claims),
            metrics=tuple(self.metrics),
            explainers=self.explainers,
            scored=tuple(scored),
            model_key=model_key(config, cell.seed, versions()["torch"], plugins, requires),
            required=resolved_required,
            checkpoint=cell.method.checkpoint,
            checkpoint_where=f"{self.source}: {self._row_where(cell.method)}",
            saliency=cell.seed == self.suite.seeds[0],
        )

    def check_weights(self, data_of: Callable[[PluginSpec], CellData]) -> None:
        """Read every row's backbone weights and checkpoint once, before any cell starts.

        A missing, truncated or unsafe file, weights that need a download that fails, or tensors that
        do not fit the model are a one-line :class:`~xbench.errors.CheckpointError` (exit 2) while
        nothing is written yet. Rows without weights or checkpoint cost nothing here.
        """
        seen: set[tuple[str, str]] = set()
        for cell in self.cells():
            where = f"{self.source}: {self._row_where(cell.method)}"
            try:
                backbone = self.backbone_identity(cell.method)  # fetches and hashes the weights
            except XBenchError as err:  # a missing file, a failed download: the key that names them
                row = "backbone" if cell.method.backbone is None else f"{self._row_where(cell.method)}.backbone"
                raise CheckpointError(f"{self.source}: {row}.params.weights: {err}") from err
            key = (cell.dataset.display, cell.method.display)
            if ("weights" not in backbone and cell.method.checkpoint is None) or key in seen:
                continue
            seen.add(key)
            try:
                resolved = self.resolve(cell)  # hashes the checkpoint
            except XBenchError as err:
                raise CheckpointError(f"{where}.checkpoint: {err}") from err
            try:
                model = resolved.method_for(data_of(cell.dataset)).build()
            except XBenchError as err:
                raise CheckpointError(f"{where}: {err}") from err
            resolved.load_checkpoint(model)

    def _row_where(self, method: PluginSpec) -> str:
        rows = [m.display for m in self.suite.methods]
        return f"methods[{rows.index(method.display)}]" if method.display in rows else method.display

    # -- data ------------------------------------------------------------------------
    def load_data(self, spec: PluginSpec, data_dir: Path | None = None) -> CellData:
        """Load a dataset row's splits; every cell of the row gets the same ones."""
        index = [d.display for d in self.suite.datasets].index(spec.display)
        dataset = DATASETS.get(spec.name)(
            self.params["datasets"][spec.display], data_dir or self.suite.data.dir, self.suite.data.download
        )
        try:
            train_split = dataset.load("train")
            test_split = dataset.load("test").subset(self.suite.evaluation.limit, seed=0)
        except XBenchError as err:
            raise type(err)(f"{self.source}: datasets[{index}] ({spec.name}): {err}") from err
        holdout = None
        training = self.suite.training
        if training.holdout:
            if training.holdout >= len(train_split):
                raise ConfigError(
                    f"{self.source}: training.holdout: {training.holdout} is not smaller than "
                    f"the {len(train_split)} training images of {spec.display}"
                )
            train_split, holdout = train_split.split_off(training.holdout, seed=0)
        return CellData(train_split.subset(training.limit, seed=0), test_split, holdout, train_split.source)
