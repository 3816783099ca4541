"""The metric contract: metadata as class attributes, one ``compute`` per cell.

Tables sort and bold by ``higher_is_better``, group by ``category`` and format
with ``label``/``unit``/``scale``/``decimals``; all of these travel in each record
so that tables are pure functions of records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, cast

from pydantic import BaseModel

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

    Args:
        params: this metric's validated ``Params`` from the suite (its defaults if None).
    """

    name: ClassVar[str]
    category: ClassVar[str]
    higher_is_better: ClassVar[bool | None]
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

    def __init__(self, params: BaseModel | None = None) -> None:
        # An instance of ``Params``, the model the subclass declares as ``P``.
        self.params = cast(P, params if params is not None else self.Params())

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        """Measure the cell's model; one result, or one per exit."""
        raise NotImplementedError

    @classmethod
    def display(cls) -> dict[str, Any]:
        return {"label": cls.label or cls.name, "unit": cls.unit, "scale": cls.scale, "decimals": cls.decimals}

    def param_dict(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")
