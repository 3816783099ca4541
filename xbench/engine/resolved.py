"""A cell resolved once: everything running it needs but its data and the process's services.

:meth:`xbench.engine.plan.Plan.resolved` turns each (dataset, method, seed) of a suite into a
:class:`ResolvedCell`, once, in the driver: the method class and its validated params, the
backbone, the training and evaluation settings, the cell it builds on, its config and setup
hash, the model's cache key, the paper's claims, the metrics it measures and the explainers it
scores. Workers receive the resolved cells (pickled with the plan) and derive nothing again;
:func:`xbench.engine.cell.run_cell` reads only the cell, its data and a :class:`Pass`.

A :class:`Pass` declares what one run of a cell computes, instead of flags that each
function along the way had to combine:

- ``probe``: compute nothing; the cell's outcome if the cache holds all of it (the driver
  reads a re-run's finished cells this way instead of sending them to workers);
- ``measure``: train or load the model and measure every metric that does not time;
- ``time``: the timing metrics only, measured alone once the other cells are done, with the
  exit policy the measure pass calibrated (so both passes use the same thresholds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from xbench.data.base import ImageSplit
from xbench.methods.base import Method, MethodContext
from xbench.models.weights import load_checked, read_state_dict
from xbench.suite import EvaluationConfig, PluginSpec, TrainingConfig

if TYPE_CHECKING:
    from torch import nn

    from xbench.explain.base import Explainer
    from xbench.metrics.base import Metric
    from xbench.models.exits import ExitPolicy


@dataclass
class CellData:
    """A dataset row's splits, as every cell of that row sees them; ``source``: where it was found."""

    train: ImageSplit
    test: ImageSplit
    holdout: ImageSplit | None = None
    source: str | None = None


@dataclass(frozen=True)
class Pass:
    """What one run of a cell computes (see the module docstring)."""

    kind: Literal["probe", "measure", "time"]
    policy: ExitPolicy | None = None  # time: the exit policy the measure pass calibrated

    @property
    def computes(self) -> bool:
        """Whether this pass may train, explain or compute; a probe raises at the first cache miss."""
        return self.kind != "probe"

    @property
    def timing(self) -> bool:
        return self.kind == "time"

    def runs(self, metric: Metric) -> bool:
        """Whether this pass measures ``metric``: timing metrics in the time pass, every other one otherwise."""
        return bool(metric.measures_time) == self.timing


PROBE = Pass("probe")
MEASURE = Pass("measure")


def timing_pass(policy: ExitPolicy | None) -> Pass:
    """The time pass of a cell whose measure pass calibrated ``policy`` (None: no exits)."""
    return Pass("time", policy)


@dataclass(frozen=True)
class ResolvedCell:
    """One (dataset, method, seed) of a suite, resolved by its plan; see the module docstring.

    Attributes:
        index: the cell's position in the plan; None for a cell that runs only because another
            builds on it (a required method the suite does not list).
        config_json: the cell's config (what its numbers depend on but the seed and the code), as
            canonical JSON so that the value cannot change; :attr:`config` gives a fresh dict.
        setup: the short hash of the config that every record carries.
        claims: the method's paper claims (``Method.claims``), carried by every record.
        metrics: the suite's metrics, (row, instance), in suite order.
        explainers: every explainer row of the suite, by label (metrics look them up by name).
        scored: the explainer rows the cell's explanation metrics score, in suite order.
        model_key: the cache key of the trained model.
        required: the cell whose trained model this one builds on (TAME: the baseline).
        checkpoint_where: where the row's ``checkpoint`` is set, for error messages.
        saliency: whether the cell adds its maps to the report's grid (first seed only).
    """

    index: int | None
    dataset: PluginSpec
    method: PluginSpec
    seed: int
    method_class: type[Method]
    method_params: BaseModel
    backbone: PluginSpec
    backbone_params: BaseModel
    training: TrainingConfig
    evaluation: EvaluationConfig
    channels_last: bool
    config_json: str
    setup: str
    claims: tuple[dict[str, Any], ...]
    metrics: tuple[tuple[PluginSpec, Metric], ...]
    explainers: Mapping[str, Explainer]
    scored: tuple[str, ...]
    model_key: str
    required: ResolvedCell | None = None
    checkpoint: Path | None = None
    checkpoint_where: str = ""
    saliency: bool = False

    @property
    def id(self) -> str:
        return f"{self.dataset.display}/{self.method.display}/seed{self.seed}"

    @property
    def config(self) -> dict[str, Any]:
        """The cell's config (a fresh copy: the resolved value cannot be changed through it)."""
        config: dict[str, Any] = json.loads(self.config_json)
        return config

    def method_for(self, data: CellData) -> Method:
        """The cell's method, configured for its data (its model not built yet)."""
        split = data.train
        ctx = MethodContext(
            num_classes=split.num_classes,
            in_channels=split.in_channels,
            image_size=split.image_size,
            mean=tuple(split.mean),
            std=tuple(split.std),
            backbone=self.backbone.name,
            backbone_params=self.backbone_params.model_dump(mode="json"),
            seed=self.seed,
            required_params=None if self.required is None else self.required.method_params.model_dump(mode="json"),
        )
        return self.method_class(self.method_params, ctx)

    def load_checkpoint(self, model: nn.Module) -> None:
        """Load the method row's ``checkpoint`` (if any) into the freshly built ``model``."""
        if self.checkpoint is not None:
            where = f"{self.checkpoint_where}.checkpoint"
            load_checked(model, read_state_dict(self.checkpoint, where), f"{where} {self.checkpoint}")
