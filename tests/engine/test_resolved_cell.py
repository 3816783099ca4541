"""The engine on a cell built by hand: no suite, no plan, no driver.

A :class:`ResolvedCell` is everything :func:`run_cell` reads, and a :class:`Pass` is what one
run of it computes; these tests build both directly and check what each pass computes,
caches and returns.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from xbench.data.base import ImageSplit
from xbench.engine.cache import Cache
from xbench.engine.cell import CellServices, NotCached, probe, run_cell
from xbench.engine.plan import Plan
from xbench.engine.recording import Provenance
from xbench.engine.resolved import MEASURE, PROBE, CellData, ResolvedCell, timing_pass
from xbench.registry import BACKBONES, EXPLAINERS, METHODS, METRICS
from xbench.suite import EvaluationConfig, PluginSpec, Suite, TrainingConfig

BACKBONE = {"depth": 8, "width": 8}


def _split(n: int, seed: int) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 16, 16, generator=g)
    labels = torch.arange(n) % 3
    images[labels == 1, :, :8] += 0.5  # learnable: class 1 is bright on top, class 2 on the left
    images[labels == 2, :, :, :8] += 0.5
    return ImageSplit(images.clamp(0, 1), labels, None, ["a", "b", "c"])


DATA = CellData(_split(96, 0), _split(32, 1), _split(32, 2), source="generated")


def _cell(metrics: list[str], explainers: list[str], scored: list[str], **changes: object) -> ResolvedCell:
    """A baseline cell resolved by hand, the way a plan would resolve it."""
    metric_rows = [PluginSpec(name=m) for m in metrics]
    explainer_rows = [PluginSpec(name=e) for e in explainers]
    config = {"method": "baseline", "by": "hand"}
    cell = ResolvedCell(
        index=0,
        dataset=PluginSpec(name="synthetic_shapes"),
        method=PluginSpec(name="baseline"),
        seed=0,
        method_class=METHODS.get("baseline"),
        method_params=METHODS.get("baseline").Params(),
        backbone=PluginSpec(name="resnet_cifar", params=BACKBONE),
        backbone_params=BACKBONES.get("resnet_cifar").Params.model_validate(BACKBONE),
        training=TrainingConfig(epochs=1, batch_size=32, lr=0.05, schedule="constant"),
        evaluation=EvaluationConfig(batch_size=32, explain_limit=8),
        channels_last=False,
        config_json=json.dumps(config, sort_keys=True),
        setup="handmade0000",
        claims=(),
        metrics=tuple((row, METRICS.get(row.name)(METRICS.get(row.name).Params())) for row in metric_rows),
        explainers={row.display: EXPLAINERS.get(row.name)(EXPLAINERS.get(row.name).Params()) for row in explainer_rows},
        scored=tuple(scored),
        model_key="handmade-model",
        saliency=True,
    )
    return dataclasses.replace(cell, **changes)  # type: ignore[arg-type]


def _services(tmp_path: Path) -> CellServices:
    return CellServices(
        Cache(tmp_path / "cache"), torch.device("cpu"), Provenance("hand", {"torch": "t"}, None, "cpu"), progress=False
    )


def test_each_pass_computes_what_it_declares(tmp_path: Path) -> None:
    cell = _cell(["top1", "latency", "deletion_auc"], ["gradcam", "random"], scored=["gradcam"])
    services = _services(tmp_path)

    # A probe of an empty cache computes nothing: the first thing it lacks stops it.
    with pytest.raises(NotCached, match="model"):
        run_cell(cell, DATA, services, PROBE)
    assert probe(cell, DATA, services) is None
    assert not list((tmp_path / "cache").rglob("*.pt"))

    # The measure pass trains and measures every metric that does not time, each scored explainer once.
    measured = run_cell(cell, DATA, services, MEASURE)
    assert not measured.failed, [r.error for r in measured.records if r.error]
    assert measured.note.startswith("trained")
    assert [(r.metric, r.explainer) for r in measured.records] == [("top1", None), ("deletion_auc", "gradcam")]
    assert {r.setup for r in measured.records} == {"handmade0000"}
    assert measured.records[0].config == {"method": "baseline", "by": "hand", "data_source": "generated",
                                          "uses_masks": False}  # fmt: skip
    assert measured.saliency is not None and set(measured.saliency["maps"]) == {("baseline", "gradcam")}

    # Now the probe serves the same records from the cache, without training.
    served = probe(cell, DATA, services)
    assert served is not None and served.note == "cached"
    assert [(r.metric, r.explainer, r.value) for r in served.records] == [
        (r.metric, r.explainer, r.value) for r in measured.records
    ]

    # The time pass measures the timing metrics only, on the cached model, and adds no saliency.
    timed = run_cell(cell, DATA, services, timing_pass(measured.policy))
    assert [r.metric for r in timed.records] == ["latency"]
    assert timed.records[0].value is not None and timed.records[0].value > 0
    assert timed.note == "cached" and timed.saliency is None


def test_an_explainer_not_scored_is_not_computed(tmp_path: Path) -> None:
    cell = _cell(["deletion_auc"], ["gradcam", "random"], scored=["random"])
    outcome = run_cell(cell, DATA, _services(tmp_path), MEASURE)
    assert [r.explainer for r in outcome.records] == ["random"]
    assert not list((tmp_path / "cache").rglob("explanations/**/*gradcam*"))


def test_a_failing_cell_fails_the_metrics_of_its_pass(tmp_path: Path) -> None:
    broken = _cell(["top1", "latency"], [], scored=[], model_key="broken", backbone=PluginSpec(name="no_such_net"))
    measured = run_cell(broken, DATA, _services(tmp_path), MEASURE)
    assert measured.failed and measured.error is not None and "no_such_net" in measured.error
    assert [r.metric for r in measured.records] == ["top1", "latency"]  # a cell failed as a whole: every metric
    timed = run_cell(broken, DATA, _services(tmp_path), timing_pass(None))
    assert [r.metric for r in timed.records] == ["latency"] and timed.failed


def test_a_resolved_cell_cannot_be_changed(tmp_path: Path) -> None:
    cell = _cell(["top1"], [], scored=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.seed = 1  # type: ignore[misc]
    config = cell.config
    config["by"] = "someone else"
    assert cell.config["by"] == "hand"


def test_the_plan_resolves_what_the_engine_reads(repo_root: Path) -> None:
    """The plan's resolution of a suite: required cells, scored explainers, keys; once per cell."""
    from xbench.suite import load_suite

    suite: Suite = load_suite(repo_root / "suites/smoke.yaml")
    plan = Plan(suite)
    cells = plan.resolved
    assert plan.resolved is cells  # resolved once
    assert [c.id for c in cells] == [c.id for c in plan.cells()]
    assert [c.index for c in cells] == list(range(len(cells)))
    for cell, spec in zip(cells, plan.cells(), strict=True):
        assert cell.config == plan.cell_config(spec)
        required = plan.required_cell(spec)
        assert (cell.required is None) == (required is None)
        if cell.required is not None and required is not None:
            assert cell.required.id == required.id and cell.required.model_key in {c.model_key for c in cells}
        assert cell.scored == tuple(e for e in plan.explainers if plan.explains(e, spec))
        assert cell.saliency == (cell.seed == suite.seeds[0])
    assert len({c.model_key for c in cells}) == len(cells)
