"""The metric contract: metadata as class attributes, one ``compute`` per cell.

Tables sort and bold by ``direction``, group by ``category``, summarise seeds by
``aggregation`` and format with ``label``/``unit``/``scale``/``decimals``; all of these
travel in each record so that tables are pure functions of records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, cast

from pydantic import BaseModel

from xbench.errors import ConfigError
from xbench.metadata import Aggregation, Category, Direction, member
from xbench.metrics.context import EvalContext
from xbench.params import NoParams, P


@dataclass
class MetricResult:
    """One value of a metric; ``exit`` is set for per-exit values."""

    value: float
    n: int | None = None
    exit: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


class Metric(Generic[P]):
    """Base class of every metric, generic over its parameters: ``class Top1(Metric[NoParams])``.

    ``Params`` is the same model at run time (the suite validates a row's params with it).

    Every metric declares ``category`` (:class:`~xbench.metadata.Category`) and ``direction``
    (:class:`~xbench.metadata.Direction`), and may declare ``aggregation``
    (:class:`~xbench.metadata.Aggregation`, the mean by default). They are checked when the class
    is defined: a string is taken for its member (``category = "accuracy"``), an unknown one is a
    :class:`~xbench.errors.ConfigError`. ``higher_is_better`` (True, False or None, as records hold
    it) follows ``direction``; a plugin written before ``direction`` may declare it instead.

    Args:
        params: this metric's validated ``Params`` from the suite (its defaults if None).
    """

    name: ClassVar[str]
    category: ClassVar[Category]
    direction: ClassVar[Direction]
    higher_is_better: ClassVar[bool | None]  # set from ``direction``
    aggregation: ClassVar[Aggregation] = Aggregation.MEAN
    requires_masks: ClassVar[bool] = False
    requires_exits: ClassVar[bool] = False  # returns no values for models without early exits
    # Computed once per suite explainer on ``ctx.with_explainer(name)``; records carry the explainer.
    uses_explanations: ClassVar[bool] = False
    measures_time: ClassVar[bool] = False  # wall-clock values: machine- and load-dependent, never bitwise reproducible
    label: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    scale: ClassVar[float] = 1.0
    decimals: ClassVar[int] = 2
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        try:
            if "category" in own:
                cls.category = member(Category, own["category"])
            if "aggregation" in own:
                cls.aggregation = member(Aggregation, own["aggregation"])
            if "direction" in own:
                cls.direction = member(Direction, own["direction"])
                declared = own.get("higher_is_better", cls.direction.higher_is_better)
                if declared is not cls.direction.higher_is_better:
                    raise ValueError(f"higher_is_better = {declared!r} contradicts direction {cls.direction.value!r}")
            elif "higher_is_better" in own:
                if not (own["higher_is_better"] is None or isinstance(own["higher_is_better"], bool)):
                    raise ValueError(f"higher_is_better must be True, False or None, got {own['higher_is_better']!r}")
                cls.direction = Direction.of(own["higher_is_better"])
        except ValueError as err:
            raise ConfigError(f"metric class {cls.__module__}.{cls.__qualname__}: {err}") from None
        if "direction" in vars(cls):
            cls.higher_is_better = cls.direction.higher_is_better

    def __init__(self, params: BaseModel | None = None) -> None:
        # An instance of ``Params``, the model the subclass declares as ``P``.
        self.params = cast(P, params if params is not None else self.Params())

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        """Measure the cell's model; one result, or one per exit."""
        raise NotImplementedError

    @classmethod
    def display(cls) -> dict[str, Any]:
        """How tables show the metric, as its records carry it; ``aggregation`` only when it is not the mean."""
        shown = {"label": cls.label or cls.name, "unit": cls.unit, "scale": cls.scale, "decimals": cls.decimals}
        if cls.aggregation is not Aggregation.MEAN:
            shown["aggregation"] = cls.aggregation.value
        return shown

    def param_dict(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")
