"""Leaderboards: seed aggregation, bold best values, failures, escaping and the three formats."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scipy import stats

from xbench.report.records import Record
from xbench.report.tables import (
    latex_escape,
    leaderboard_frame,
    to_csv,
    to_latex,
    to_markdown,
    write_leaderboard,
)

TOP1 = {"label": "Top-1", "unit": "%", "scale": 100.0, "decimals": 2}
TIME = {"label": "Time", "unit": "s", "scale": 1.0, "decimals": 1}
ERROR = {"label": "Error", "unit": "%", "scale": 100.0, "decimals": 1}


def rec(method: str, seed: int, metric: str, value: float | None, **overrides: Any) -> Record:
    fields: dict[str, Any] = {
        "suite": "quick",
        "dataset": "fmnist",
        "method": method,
        "seed": seed,
        "metric": metric,
        "value": value,
        "n": 100,
        "higher_is_better": True,
        "category": "accuracy",
        "display": TOP1,
        "params": {},
        "versions": {"xbench": "0.1.0"},
        "git": None,
        "device": "cpu",
        "time_s": 0.1,
        "method_name": method,
        "cell": f"{method}/{seed}",
    }
    if value is None:
        fields.update(status="failed", error="RuntimeError: boom")
    fields.update(overrides)
    return Record(**fields)


def seeds(method: str, metric: str, values: list[float], **overrides: Any) -> list[Record]:
    return [rec(method, seed, metric, value, **overrides) for seed, value in enumerate(values)]


def markdown_rows(markdown: str) -> dict[str, list[str]]:
    """Table rows of a single-section Markdown leaderboard, keyed by the first cell."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_mean_and_t_interval_over_three_seeds() -> None:
    frame = leaderboard_frame(seeds("egt", "top1", [0.80, 0.82, 0.84]))["fmnist"]
    expected_ci = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert frame.loc["egt", ("top1", "mean")] == pytest.approx(0.82)
    assert frame.loc["egt", ("top1", "ci")] == pytest.approx(expected_ci)
    assert frame.loc["egt", ("top1", "n_seeds")] == 3
    assert frame.loc["egt", ("top1", "n_failed")] == 0


def test_hand_computed_interval_for_two_seeds() -> None:
    # mean 2, std(ddof=1) = sqrt(2), t(0.975, 1) = 12.706: half-width 12.706 * sqrt(2) / sqrt(2).
    frame = leaderboard_frame(seeds("a", "loss", [1.0, 3.0]))["fmnist"]
    assert frame.loc["a", ("loss", "mean")] == pytest.approx(2.0)
    assert frame.loc["a", ("loss", "ci")] == pytest.approx(12.706, abs=1e-3)


def test_one_seed_has_no_interval_and_says_so() -> None:
    records = [rec("a", 0, "top1", 0.5)]
    assert math.isnan(leaderboard_frame(records)["fmnist"].loc["a", ("top1", "ci")])
    markdown = to_markdown(records)
    assert "1 seed" in markdown
    assert markdown_rows(markdown)["a"] == ["**50.00**"]


def test_caption_states_the_number_of_seeds() -> None:
    assert "Mean ± 95% CI (Student's t) over 3 seeds." in to_markdown(seeds("a", "top1", [0.1, 0.2, 0.3]))
    mixed = seeds("a", "top1", [0.1, 0.2, 0.3]) + seeds("b", "top1", [0.1, 0.2])
    assert "over 2\u20133 seeds" in to_markdown(mixed)


def test_markdown_values_are_scaled_and_bold_for_higher_is_better() -> None:
    records = seeds("egt", "top1", [0.80, 0.82, 0.84]) + seeds("base", "top1", [0.70, 0.72, 0.74])
    ci = 100 * stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    rows = markdown_rows(to_markdown(records))
    assert rows["egt"] == [f"**82.00** ± {ci:.2f}"]
    assert rows["base"] == [f"72.00 ± {ci:.2f}"]
    assert list(rows) == ["Method", "egt", "base"]  # rows in order of first appearance


def test_bold_goes_to_the_lowest_value_when_lower_is_better() -> None:
    records = seeds("egt", "error", [0.20, 0.22], higher_is_better=False, display=ERROR) + seeds(
        "base", "error", [0.10, 0.12], higher_is_better=False, display=ERROR
    )
    rows = markdown_rows(to_markdown(records))
    assert rows["base"][0].startswith("**11.0**")
    assert "**" not in rows["egt"][0]
    assert "Error [%] ↓" in rows["Method"]


def test_ties_on_displayed_values_are_all_bold() -> None:
    records = [rec("a", 0, "top1", 0.9), rec("b", 0, "top1", 0.900001), rec("c", 0, "top1", 0.5)]
    rows = markdown_rows(to_markdown(records))
    assert rows["a"] == ["**90.00**"] and rows["b"] == ["**90.00**"] and rows["c"] == ["50.00"]


