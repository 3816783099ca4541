"""Reference models: exported from a run, evaluated without training, and refused when tampered with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xbench.engine.driver import RunOptions, run_suite
from xbench.errors import CheckpointError
from xbench.suite import Suite


def _suite(tmp: Path, name: str) -> Suite:
    return Suite.model_validate(
        {
            "name": "ref",
            "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 128, "n_test": 48, "image_size": 16}}],
            "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
            "methods": ["baseline", "tame"],
            "metrics": ["top1", "params"],
            "explainers": ["gradcam"],
            "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "schedule": "constant"},
            "evaluation": {"batch_size": 48},
            "device": "cpu",
            "output": str(tmp / name),
            "cache_dir": str(tmp / f"cache-{name}"),
        }
    )


def _values(records: list[Any]) -> dict[tuple[str, str], float | None]:
    return {(r.method, r.metric): r.value for r in records}


def test_exported_references_reproduce_the_run_without_training(tmp_path: Path) -> None:
    ref = tmp_path / "reference"
    opts: dict[str, Any] = {"progress": False, "fail_fast": True, "echo": lambda _: None}
    trained = run_suite(_suite(tmp_path, "trained"), RunOptions(export_reference=ref, **opts))
    manifest = json.loads((ref / "manifest.json").read_text())
    assert manifest["format"] == "xbench-reference" and set(manifest["cells"]) == {
        "synthetic_shapes/baseline/seed0",
        "synthetic_shapes/tame/seed0",
    }
    assert all((ref / c["file"]).stat().st_size < 1_000_000 for c in manifest["cells"].values())
    lines: list[str] = []
    again = run_suite(_suite(tmp_path, "again"), RunOptions(reference=ref, **{**opts, "echo": lines.append}))
    assert _values(again.records) == _values(trained.records)
    assert all("(reference;" in line for line in lines), lines
    assert not (tmp_path / "cache-again" / "models").exists()  # nothing was trained


def test_a_changed_or_missing_reference_is_refused(tmp_path: Path) -> None:
    ref = tmp_path / "reference"
    opts: dict[str, Any] = {"progress": False, "fail_fast": True, "echo": lambda _: None}
    run_suite(_suite(tmp_path, "trained"), RunOptions(export_reference=ref, **opts))
    manifest = json.loads((ref / "manifest.json").read_text())
    checkpoint = ref / manifest["cells"]["synthetic_shapes/baseline/seed0"]["file"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:-10])  # truncated
    with pytest.raises(CheckpointError, match=r"sha256 differs from manifest\.json"):  # before any cell runs
        run_suite(_suite(tmp_path, "bad"), RunOptions(reference=ref, **opts))
    with pytest.raises(CheckpointError, match="no reference manifest"):
        run_suite(_suite(tmp_path, "none"), RunOptions(reference=tmp_path / "nowhere", **opts))
