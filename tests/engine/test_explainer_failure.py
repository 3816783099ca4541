"""An explainer that cannot run on a model fails its own (metric, explainer) values, with the reason; the
other explainers and cells finish and the run exits 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from xbench.cli import main
from xbench.explain.base import Explainer
from xbench.methods.base import Method
from xbench.params import NoParams
from xbench.registry import EXPLAINERS


class Refuses(Explainer[NoParams]):
    """Fails on every model: what an explainer that cannot run on a model does."""

    calls = 0

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        Refuses.calls += 1
        raise TypeError("refuses: no rule for Hardswish")


@pytest.fixture
def refusing() -> Iterator[None]:
    EXPLAINERS.register("refuses_for_test", Refuses)
    Refuses.calls = 0
    yield
    EXPLAINERS.unregister("refuses_for_test")


def test_a_failing_explainer_fails_only_its_values(tmp_path: Path, refusing: None) -> None:
    suite = {
        "name": "fails",
        "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 64, "n_test": 32, "image_size": 16}}],
        "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
        "methods": ["baseline"],
        "metrics": ["top1", "pointing_game", "relevance_mass_accuracy"],
        "explainers": ["gradcam", "refuses_for_test"],
        "training": {"epochs": 1, "batch_size": 32},
        "evaluation": {"explain_limit": 8},
        "resources": {"cpus": 1},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    code = main(["run", str(path), "--output", str(out), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert code == 1
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["status"] == "failed"]
    assert {(r["metric"], r["explainer"]) for r in failed} == {
        ("pointing_game", "refuses_for_test"),
        ("relevance_mass_accuracy", "refuses_for_test"),
    }
    assert all(r["error"].startswith("TypeError: refuses: no rule for Hardswish") for r in failed)
    ok = {(r["metric"], r["explainer"]) for r in records if r["status"] == "ok"}
    assert {("top1", None), ("pointing_game", "gradcam"), ("relevance_mass_accuracy", "gradcam")} <= ok
    assert Refuses.calls == 1  # the failure is remembered: the second metric does not run it again
    assert torch.isfinite(torch.tensor([r["value"] for r in records if r["status"] == "ok"])).all()
