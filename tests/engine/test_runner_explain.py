"""The runner's explanation path: per-explainer records, their table, and maps cached on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from xbench.engine.driver import RunOptions, run_suite
from xbench.explain.base import GradCam
from xbench.report.records import read_records
from xbench.suite import Suite


def _suite(tmp: Path, **overrides: Any) -> Suite:
    spec: dict[str, Any] = {
        "name": "explain",
        "datasets": [
            {"name": "synthetic_shapes", "params": {"n_train": 192, "n_test": 64, "image_size": 16, "channels": 3}}
        ],
        "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
        "methods": ["baseline", {"name": "ecr", "params": {"steps": 1}}, {"name": "lap", "params": {"injection": 1}}],
        "metrics": ["top1", {"name": "explanation_consistency", "params": {"steps": 2}}],
        "explainers": ["native", "gradcam", "random"],
        "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "schedule": "constant"},
        "evaluation": {"batch_size": 64, "explain_limit": 48},
        "device": "cpu",
        "output": str(tmp / "out"),
        "cache_dir": str(tmp / "cache"),
    }
    return Suite.model_validate({**spec, **overrides})


def test_explanation_metrics_are_reported_per_explainer_and_maps_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = GradCam.explain

    def counting(self: GradCam, *args: Any, **kwargs: Any) -> torch.Tensor | None:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GradCam, "explain", counting)
    result = run_suite(_suite(tmp_path), RunOptions(progress=False, fail_fast=True, echo=lambda _: None))
    assert calls, "Grad-CAM was never computed"
    records = read_records(tmp_path / "out" / "records.jsonl")
    consistency = {(r.method, r.explainer): r for r in records if r.metric == "explanation_consistency"}
    # The baseline has no maps of its own: no native row. ECR and LAP have all three.
    assert set(consistency) == {
        ("baseline", "gradcam"), ("baseline", "random"),
        ("ecr", "native"), ("ecr", "gradcam"), ("ecr", "random"),
        ("lap", "native"), ("lap", "gradcam"), ("lap", "random"),
    }  # fmt: skip
    assert all(r.n == 48 for r in consistency.values())
    assert all(r.explainer is None for r in records if r.metric == "top1")
    # Two independent random maps have Spearman's ρ ≈ 0: the random row is the chance level.
    assert consistency[("baseline", "random")].value == pytest.approx(0.0, abs=0.02)
    assert consistency[("baseline", "random")].params["similarity"] == "spearman"
    assert consistency[("ecr", "native")].params["explainer"] == {}
    # Explanation metrics get their own table; LAP trained on the shapes' masks is marked.
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## synthetic_shapes · explanations" in md
    assert "| baseline (gradcam) |" in md and "| lap † (native) |" in md
    assert "† trained with ground-truth masks" in md
    assert result.failed_cells == []
    # A re-run with the same cache computes no map: the maps and the values come from disk.
    calls.clear()
    again = run_suite(_suite(tmp_path, output=str(tmp_path / "again")), RunOptions(progress=False, echo=lambda _: None))
    assert calls == []
    assert [r.value for r in again.records] == [r.value for r in result.records]


def test_maps_are_shared_by_metrics_and_explainers_that_do_not_apply_are_remembered(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        methods=["baseline"],
        metrics=[
            {"name": "explanation_consistency", "params": {"steps": 1}},
            {"name": "explanation_consistency", "params": {"steps": 2}, "label": "ec2"},
        ],
    )
    run_suite(suite, RunOptions(progress=False, fail_fast=True, echo=lambda _: None))
    stored = list((tmp_path / "cache" / "explanations").rglob("*.pt"))
    assert len(stored) == 3  # native (absent), gradcam and random: once each for both metrics


def test_a_failing_metric_fails_its_column_only(tmp_path: Path) -> None:
    from xbench.engine.driver import CellFailed
    from xbench.metrics.base import Metric, MetricResult
    from xbench.registry import METRICS

    class Broken(Metric):
        category = "accuracy"
        higher_is_better = True

        def compute(self, ctx: Any) -> list[MetricResult]:
            raise RuntimeError("broken on purpose")

    METRICS.register("broken_for_test", Broken)
    try:
        spec: dict[str, Any] = {"methods": ["baseline"], "metrics": ["top1", "broken_for_test"]}
        result = run_suite(_suite(tmp_path, **spec), RunOptions(progress=False, echo=lambda _: None))
        status = {r.metric: r.status for r in result.records}
        assert status == {"top1": "ok", "broken_for_test": "failed"}
        (broken,) = [r for r in result.records if r.metric == "broken_for_test"]
        assert broken.error is not None and "broken on purpose" in broken.error
        assert result.failed_cells == ["synthetic_shapes/baseline/seed0"]  # so the exit code is 1
        with pytest.raises(CellFailed, match="broken on purpose"):
            run_suite(
                _suite(tmp_path, **spec, output=str(tmp_path / "ff")),
                RunOptions(progress=False, fail_fast=True, echo=lambda _: None),
            )
    finally:
        METRICS.unregister("broken_for_test")


def test_explainer_rows_restricted_to_methods(tmp_path: Path) -> None:
    """``explainers[i].methods``: the random explainer (the chance level) is scored for the baseline only."""
    suite = _suite(
        tmp_path,
        methods=["baseline", {"name": "ecr", "params": {"steps": 1}}],
        explainers=["native", "gradcam", {"name": "random", "methods": ["baseline"]}],
    )
    run_suite(suite, RunOptions(progress=False, fail_fast=True, echo=lambda _: None))
    records = read_records(tmp_path / "out" / "records.jsonl")
    rows = {(r.method, r.explainer) for r in records if r.metric == "explanation_consistency"}
    assert rows == {("baseline", "gradcam"), ("baseline", "random"), ("ecr", "native"), ("ecr", "gradcam")}
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| baseline (random) |" in md and "| ecr (random) |" not in md


@pytest.mark.parametrize(
    ("methods", "explainers", "expected"),
    [
        # TAME classifies with its frozen baseline: Grad-CAM and random maps would repeat the baseline's rows.
        (["baseline", "tame"], ["native", "gradcam", "random"], {"native"}),
        # ... unless the suite does not score the baseline with them
        (["tame"], ["native", "gradcam"], {"native", "gradcam"}),
        (["baseline", "tame"], ["native", {"name": "gradcam", "methods": ["tame"]}], {"native", "gradcam"}),
        # ... or when TAME's training moves the classifier's BatchNorm statistics (the official mode)
        (
            ["baseline", {"name": "tame", "params": {"classifier_mode": "train"}}],
            ["native", "gradcam", "random"],
            {"native", "gradcam", "random"},
        ),
    ],
)
def test_tame_scores_only_its_own_maps_beside_its_baseline(
    tmp_path: Path, methods: list[Any], explainers: list[Any], expected: set[str]
) -> None:
    from xbench.engine.plan import Plan

    plan = Plan(_suite(tmp_path, methods=methods, explainers=explainers))
    tame = next(c for c in plan.cells() if c.method.name == "tame")
    assert {e for e in plan.explainers if plan.explains(e, tame)} == expected


def test_tame_grad_cam_equals_its_baselines(tmp_path: Path) -> None:
    """Why those rows are left out: with the same frozen weights, TAME's Grad-CAM has the baseline's values exactly."""
    runs = {}
    for scored in ("tame", "baseline"):
        out = tmp_path / scored
        suite = _suite(
            tmp_path, methods=["baseline", "tame"], output=str(out),
            explainers=[{"name": "gradcam", "methods": [scored]}, "random"],
        )  # fmt: skip
        run_suite(suite, RunOptions(progress=False, fail_fast=True, echo=lambda _: None))
        records = read_records(out / "records.jsonl")
        runs[scored] = {(r.method, r.explainer): r.value for r in records if r.metric == "explanation_consistency"}
    assert set(runs["tame"]) == {("tame", "gradcam"), ("baseline", "random")}  # TAME's random row: the baseline's
    assert set(runs["baseline"]) == {("baseline", "gradcam"), ("baseline", "random")}
    assert runs["tame"][("tame", "gradcam")] == runs["baseline"][("baseline", "gradcam")]