def test_columns_without_direction_have_no_bold_and_no_arrow() -> None:
    records = [rec(m, 0, "time", v, higher_is_better=None, display=TIME) for m, v in [("a", 1.0), ("b", 2.0)]]
    rows = markdown_rows(to_markdown(records))
    assert rows["Method"] == ["Time [s]"]
    assert rows["a"] == ["1.0"] and rows["b"] == ["2.0"]


def test_headers_carry_label_exit_unit_and_arrow_in_first_appearance_order() -> None:
    """Metrics in order of first appearance; each metric's exits follow it, overall value first."""
    records = [
        rec("a", 0, "top1", 0.9),
        rec("a", 0, "pointing_game", 0.6, exit=2, display={"label": "PG", "decimals": 3}),
        rec("a", 0, "error", 0.1, higher_is_better=False, display=ERROR),
        rec("a", 0, "pointing_game", 0.7, exit=None, display={"label": "PG", "decimals": 3}),
        rec("a", 0, "pointing_game", 0.5, exit=0, display={"label": "PG", "decimals": 3}),
    ]
    rows = markdown_rows(to_markdown(records))
    assert rows["Method"] == ["Top-1 [%] ↑", "PG ↑", "PG @exit 0 ↑", "PG @exit 2 ↑", "Error [%] ↓"]
    assert rows["a"] == ["**90.00**", "**0.700**", "**0.500**", "**0.600**", "**10.0**"]
    frame = leaderboard_frame(records)["fmnist"]
    assert list(frame.columns.get_level_values("key").unique()) == [
        "top1",
        "pointing_game",
        "pointing_game@exit0",
        "pointing_game@exit2",
        "error",
    ]


def test_failed_row_shows_failed_and_is_never_best() -> None:
    records = [
        *seeds("egt", "top1", [0.8, 0.9]),
        rec("egt", 0, "error", 0.3, higher_is_better=False, display=ERROR),
        rec("tame", 0, "top1", None),
        rec("tame", 0, "error", 0.05, higher_is_better=False, display=ERROR),
        rec("lap", 0, "top1", None),
        rec("base", 0, "top1", 0.5),
    ]
    rows = markdown_rows(to_markdown(records))
    assert rows["tame"] == ["failed", "**5.0**"]  # its ok value still counts
    assert rows["lap"] == ["failed", "failed"]  # no ok value anywhere in the row
    assert rows["base"] == ["50.00", "\u2013"]  # missing, not failed: base has no failure
    assert rows["egt"][0].startswith("**85.00** ± ")
    frame = leaderboard_frame(records)["fmnist"]
    assert frame.loc["lap", ("top1", "n_failed")] == 1 and frame.loc["lap", ("top1", "n_seeds")] == 0
    assert math.isnan(frame.loc["lap", ("top1", "mean")])


def test_partially_failed_seeds_average_the_successful_ones() -> None:
    records = [rec("a", 0, "top1", 0.6), rec("a", 1, "top1", None), rec("a", 2, "top1", 0.8)]
    frame = leaderboard_frame(records)["fmnist"]
    assert frame.loc["a", ("top1", "mean")] == pytest.approx(0.7)
    assert frame.loc["a", ("top1", "n_seeds")] == 2 and frame.loc["a", ("top1", "n_failed")] == 1


def test_a_rerun_replaces_the_earlier_record() -> None:
    records = [rec("a", 0, "top1", None), rec("a", 0, "top1", 0.6), rec("a", 1, "top1", 0.8)]
    frame = leaderboard_frame(records)["fmnist"]
    assert frame.loc["a", ("top1", "n_failed")] == 0
    assert frame.loc["a", ("top1", "mean")] == pytest.approx(0.7)
    assert "failed" not in to_markdown(records)


def test_one_section_per_dataset() -> None:
    records = [
        rec("a", 0, "top1", 0.5),
        rec("b", 0, "top1", 0.7, dataset="cifar10"),
        rec("b", 0, "top1", 0.6),
    ]
    markdown = to_markdown(records, title="Quick")
    assert markdown.startswith("# Quick\n")
    assert markdown.index("## fmnist") < markdown.index("## cifar10")
    fmnist, cifar = markdown.split("## cifar10")
    assert markdown_rows(fmnist)["b"] == ["**60.00**"] and markdown_rows(fmnist)["a"] == ["50.00"]
    assert markdown_rows(cifar) == {"Method": ["Top-1 [%] ↑"], "b": ["**70.00**"]}
    assert list(leaderboard_frame(records)) == ["fmnist", "cifar10"]


