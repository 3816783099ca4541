"""suites/smoke.yaml from YAML to leaderboard, and the cache that makes a re-run free."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from xbench.cli import main
from xbench.report.records import read_records


def test_smoke_suite_writes_every_output(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, stdout = smoke_run
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard_long.csv", "leaderboard.tex", "records.jsonl",
                 "config.yaml", "run.json", "report.html", "saliency/synthetic_shapes.npz"):  # fmt: skip
        assert (out / name).is_file(), name
    plots = {p.name for p in (out / "plots").iterdir()}
    for stem in ("accuracy_vs_macs_synthetic_shapes", "accuracy_per_exit_synthetic_shapes",
                 "localization_synthetic_shapes", "saliency_synthetic_shapes"):  # fmt: skip
        assert {f"{stem}.png", f"{stem}.pdf"} <= plots, stem
    assert "[1/8] synthetic_shapes/baseline/seed0" in stdout
    assert "[3/8] synthetic_shapes/egt (λ=0)/seed0" in stdout
    assert "[4/8] synthetic_shapes/coded_resnext/seed0" in stdout
    assert "[8/8] synthetic_shapes/tame/seed0" in stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], "staging folder left behind"


def test_smoke_leaderboard_content_matches_records(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, _ = smoke_run
    records = read_records(out / "records.jsonl")
    assert all(r.status == "ok" for r in records)
    by_metric = {r.metric: r for r in records if r.exit is None and r.method == "baseline" and r.explainer is None}
    assert set(by_metric) == {
        "top1", "top5", "policy_top1", "expected_flops", "flops_speedup", "params", "flops",
        "latency", "policy_latency", "latency_speedup",
    }  # fmt: skip
    assert by_metric["latency_speedup"].value == 1.0  # no exits: the policy is the full network
    assert by_metric["latency"].params["threads"] >= 1 and by_metric["latency"].params["torch"]
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
    accuracy_table = md.split("### Accuracy")[1].split("\n### ")[0]
    rows = [line for line in accuracy_table.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "baseline", "egt", "egt (λ=0)", "coded_resnext", "ecr", "lap", "lap (masks) †", "tame",
    ]  # fmt: skip
    # Without exits the baseline always leaves at the end: policy accuracy is its top-1, speedup 1.
    assert by_metric["policy_top1"].value == top1.value
    assert by_metric["flops_speedup"].value == 1.0
    # Each early-exit row: three exits whose shares add up to one, and a policy within the drop.
    for method in ("egt", "egt (λ=0)"):
        mine = [r for r in records if r.method == method]
        shares = [r.value for r in mine if r.metric == "exit_fraction"]
        assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)
        assert {r.exit for r in mine if r.metric == "attention_consistency"} == {0, 1}
        exit_acc = {r.exit: r.value for r in mine if r.metric == "top1"}
        assert exit_acc[None] == exit_acc[2]  # the final exit is the model's prediction
        speedup = next(r for r in mine if r.metric == "flops_speedup")
        assert speedup.params["thresholds_from"] == "holdout" and speedup.value > 0
    # Coded ResNeXt: one decoding exit per coded block (four) plus the final exit, and its sub-networks.
    coded = [r for r in records if r.method == "coded_resnext"]
    assert sorted(r.exit for r in coded if r.metric == "exit_fraction") == [0, 1, 2, 3, 4]
    fraction = next(r for r in coded if r.metric == "binary_param_fraction")
    assert 0 < fraction.value < 1
    csv = pd.read_csv(out / "leaderboard.csv")
    assert csv.loc[0, "method"] == "baseline"
    assert csv.loc[0, "top1_mean"] == pytest.approx(top1.value * 100, abs=1e-6)
    tex = (out / "leaderboard.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and f"\\textbf{{\\tablenum{{{top1.value * 100:.2f}}}}}" in tex


def test_smoke_explanations_beat_the_random_explainer(smoke_run: tuple[Path, Path, str]) -> None:
    """Grad-CAM on the baseline localises the shapes far better than chance, and passes the sanity check."""
    out, _, _ = smoke_run
    records = [r for r in read_records(out / "records.jsonl") if r.explainer is not None]
    value = {(r.method, r.explainer, r.metric): r.value for r in records}
    localization = sorted({r.metric for r in records if r.category == "localization"})
    assert len(localization) == 7
    for metric in [*localization, "faithfulness_correlation"]:
        gradcam, chance = value[("baseline", "gradcam", metric)], value[("baseline", "random", metric)]
        assert gradcam is not None and chance is not None and gradcam > chance, metric
    assert value[("baseline", "random", "randomisation_check")] == 0.0  # maps that ignore the model fail
    assert value[("baseline", "gradcam", "randomisation_check")] == 1.0
    # Every method with maps of its own is evaluated on them; the baseline and Coded ResNeXt have none.
    native = {r.method for r in records if r.explainer == "native"}
    assert native == {"egt", "egt (λ=0)", "ecr", "lap", "lap (masks)", "tame"}
    # TAME classifies with the frozen baseline: its Grad-CAM and random rows would be the baseline's.
    assert {r.explainer for r in records if r.method == "tame" and r.explainer} == {"native"}
    ad = {r.display["label"] for r in records if r.metric.startswith("AD ")}
    assert ad == {"AD 100%", "AD 50%", "AD 15%"}


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (.ci/run installs it)")
def test_smoke_latex_leaderboard_compiles(smoke_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, _, _ = smoke_run
    body = (out / "leaderboard.tex").read_text()
    preamble = [r"\documentclass{article}", r"\usepackage{booktabs}", r"\usepackage{siunitx}"]
    (tmp_path / "doc.tex").write_text("\n".join([*preamble, r"\begin{document}", body, r"\end{document}"]))
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]


def test_resolved_config_is_written(smoke_run: tuple[Path, Path, str]) -> None:
    out, _, _ = smoke_run
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["name"] == "smoke"
    assert config["training"]["epochs"] == 6 and config["training"]["holdout"] == 300
    assert config["output"] == str(out)
    summary = json.loads((out / "run.json").read_text())
    assert summary["failed_cells"] == []


def test_rerun_uses_cache_and_reproduces_records(smoke_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, cache, _ = smoke_run
    first = {(r.method, r.metric, r.exit, r.explainer): r.value for r in read_records(out / "records.jsonl")}
    out2 = tmp_path / "again"
    code = main(["run", "suites/smoke.yaml", "--output", str(out2), "--cache-dir", str(cache), "--no-progress"])
    assert code == 0
    second = {(r.method, r.metric, r.exit, r.explainer): r.value for r in read_records(out2 / "records.jsonl")}
    assert first == second
    models = list((cache / "models").rglob("*.pt"))
    assert len(models) == 8, "the re-run must not store more checkpoints"


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
            "methods=[baseline]",
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
