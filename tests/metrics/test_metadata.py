"""Typed metric metadata: enums checked when a metric class is defined, records as they always were."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers import make_seeds

from xbench.errors import ConfigError
from xbench.metadata import Aggregation, Category, Direction
from xbench.metrics.base import Metric
from xbench.params import NoParams
from xbench.registry import METRICS
from xbench.report.records import Record
from xbench.report.stats import CATEGORY_ORDER, statistics

METRICS_PACKAGE = Path(__file__).resolve().parents[2] / "xbench" / "metrics"


def test_enums_are_the_strings_records_hold() -> None:
    assert Category.ACCURACY == "accuracy" and f"{Category.SANITY}" == str(Category.SANITY) == "sanity"
    assert json.dumps([Category.CONSISTENCY, Direction.HIGHER]) == '["consistency", "higher"]'
    assert CATEGORY_ORDER == ("accuracy", "efficiency", "localization", "faithfulness", "consistency", "sanity")
    for value in (True, False, None):
        assert Direction.of(value).higher_is_better is value
    assert [a.value for a in Aggregation] == ["mean", "median"]


@pytest.mark.parametrize("name", METRICS.names())
def test_every_registered_metric_has_typed_metadata(name: str) -> None:
    cls = METRICS.get(name)
    assert isinstance(cls.category, Category) and isinstance(cls.direction, Direction)
    assert isinstance(cls.aggregation, Aggregation)
    assert cls.higher_is_better is cls.direction.higher_is_better


def test_the_builtin_metrics_declare_direction_not_higher_is_better() -> None:
    """Every class in xbench/metrics/** declares ``direction``; ``higher_is_better`` is for older plugins."""
    old = []
    for path in sorted(METRICS_PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else []
                    old += [f"{path.name}:{node.name}" for t in targets if getattr(t, "id", "") == "higher_is_better"]
    assert not old, old


def test_a_plugin_declaring_higher_is_better_gets_a_direction() -> None:
    class Older(Metric[NoParams]):
        category = "accuracy"  # type: ignore[assignment]
        higher_is_better = True

    class Lower(Older):
        higher_is_better = False

    class Timed(Older):
        higher_is_better = None

    assert (Older.category, Older.direction, Older.higher_is_better) == (Category.ACCURACY, Direction.HIGHER, True)
    assert isinstance(Older.category, Category) and Older.aggregation is Aggregation.MEAN
    assert (Lower.direction, Lower.higher_is_better) == (Direction.LOWER, False)
    assert (Timed.direction, Timed.higher_is_better) == (Direction.NONE, None)
    # Its records hold what they held before: the category string and the boolean.
    (record,) = make_seeds("egt", "older", [0.5], category=Older.category, higher_is_better=Older.higher_is_better)
    dumped = json.loads(record.model_dump_json())
    assert (dumped["category"], dumped["higher_is_better"]) == ("accuracy", True)
    assert type(record.category) is str


def test_strings_are_taken_for_their_members() -> None:
    class Declared(Metric[NoParams]):
        category = "faithfulness"  # type: ignore[assignment]
        direction = "lower"  # type: ignore[assignment]
        aggregation = "median"  # type: ignore[assignment]

    assert (Declared.category, Declared.direction, Declared.aggregation) == (
        Category.FAITHFULNESS,
        Direction.LOWER,
        Aggregation.MEDIAN,
    )
    assert Declared.higher_is_better is False


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"category": "robustness"},
            "'robustness' is not a category (valid: 'accuracy', 'efficiency', 'localization', 'faithfulness', "
            "'consistency', 'sanity')",
        ),
        ({"direction": "up"}, "'up' is not a direction (valid: 'higher', 'lower', 'none')"),
        ({"aggregation": "max"}, "'max' is not an aggregation (valid: 'mean', 'median')"),
        ({"higher_is_better": 1}, "higher_is_better must be True, False or None, got 1"),
        ({"higher_is_better": "yes"}, "higher_is_better must be True, False or None, got 'yes'"),
        (
            {"direction": Direction.HIGHER, "higher_is_better": False},
            "higher_is_better = False contradicts direction 'higher'",
        ),
    ],
)
def test_unknown_metadata_is_refused_when_the_class_is_defined(attributes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        type("Robust", (Metric,), {"__module__": "plugin", **attributes})
    assert str(info.value) == f"metric class plugin.Robust: {message}"


def test_a_median_metric_records_its_aggregation_and_is_aggregated_by_it() -> None:
    class Stable(Metric[NoParams]):
        category = Category.EFFICIENCY
        direction = Direction.LOWER
        aggregation = Aggregation.MEDIAN
        label = "Stable time"

    class Plain(Stable):
        aggregation = Aggregation.MEAN

    Stable.name, Plain.name = "stable", "plain"
    assert Stable.display() == {
        "label": "Stable time",
        "unit": "",
        "scale": 1.0,
        "decimals": 2,
        "aggregation": "median",
    }
    assert "aggregation" not in Plain.display()  # a mean metric's records keep their bytes
    fields = {"category": Stable.category, "higher_is_better": Stable.higher_is_better}
    records = make_seeds("egt", "stable", [3.0, 30.0, 4.0], display=Stable.display(), **fields)
    records += make_seeds("egt", "plain", [3.0, 30.0, 4.0], display=Plain.display(), **fields)
    again = [Record.model_validate_json(r.model_dump_json(), strict=True) for r in records]
    cells = statistics(again).cells.set_index("key")
    assert cells.loc["stable", "mean"] == 4.0  # sorted 3, 4, 30: the middle one
    assert cells.loc["plain", "mean"] == pytest.approx(37.0 / 3)
    with pytest.raises(ValueError, match="'mode' is not an aggregation"):
        make_seeds("egt", "stable", [1.0], display={**Stable.display(), "aggregation": "mode"})