def test_csv_is_wide_in_display_units() -> None:
    records = [
        *seeds("egt", "top1", [0.80, 0.82, 0.84]),
        rec("egt", 0, "pointing_game", 0.5, exit=1, display={"label": "PG", "decimals": 3}),
        rec("tame", 0, "top1", None),
    ]
    frame = pd.read_csv(io.StringIO(to_csv(records)))
    assert list(frame.columns) == [
        "dataset",
        "method",
        "top1_mean",
        "top1_ci",
        "top1_n_seeds",
        "pointing_game@exit1_mean",
        "pointing_game@exit1_ci",
        "pointing_game@exit1_n_seeds",
        "failed",
    ]
    egt = frame.set_index("method").loc["egt"]
    assert egt["top1_mean"] == pytest.approx(82.0)
    assert egt["top1_ci"] == pytest.approx(100 * stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))
    assert egt["top1_n_seeds"] == 3 and not egt["failed"]
    assert egt["pointing_game@exit1_mean"] == pytest.approx(0.5) and math.isnan(egt["pointing_game@exit1_ci"])
    tame = frame.set_index("method").loc["tame"]
    assert tame["failed"] and tame["top1_n_seeds"] == 0 and math.isnan(tame["top1_mean"])


def test_latex_escapes_and_uses_booktabs() -> None:
    records = [
        *seeds("egt_lam0", "top1", [0.80, 0.84]),
        *seeds("a&b #1", "top1", [0.70, 0.74]),
        rec("egt_lam0", 0, "error", 0.1, higher_is_better=False, display=ERROR),
    ]
    latex = to_latex(records, caption="Results 100% {new}", label="tab:quick")
    assert r"egt\_lam0 & \textbf{82.00} $\pm$ " in latex
    assert r"a\&b \#1 & 72.00 $\pm$ " in latex
    assert r"Method & Top-1 [\%] $\uparrow$ & Error [\%] $\downarrow$ \\" in latex
    assert r"\caption{Results 100\% \{new\} (fmnist). Mean $\pm$ 95\% CI" in latex
    assert r"\label{tab:quick:fmnist}" in latex
    assert r"\begin{tabular}{lrr}" in latex
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{table}", r"\end{table}"):
        assert latex.count(command) == 1
    assert "egt_lam0" not in latex and " 100% " not in latex


def test_latex_escape_covers_the_special_characters() -> None:
    assert latex_escape(r"a_b&c%d#e$f{g}h~i^j\k") == (
        r"a\_b\&c\%d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    assert latex_escape("±↑↓") == r"$\pm$$\uparrow$$\downarrow$"


def test_latex_has_one_table_per_dataset_with_distinct_labels() -> None:
    records = [rec("a", 0, "top1", 0.5), rec("a", 0, "top1", 0.7, dataset="cifar_10")]
    latex = to_latex(records)
    assert latex.count(r"\begin{table}") == 2
    assert r"\label{tab:xbench:fmnist}" in latex and r"\label{tab:xbench:cifar-10}" in latex
    assert r"\caption{cifar\_10. " in latex


def test_write_leaderboard_writes_the_three_formats(tmp_path: Path) -> None:
    records = [*seeds("egt", "top1", [0.8, 0.9]), rec("tame", 0, "top1", None)]
    paths = write_leaderboard(iter(records), tmp_path / "out")
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.tex"]
    assert paths[0].read_text() == to_markdown(records, title="Leaderboard")
    assert paths[1].read_text() == to_csv(records)
    assert paths[2].read_text() == to_latex(records)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_no_records_give_empty_but_valid_outputs() -> None:
    assert leaderboard_frame([]) == {}
    assert to_markdown([]) == "No records.\n"
    assert to_csv([]) == "dataset,method,failed\n"
    assert r"\begin" not in to_latex([])


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path: Path) -> None:
    records = [
        *seeds("egt_lam0", "top1", [0.80, 0.84]),
        *seeds("a&b #1 ~x^", "top1", [0.70, 0.74]),
        rec("egt_lam0", 0, "pointing_game", 0.6, exit=2, display={"label": "PG µ×", "unit": "%"}),
        rec("lap", 0, "top1", None),
    ]
    document = "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs}",
            r"\begin{document}",
            to_latex(records, caption="Quick_suite 100%", label="tab:q"),
            r"\end{document}",
        ]
    )
    (tmp_path / "doc.tex").write_text(document)
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "doc.pdf").exists()


def test_metrics_a_baseline_lacks_keep_their_place_in_the_suite_order() -> None:
    """The early-exit method lists every metric; the baseline skips exit_share, which stays in place."""
    share = {"label": "Share"}
    records = [
        rec("base", 0, "top1", 0.9),
        rec("base", 0, "flops", 2e6, higher_is_better=False, display={"label": "MACs"}),
        rec("egt", 0, "top1", 0.8),
        rec("egt", 0, "exit_share", 0.7, exit=0, higher_is_better=None, display=share),
        rec("egt", 0, "exit_share", 0.3, exit=1, higher_is_better=None, display=share),
        rec("egt", 0, "flops", 3e6, higher_is_better=False, display={"label": "MACs"}),
    ]
    keys = list(leaderboard_frame(records)["fmnist"].columns.get_level_values("key").unique())
    assert keys == ["top1", "exit_share@exit0", "exit_share@exit1", "flops"]
    rows = markdown_rows(to_markdown(records))
    assert rows["base"][1:3] == ["\u2013", "\u2013"] and rows["egt"][1:3] == ["0.700", "0.300"]
