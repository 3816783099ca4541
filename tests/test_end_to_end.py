"""suites/smoke.yaml from YAML to leaderboard, and the cache that makes a re-run free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from xbench.cli import main
from xbench.report.records import read_records


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Run the smoke suite once for the module (it trains a model: a few seconds)."""
    tmp = tmp_path_factory.mktemp("smoke")
    out, cache = tmp / "out", tmp / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "xbench", "run", "suites/smoke.yaml", "--output", str(out), "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, cache, proc.stdout


def test_smoke_suite_writes_every_output(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, stdout = smoke_run
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "records.jsonl", "config.yaml", "run.json"):
        assert (out / name).is_file(), name
    assert "[1/1] synthetic_shapes/baseline/seed0" in stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], "staging folder left behind"


def test_smoke_leaderboard_content_matches_records(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, _ = smoke_run
    records = read_records(out / "records.jsonl")
    by_metric = {r.metric: r for r in records if r.exit is None}
    assert set(by_metric) == {"top1", "top5", "params", "flops"}
    top1 = by_metric["top1"]
    assert top1.status == "ok" and top1.dataset == "synthetic_shapes" and top1.method == "baseline"
    assert top1.n == 300  # the smoke suite's test split
    # The shapes are easy: a learned model must beat chance by a wide margin.
    assert top1.value is not None and top1.value > 0.6
    assert top1.versions["torch"] and top1.versions["xbench"]
    assert by_metric["flops"].params["convention"].startswith("multiply-accumulates")
    # The Markdown table shows the same numbers the records hold.
    md = (out / "leaderboard.md").read_text()
    assert f"{top1.value * 100:.2f}" in md
    assert f"{by_metric['params'].value / 1e6:.3f}" in md
    assert "Top-1 [%] ↑" in md and "MACs [M] ↓" in md
    row = next(line for line in md.splitlines() if line.startswith("| baseline"))
    assert row.count("**") == 8  # the only row is best in all four columns
    csv = pd.read_csv(out / "leaderboard.csv")
    assert csv.loc[0, "method"] == "baseline"
    assert csv.loc[0, "top1_mean"] == pytest.approx(top1.value * 100, abs=1e-6)
    tex = (out / "leaderboard.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and f"\\textbf{{{top1.value * 100:.2f}}}" in tex


def test_resolved_config_is_written(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, _ = smoke_run
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["name"] == "smoke"
    assert config["training"]["epochs"] == 6
    assert config["output"] == str(out)
    summary = json.loads((out / "run.json").read_text())
    assert summary["failed_cells"] == []


def test_rerun_uses_cache_and_reproduces_records(smoke_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, cache, _ = smoke_run
    first = {(r.metric, r.exit): r.value for r in read_records(out / "records.jsonl")}
    out2 = tmp_path / "again"
    code = main(["run", "suites/smoke.yaml", "--output", str(out2), "--cache-dir", str(cache), "--no-progress"])
    assert code == 0
    second = {(r.metric, r.exit): r.value for r in read_records(out2 / "records.jsonl")}
    assert first == second
    models = list((cache / "models").rglob("*.pt"))
    assert len(models) == 1, "the re-run must not store a second checkpoint"


def test_report_rerenders_tables_from_records(smoke_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, _, _ = smoke_run
    assert main(["report", str(out), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "leaderboard.md").read_text() == (out / "leaderboard.md").read_text()


def test_failed_cell_is_recorded_and_exit_code_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A training that diverges fails its cell, not the run; the exit code says so."""
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "suites/smoke.yaml",
            "--output",
            str(out),
            "--no-progress",
            "--set",
            "training.lr=1e30",
            "--set",
            "training.epochs=1",
            "--set",
            "training.momentum=0",
        ]
    )
    assert code == 1
    records = read_records(out / "records.jsonl")
    assert records and all(r.status == "failed" for r in records)
    assert "non-finite loss" in (records[0].error or "")
    assert "failed" in (out / "leaderboard.md").read_text()


def test_readme_first_commands_reference_real_files(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert "python -m xbench run suites/quick.yaml" in readme
    assert os.path.exists(repo_root / "suites" / "quick.yaml")
