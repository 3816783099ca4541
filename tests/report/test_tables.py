"""Leaderboards: seed aggregation, bold best values, failures, escaping and the three formats."""

from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import make_record as rec
from helpers import make_seeds as seeds
from scipy import stats

from xbench.report.records import Record
from xbench.report.tables import (
    Significance,
    latex_escape,
    leaderboard_frame,
    to_csv,
    to_latex,
    to_long_csv,
    to_markdown,
    write_leaderboard,
)

TIME = {"label": "Time", "unit": "s", "scale": 1.0, "decimals": 1}
ERROR = {"label": "Error", "unit": "%", "scale": 100.0, "decimals": 1}
PG = {"label": "Pointing game", "unit": "", "decimals": 3}
#: A per-exit metric shown with the accuracy metrics, so that one table holds every column.
PG_ACCURACY: dict[str, Any] = {"category": "accuracy", "display": {"label": "PG", "decimals": 3}}


def markdown_rows(markdown: str) -> dict[str, list[str]]:
    """Table rows of a single-table Markdown leaderboard, keyed by the first cell."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def markdown_tables(markdown: str) -> dict[str, dict[str, list[str]]]:
    """Every ``### heading`` table of a Markdown leaderboard, keyed by ``section / heading``."""
    tables: dict[str, dict[str, list[str]]] = {}
    for block in re.split(r"^## ", markdown, flags=re.M)[1:]:
        section, _, body = block.partition("\n")
        for table in re.split(r"^### ", body, flags=re.M)[1:]:
            heading, _, rows = table.partition("\n")
            tables[f"{section} / {heading}"] = markdown_rows(rows)
    return tables


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
    assert rows["base"] == [f"<u>72.00</u> ± {ci:.2f}"]  # second best; constant gap to egt: p = 0, no mark
    assert list(rows) == ["Method", "egt", "base"]  # rows in order of first appearance


def test_bold_goes_to_the_lowest_value_when_lower_is_better() -> None:
    records = seeds("egt", "error", [0.20, 0.22], higher_is_better=False, display=ERROR) + seeds(
        "base", "error", [0.10, 0.12], higher_is_better=False, display=ERROR
    )
    rows = markdown_rows(to_markdown(records))
    assert rows["base"][0].startswith("**11.0**")
    assert rows["egt"][0].startswith("<u>21.0</u>") and "**" not in rows["egt"][0]
    assert "Error [%] ↓" in rows["Method"]


def test_ties_on_displayed_values_are_all_bold() -> None:
    records = [rec("a", 0, "top1", 0.9), rec("b", 0, "top1", 0.900001), rec("c", 0, "top1", 0.5)]
    rows = markdown_rows(to_markdown(records))
    assert rows["a"] == ["**90.00**"] and rows["b"] == ["**90.00**"] and rows["c"] == ["<u>50.00</u>"]


def test_columns_without_direction_have_no_bold_and_no_arrow() -> None:
    records = [rec(m, 0, "time", v, higher_is_better=None, display=TIME) for m, v in [("a", 1.0), ("b", 2.0)]]
    rows = markdown_rows(to_markdown(records))
    assert rows["Method"] == ["Time [s]"]
    assert rows["a"] == ["1.0"] and rows["b"] == ["2.0"]
    assert "Columns without ↑/↓ describe the method and are not ranked." in to_markdown(records)
    ranked = to_markdown([rec("a", 0, "top1", 0.5)])
    assert "Units in brackets; a column without one is a unitless score." in ranked
    assert "not ranked" not in ranked  # only said where such a column is


def test_headers_carry_label_exit_unit_and_arrow_in_first_appearance_order() -> None:
    """Metrics in order of first appearance; each metric's exits follow it, overall value first."""
    records = [
        rec("a", 0, "top1", 0.9),
        rec("a", 0, "pointing_game", 0.6, exit=2, **PG_ACCURACY),
        rec("a", 0, "error", 0.1, higher_is_better=False, display=ERROR),
        rec("a", 0, "pointing_game", 0.7, exit=None, **PG_ACCURACY),
        rec("a", 0, "pointing_game", 0.5, exit=0, **PG_ACCURACY),
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
    assert rows["base"] == ["<u>50.00</u>", "\u2013"]  # missing, not failed: base has no failure
    assert rows["egt"][1] == "<u>30.0</u>"
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
    assert markdown_rows(fmnist)["b"] == ["**60.00**"] and markdown_rows(fmnist)["a"] == ["<u>50.00</u>"]
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
        "explainer",
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


def test_latex_escapes_and_uses_booktabs_and_siunitx() -> None:
    records = [
        *seeds("egt_lam0", "top1", [0.80, 0.84]),
        *seeds("a&b #1", "top1", [0.70, 0.74]),
        rec("egt_lam0", 0, "error", 0.1, higher_is_better=False, display=ERROR),
    ]
    latex = to_latex(records, caption="Results 100% {new}", label="tab:quick")
    ci = 100 * stats.t.ppf(0.975, 1) * math.sqrt(0.0008) / math.sqrt(2)
    assert rf"egt\_lam0 & {{\textbf{{\tablenum{{82.00 \pm {ci:.2f}}}}}}} & {{\textbf{{\tablenum{{10.0}}}}}} \\" in latex
    assert rf"a\&b \#1 & {{\underline{{\tablenum{{72.00 \pm {ci:.2f}}}}}}} & {{--}} \\" in latex
    assert r"Method & {Top-1 [\%] $\uparrow$} & {Error [\%] $\downarrow$} \\" in latex
    assert r"\caption{Results 100\% \{new\} (fmnist: Accuracy). Mean $\pm$ 95\% CI" in latex
    assert r"\label{tab:quick:fmnist:accuracy}" in latex
    assert r"\begin{tabular}{@{}lS[table-format=2.2(4)]S[table-format=2.1]@{}}" in latex  # ci = 25.41: 82.00(2541)
    assert r"\sisetup{separate-uncertainty = true, detect-weight = true}" in latex
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{table}", r"\end{table}"):
        assert latex.count(command) == 1
    assert "egt_lam0" not in latex and " 100% " not in latex
    assert latex.startswith("% xbench leaderboard") and r"\usepackage{booktabs} and \usepackage{siunitx}" in latex


def test_latex_escape_covers_the_special_characters() -> None:
    assert latex_escape(r"a_b&c%d#e$f{g}h~i^j\k") == (
        r"a\_b\&c\%d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    assert latex_escape("±↑↓") == r"$\pm$$\uparrow$$\downarrow$"
    assert latex_escape("egt (λ=0) Ω µ") == r"egt ($\lambda$=0) $\Omega$ $\mu$"


def test_latex_has_one_table_per_dataset_and_category_with_distinct_labels() -> None:
    records = [
        rec("a", 0, "top1", 0.5),
        rec("a", 0, "flops", 2e6),
        rec("a", 0, "top1", 0.7, dataset="cifar_10"),
        rec("a", 0, "pointing_game", 0.4, explainer="gradcam", category="localization", display=PG),
    ]
    latex = to_latex(records)
    assert latex.count(r"\begin{table}") == 4
    labels = re.findall(r"\\label\{([^}]*)\}", latex)
    assert labels == [
        "tab:xbench:fmnist:accuracy",
        "tab:xbench:fmnist:efficiency",
        "tab:xbench:fmnist-explanations:localization",
        "tab:xbench:cifar-10:accuracy",
    ]
    assert r"\caption{cifar\_10: Accuracy. " in latex
    assert r"\caption{fmnist $\cdot$ explanations: Localization. " in latex
    assert r"Method (explainer) & {Pointing game $\uparrow$} \\" in latex


def test_write_leaderboard_writes_the_five_files(tmp_path: Path) -> None:
    records = [*seeds("egt", "top1", [0.8, 0.9]), rec("tame", 0, "top1", None)]
    paths = write_leaderboard(iter(records), tmp_path / "out")
    names = ["leaderboard.md", "leaderboard.csv", "leaderboard_long.csv", "leaderboard.tex"]
    names.append("leaderboard_twocolumn.tex")
    assert [p.name for p in paths] == names
    assert paths[0].read_text() == to_markdown(records, title="Leaderboard", view="paper")
    assert paths[1].read_text() == to_csv(records)
    assert paths[2].read_text() == to_long_csv(records)
    assert paths[3].read_text() == to_latex(records, view="paper")
    assert paths[4].read_text() == to_latex(records, view="paper", layout="twocolumn")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)


def test_write_leaderboard_passes_the_significance_settings_on(tmp_path: Path) -> None:
    records = [*seeds("baseline", "top1", [0.5, 0.6, 0.7]), *seeds("egt", "top1", [0.8, 0.85, 0.95])]
    settings = Significance(reference="egt", test="wilcoxon", alpha=0.1)
    md, _, long, tex, _ = write_leaderboard(records, tmp_path, significance=settings)
    assert "Wilcoxon signed-rank test across seeds, two-sided, α = 0.1" in md.read_text()
    assert "better/worse than egt" in md.read_text() and "better/worse than egt" in tex.read_text()
    assert set(pd.read_csv(long)["test"]) == {"wilcoxon"}


def test_no_records_give_empty_but_valid_outputs() -> None:
    assert leaderboard_frame([]) == {}
    assert to_markdown([]) == "No records.\n"
    assert to_csv([]) == "dataset,method,explainer,failed\n"
    assert pd.read_csv(io.StringIO(to_long_csv([]))).empty
    assert r"\begin" not in to_latex([])


def rich_records() -> list[Record]:
    """Several categories, explanations, failures, marks, escapes and a mask-trained row."""
    pg = {"label": "PG µ×", "unit": "%", "scale": 100.0, "decimals": 1}
    return [
        *seeds("baseline", "top1", [0.70, 0.72, 0.74]),
        *seeds("egt_lam0", "top1", [0.80, 0.84, 0.83]),
        *seeds("egt (λ=0)", "top1", [0.79, 0.86, 0.80]),
        *seeds("a&b #1 ~x^", "top1", [0.60, 0.61, 0.65]),
        rec("lap", 0, "top1", None),
        *seeds("baseline", "flops", [2e6] * 3),
        *seeds("egt_lam0", "flops", [1.5e6] * 3),
        *seeds("egt_lam0", "pointing_game", [0.6, 0.5, 0.7], exit=2, category="accuracy", display=pg),
        *seeds("baseline", "pointing_game", [0.6, 0.7, 0.65], explainer="gradcam", category="localization", display=PG),
        *seeds("baseline", "pointing_game", [0.2, 0.25, 0.2], explainer="random", category="localization", display=PG),
        *seeds(
            "lap (masks)",
            "pointing_game",
            [0.9, 0.95, 0.9],
            explainer="native",
            category="localization",
            display=PG,
            config={"uses_masks": True},
        ),
        *seeds(
            "baseline", "randomisation_check", [-1.0, -0.5, -0.75], explainer="gradcam", category="sanity", display=PG
        ),
    ]


def _split_cells(row: str) -> list[str]:
    """Split a tabular row at top-level ``&`` (not ``\\&``, not inside braces)."""
    cells, depth, current, i = [], 0, "", 0
    while i < len(row):
        char = row[i]
        if char == "\\":
            current += row[i : i + 2]
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "&" and depth == 0:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    return [*cells, current.strip()]


def _braced(cell: str) -> bool:
    """The cell is one brace group from its first to its last character."""
    if not cell.startswith("{"):
        return False
    depth = 0
    for i, char in enumerate(cell):
        if char in "{}" and (i == 0 or cell[i - 1] != "\\"):
            depth += 1 if char == "{" else -1
            if depth == 0:
                return i == len(cell) - 1
    return False


_INTERCOLUMN = re.compile(r"@\{(?:[^{}]|\{[^{}]*\})*\}")
_S_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?: \\pm \d+(?:\.\d+)?)?")


def check_latex_structure(latex: str) -> int:
    """Assert the structure pdflatex would choke on; returns the number of tabulars checked."""
    body = re.sub(r"(?<!\\)%.*", "", latex)
    depth = 0
    for match in re.finditer(r"\\[{}]|[{}]", body):
        if match.group() in "{}":
            depth += 1 if match.group() == "{" else -1
            assert depth >= 0, f"unbalanced '}}' at {match.start()}"
    assert depth == 0, "unbalanced braces"
    stack: list[str] = []
    for match in re.finditer(r"\\(begin|end)\{(\w+)\}", body):
        if match.group(1) == "begin":
            stack.append(match.group(2))
        else:
            assert stack and stack.pop() == match.group(2), f"\\end{{{match.group(2)}}} does not match"
    assert not stack, f"unclosed environments {stack}"
    tabulars = re.findall(r"\\begin\{tabular\}\{(.*?)\}\n(.*?)\\end\{tabular\}", body, re.S)
    for spec, content in tabulars:
        spec = _INTERCOLUMN.sub("", spec)  # @{} and @{\hspace{..}} between columns
        columns = re.findall(r"S\[[^\]]*\]|[lcrS]", spec)
        assert "".join(columns) == spec, f"unknown column spec {spec!r}"
        lines = [line for line in content.strip().splitlines() if line != r"\addlinespace"]
        assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule", lines
        for line in [lines[1], *lines[3:-1]]:
            assert line.endswith(r" \\"), line
            cells = _split_cells(line[: -len(r" \\")])
            assert len(cells) == len(columns), f"{len(cells)} cells for {len(columns)} columns: {line}"
            for kind, cell in zip(columns, cells, strict=True):
                if kind.startswith("S"):
                    number, _, post = cell.partition("{")
                    ok = _braced(cell) or (_S_NUMBER.fullmatch(number) and (not post or _braced("{" + post)))
                    assert ok, f"S cell is neither a number nor braced: {cell!r}"
    return len(tabulars)


def test_latex_structure_is_valid() -> None:
    latex = to_latex(rich_records(), caption="Quick_suite 100%", label="tab:q", max_columns=1)
    # model: accuracy (top1, PG@exit2: two blocks of one column) and efficiency; explanations: localization, sanity
    assert latex.count(r"\begin{table}") == 4
    assert check_latex_structure(latex) == 5
    assert latex.count(r"\par\medskip") == 1
    assert "{failed}" in latex and "{--}" in latex
    assert (
        r"lap (masks) \textdagger{} (native) & {\textbf{\tablenum{0.917 \pm 0.072}}\rlap{\textsuperscript{+}}} \\"
        in latex
    )
    assert latex.count(r"\textdagger{} trained with ground-truth masks") == 2  # both explanation tables
    assert r"\textsuperscript{$-$}" in latex and r"S[table-format=-1.3(3)]" in latex  # -0.750(621)


def test_latex_structure_check_catches_broken_tables() -> None:
    records = [*seeds("a", "top1", [0.5, 0.6]), *seeds("b", "top1", [0.4, 0.5]), *seeds("c", "top1", [0.3, 0.4])]
    good = to_latex([*records, rec("d", 0, "top1", None)])
    assert r"c & 35.00 \pm 63.53 \\" in good and r"d & {failed} \\" in good
    assert check_latex_structure(good) == 1
    broken = [
        good.replace(r"\end{table}", r"\end{tabular}", 1),  # environments
        good.replace(r"c & 35.00", r"c & 1.0 & 35.00"),  # one cell too many
        good.replace(r"\textbf{\tablenum{", r"\textbf{\tablenum{{"),  # braces
        good.replace(r"35.00 \pm", "35.00 +-"),  # an S cell that is not a number
        good.replace("35.00", "35.00 x"),
        good.replace("{failed}", "failed"),
    ]
    for latex in broken:
        with pytest.raises(AssertionError):
            check_latex_structure(latex)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path: Path) -> None:
    document = "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs}",
            r"\usepackage{siunitx}",
            r"\begin{document}",
            to_latex(rich_records(), caption="Quick_suite 100%", label="tab:q", max_columns=1),
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
        rec("base", 0, "flops", 2e6, category="accuracy", display={"label": "MACs"}),
        rec("egt", 0, "top1", 0.8),
        rec("egt", 0, "exit_share", 0.7, exit=0, higher_is_better=None, display=share),
        rec("egt", 0, "exit_share", 0.3, exit=1, higher_is_better=None, display=share),
        rec("egt", 0, "flops", 3e6, category="accuracy", display={"label": "MACs"}),
    ]
    keys = list(leaderboard_frame(records)["fmnist"].columns.get_level_values("key").unique())
    assert keys == ["top1", "exit_share@exit0", "exit_share@exit1", "flops"]
    rows = markdown_rows(to_markdown(records))
    assert rows["base"][1:3] == ["\u2013", "\u2013"] and rows["egt"][1:3] == ["0.700", "0.300"]


def test_metrics_are_grouped_by_category_in_a_fixed_order() -> None:
    """Accuracy, efficiency, localization, faithfulness, consistency, sanity; unknown ones last."""
    records = [
        rec("a", 0, "sanity_m", 0.1, category="sanity"),
        rec("a", 0, "custom_m", 0.2, category="custom"),
        rec("a", 0, "consistency_m", 0.3, category="consistency"),
        rec("a", 0, "flops", 0.4),
        rec("a", 0, "top1", 0.5),
        rec("a", 0, "top5", 0.6),
        rec("a", 0, "faith", 0.7, category="faithfulness", explainer="gradcam"),
        rec("a", 0, "pg", 0.8, category="localization", explainer="gradcam"),
        rec("a", 0, "expl_sanity", 0.9, category="sanity", explainer="gradcam"),
    ]
    markdown = to_markdown(records)
    headings = re.findall(r"^#+ .*$", markdown, re.M)
    assert headings == [
        "## fmnist",
        "### Accuracy",
        "### Efficiency",
        "### Consistency",
        "### Sanity",
        "### Custom",
        "## fmnist · explanations",
        "### Localization (explanations)",
        "### Faithfulness (explanations)",
        "### Sanity (explanations)",
    ]
    tables = markdown_tables(markdown)
    assert tables["fmnist / Accuracy"]["Method"] == ["Top-1 [%] ↑", "Top-5 [%] ↑"]
    assert tables["fmnist · explanations / Localization (explanations)"]["a (gradcam)"] == ["**0.800**"]
    assert "Method (explainer)" in tables["fmnist · explanations / Sanity (explanations)"]
    captions = re.findall(r"\\caption\{fmnist(?: \$\\cdot\$ explanations)?: (\w+)\.", to_latex(records))
    assert captions == [
        "Accuracy",
        "Efficiency",
        "Consistency",
        "Sanity",
        "Custom",
        "Localization",
        "Faithfulness",
        "Sanity",
    ]
    # The frame keeps every column, in the grouped order.
    keys = list(leaderboard_frame(records)["fmnist"].columns.get_level_values("key").unique())
    assert keys == ["top1", "top5", "flops", "consistency_m", "sanity_m", "custom_m"]


def test_second_best_is_underlined_and_ties_share_both_marks() -> None:
    values = {"a": 0.90, "b": 0.900001, "c": 0.80, "d": 0.799999, "e": 0.70, "f": None}
    records = [rec(m, 0, "top1", v) for m, v in values.items()]
    rows = markdown_rows(to_markdown(records))
    assert {m: rows[m][0] for m in values} == {
        "a": "**90.00**",
        "b": "**90.00**",
        "c": "<u>80.00</u>",
        "d": "<u>80.00</u>",
        "e": "70.00",
        "f": "failed",
    }
    latex = to_latex(records)
    assert r"c & {\underline{\tablenum{80.00}}} \\" in latex and r"e & 70.00 \\" in latex
    assert latex.count(r"\textbf{") == 2 and latex.count(r"\underline{") == 2


def test_second_best_for_lower_is_better() -> None:
    records = [
        rec(m, 0, "error", v, higher_is_better=False, display=ERROR)
        for m, v in [("a", 0.30), ("b", 0.10), ("c", 0.20), ("d", 0.2001)]
    ]
    rows = markdown_rows(to_markdown(records))
    assert rows["b"] == ["**10.0**"] and rows["c"] == ["<u>20.0</u>"] and rows["d"] == ["<u>20.0</u>"]
    assert rows["a"] == ["30.0"]


def test_a_single_distinct_value_has_no_second_best() -> None:
    rows = markdown_rows(to_markdown([rec("a", 0, "top1", 0.5), rec("b", 0, "top1", 0.5)]))
    assert rows["a"] == rows["b"] == ["**50.00**"]


def marked_records() -> list[Record]:
    """baseline < c-ish < best 'a'; 'b' close to 'a'; 'c' below the baseline; 'd' has one seed."""
    return [
        *seeds("baseline", "top1", [0.70, 0.72, 0.74]),
        *seeds("a", "top1", [0.80, 0.83, 0.84]),
        *seeds("b", "top1", [0.79, 0.80, 0.86]),
        *seeds("c", "top1", [0.60, 0.61, 0.65]),
        rec("d", 0, "top1", 0.99 - 0.5),
    ]


def test_significance_marks_follow_hand_computed_p_values() -> None:
    base, a, b, c = [0.70, 0.72, 0.74], [0.80, 0.83, 0.84], [0.79, 0.80, 0.86], [0.60, 0.61, 0.65]
    # The data are chosen so that every branch is exercised; check that they are.
    assert stats.ttest_rel(a, base).pvalue < 0.05  # a better than baseline
    assert stats.ttest_rel(b, base).pvalue < 0.05  # b better than baseline ...
    assert stats.ttest_rel(b, a).pvalue >= 0.05  # ... and not distinguishable from the best, a
    assert stats.ttest_rel(c, base).pvalue < 0.05  # c worse than baseline
    assert stats.ttest_rel(base, a).pvalue < 0.05 and stats.ttest_rel(c, a).pvalue < 0.05
    markdown = to_markdown(marked_records())
    rows = markdown_rows(markdown)
    assert rows["a"][0].startswith("**82.33**") and rows["a"][0].endswith("<sup>+</sup>")
    assert rows["b"][0].startswith("<u>81.67</u>") and rows["b"][0].endswith("<sup>+*</sup>")
    assert rows["c"][0].endswith("<sup>−</sup>")
    assert "<sup>" not in rows["baseline"][0]  # the reference itself, and significantly worse than a
    assert rows["d"] == ["49.00"]  # one seed: not tested
    assert "paired t-test across seeds, two-sided, α = 0.05" in markdown
    assert "<sup>*</sup> not significantly different from the best row (p ≥ 0.05)" in markdown
    assert "<sup>+</sup>/<sup>−</sup> significantly better/worse than baseline (p < 0.05)" in markdown
    assert "Rows with fewer than 2 paired seeds are not tested." in markdown
    latex = to_latex(marked_records())
    assert r"{\underline{\tablenum{81.67 \pm " in latex and r"}}\rlap{\textsuperscript{+*}}} \\" in latex
    assert r"\rlap{\textsuperscript{$-$}}} \\" in latex


def test_long_csv_holds_the_p_values_of_both_tests() -> None:
    frame = pd.read_csv(io.StringIO(to_long_csv(marked_records())), keep_default_na=False)
    assert list(frame.columns) == [
        "dataset",
        "method",
        "explainer",
        "category",
        "metric",
        "exit",
        "label",
        "unit",
        "direction",
        "mean",
        "ci",
        "n_seeds",
        "n_failed",
        "rank",
        "marks",
        "p_vs_reference",
        "p_vs_best",
        "reference",
        "test",
    ]
    rows = frame.set_index("method")
    base, a, b = [0.70, 0.72, 0.74], [0.80, 0.83, 0.84], [0.79, 0.80, 0.86]
    assert float(rows.loc["b", "p_vs_reference"]) == pytest.approx(stats.ttest_rel(b, base).pvalue)
    assert float(rows.loc["b", "p_vs_best"]) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert rows.loc["baseline", "p_vs_reference"] == "" and rows.loc["a", "p_vs_best"] == ""
    assert rows.loc["d", "p_vs_reference"] == "" and rows.loc["d", "n_seeds"] == 1 and rows.loc["d", "ci"] == ""
    assert float(rows.loc["a", "mean"]) == pytest.approx(100 * sum(a) / 3)
    expected_ci = 100 * stats.t.ppf(0.975, 2) * pd.Series(a).std() / math.sqrt(3)
    assert float(rows.loc["a", "ci"]) == pytest.approx(expected_ci)
    assert rows.loc["a", "rank"] == "1" and rows.loc["b", "rank"] == "2" and rows.loc["c", "rank"] == ""
    assert rows.loc["b", "marks"] == "+*" and rows.loc["c", "marks"] == "-"
    assert set(frame["reference"]) == {"baseline"} and set(frame["test"]) == {"ttest"}
    assert set(frame["direction"]) == {"higher"} and set(frame["unit"]) == {"%"}
    assert set(frame["exit"]) == {""} and set(frame["explainer"]) == {""}


def test_long_csv_has_explainers_exits_and_failures() -> None:
    records = [
        rec("egt", 0, "top1", 0.5, exit=1),
        rec("egt", 0, "pointing_game", 0.4, explainer="native", category="localization", display=PG),
        rec("lap", 0, "top1", None),
        rec("time", 0, "time", 2.0, higher_is_better=None, display=TIME),
    ]
    frame = pd.read_csv(io.StringIO(to_long_csv(records)), keep_default_na=False)
    assert frame[["method", "explainer", "metric", "exit", "n_seeds", "n_failed"]].values.tolist() == [
        ["lap", "", "top1", "", 0, 1],  # failed: a row with the count, no mean
        ["egt", "", "top1", "1", 1, 0],
        ["time", "", "time", "", 1, 0],
        ["egt", "native", "pointing_game", "", 1, 0],
    ]
    assert frame.loc[0, "mean"] == "" and frame.loc[2, "direction"] == "" and frame.loc[3, "category"] == "localization"


def test_without_two_paired_seeds_no_test_is_run_and_the_caption_says_so() -> None:
    records = [rec("baseline", 0, "top1", 0.5), rec("a", 0, "top1", 0.7), rec("a", 1, "top1", 0.8)]
    markdown = to_markdown(records)
    assert "No significance tests: they need at least 2 paired seeds." in markdown
    assert "<sup>" not in markdown and "p ≥" not in markdown
    latex = to_latex(records)
    assert r"\textsuperscript" not in latex and "No significance tests" in latex


def test_the_reference_row_is_configurable() -> None:
    settings = Significance(reference="c")
    rows = markdown_rows(to_markdown(marked_records(), significance=settings))
    assert rows["baseline"][0].endswith("<sup>+</sup>")  # baseline is better than c
    assert "<sup>" not in rows["c"][0]
    missing = to_markdown(marked_records(), significance=Significance(reference="nope"))
    assert "no nope row to compare with" in missing and "<sup>−</sup>" not in missing.split("\n### ")[1]


def test_explanation_rows_are_compared_with_baseline_gradcam() -> None:
    def expl(method: str, explainer: str, values: list[float]) -> list[Record]:
        return seeds(method, "pg", values, explainer=explainer, category="localization", display=PG)

    records = [
        *expl("baseline", "random", [0.20, 0.21, 0.25]),
        *expl("baseline", "gradcam", [0.60, 0.65, 0.70]),
        *expl("egt", "native", [0.70, 0.74, 0.80]),
    ]
    markdown = to_markdown(records)
    assert "significantly better/worse than baseline (gradcam)" in markdown
    rows = markdown_rows(markdown)
    p_random = stats.ttest_rel([0.20, 0.21, 0.25], [0.60, 0.65, 0.70]).pvalue
    p_native = stats.ttest_rel([0.70, 0.74, 0.80], [0.60, 0.65, 0.70]).pvalue
    assert p_random < 0.05 and p_native < 0.05
    assert rows["baseline (random)"][0].endswith("<sup>−</sup>")
    assert rows["egt (native)"][0] == "**0.747** ± 0.125<sup>+</sup>"
    other = to_markdown(records, significance=Significance(explanation_reference="egt (native)"))
    assert markdown_rows(other)["baseline (gradcam)"][0].endswith("<sup>−</sup>")


def test_wilcoxon_is_an_option() -> None:
    records = [*seeds("baseline", "top1", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), *seeds("a", "top1", [0.5] * 6)]
    frame = pd.read_csv(io.StringIO(to_long_csv(records, significance=Significance(test="wilcoxon"))))
    expected = stats.wilcoxon([0.5] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).pvalue
    assert frame.set_index("method").loc["a", "p_vs_reference"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown significance test"):
        Significance(test="anova")
    with pytest.raises(ValueError, match="alpha"):
        Significance(alpha=1.5)


def test_records_of_several_runs_are_merged() -> None:
    """``xbench report RUN1 RUN2`` concatenates records: seeds add up, a re-run replaces its duplicate."""
    run1 = [rec("a", 0, "top1", 0.6), rec("a", 1, "top1", None), rec("b", 0, "top1", 0.5)]
    run2 = [rec("a", 1, "top1", 0.8), rec("a", 2, "top1", 0.7), rec("b", 1, "top1", 0.4)]
    frame = leaderboard_frame(run1 + run2)["fmnist"]
    assert frame.loc["a", ("top1", "n_seeds")] == 3 and frame.loc["a", ("top1", "n_failed")] == 0
    assert frame.loc["a", ("top1", "mean")] == pytest.approx(0.7)
    assert frame.loc["b", ("top1", "n_seeds")] == 2
    long = pd.read_csv(io.StringIO(to_long_csv(run1 + run2))).set_index("method")
    assert long.loc["a", "n_seeds"] == 3 and long.loc["a", "n_failed"] == 0
    # b is tested against a on the two seeds they share (0 and 1).
    assert long.loc["b", "p_vs_best"] == pytest.approx(stats.ttest_rel([0.5, 0.4], [0.6, 0.8]).pvalue)


def test_wide_csv_has_an_explainer_column_for_explanation_rows() -> None:
    records = [
        rec("egt", 0, "top1", 0.5),
        rec("egt", 0, "pg", 0.4, explainer="native", category="localization", display=PG),
        rec("egt", 0, "pg", 0.3, explainer="gradcam", category="localization", display=PG),
    ]
    frame = pd.read_csv(io.StringIO(to_csv(records)), keep_default_na=False)
    assert frame[["dataset", "method", "explainer"]].values.tolist() == [
        ["fmnist", "egt", ""],
        ["fmnist", "egt", "native"],
        ["fmnist", "egt", "gradcam"],
    ]
    assert frame["top1_mean"].tolist() == ["50", "", ""] and frame["pg_mean"].tolist() == ["", "0.4", "0.3"]


def test_wide_latex_groups_are_split_into_blocks() -> None:
    records = [
        rec("a", 0, f"m{i}", 0.1 * i, display={"label": f"M{i}", "unit": "", "decimals": 1}) for i in range(1, 6)
    ]
    latex = to_latex(records, max_columns=2)
    assert latex.count(r"\begin{table}") == 1 and latex.count(r"\begin{tabular}") == 3
    assert check_latex_structure(latex) == 3
    assert re.findall(r"\\begin\{tabular\}\{(.*)\}$", latex, re.M) == [
        "@{}lS[table-format=1.1]S[table-format=1.1]@{}",
        "@{}lS[table-format=1.1]S[table-format=1.1]@{}",
        "@{}lS[table-format=1.1]@{}",
    ]
    with pytest.raises(ValueError):
        to_latex(records, max_columns=0)


# --------------------------------------------------------------------------- views


def test_paper_view_shows_the_preferred_columns_and_names_the_others() -> None:
    names = ["latency", "policy_latency", "params", "flops", "expected_flops", "flops_speedup", "latency_speedup"]
    names += ["binary_latency", "binary_speedup"]
    records = [
        rec("a", 0, name, 0.5, category="efficiency", higher_is_better=True, display={"label": name.title()})
        for name in names
    ]
    markdown = to_markdown(records, view="paper")
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    shown = [c for c in header.strip("| ").split(" | ")[1:]]
    # Seven columns: the preferred ones, in the table's (suite) order.
    assert shown == [n.title() + " ↑" for n in names if n not in ("policy_latency", "binary_latency")]
    assert "Not in this view: Policy_Latency ↑, Binary_Latency ↑ (the full view has every column)." in markdown
    full = to_markdown(records, view="full")
    assert full.count(" ↑ |") == len(names) and "Not in this view" not in full  # every column


def test_paper_view_puts_exits_in_rows_ranked_per_exit() -> None:
    records = [rec(m, 0, "top1", v) for m, v in (("baseline", 0.7), ("egt", 0.8), ("coded", 0.75))]
    records += [rec("egt", 0, "top1", 0.5 + 0.1 * k, exit=k) for k in range(3)]
    records += [rec("coded", 0, "top1", 0.9 - 0.1 * k, exit=k) for k in range(2)]
    records += [rec("egt", 0, "share", 0.2, exit=k, category="efficiency") for k in (0, 2)]
    markdown = to_markdown(records, view="paper")
    assert "### Per exit: accuracy, efficiency" in markdown and "@exit" not in markdown
    rows = [line for line in markdown.split("### Per exit")[1].splitlines() if line.startswith("| ")]
    assert rows[0] == "| Method | Exit | Top-1 [%] ↑ | share ↑ |"
    assert rows[1:] == [
        "| egt | 0 | <u>50.00</u> | **0.200** |",
        "| egt | 1 | <u>60.00</u> | – |",
        "| egt | 2 | **70.00** | **0.200** |",
        "| coded | 0 | **90.00** | – |",
        "| coded | 1 | **80.00** | – |",
    ]
    latex = to_latex(records, view="paper")
    assert check_latex_structure(latex) == 2  # the final outputs' accuracy, the per-exit table
    assert r"egt & 0 & {\underline{\tablenum{50.00}}}" in latex and r" & 1 & {\underline{\tablenum{60.00}}}" in latex
    assert latex.count(r"\addlinespace") == 1  # between egt's and coded's exits


def test_two_column_latex_spans_both_columns_only_when_it_must() -> None:
    narrow = [*seeds("a", "top1", [0.5, 0.6]), *seeds("b", "top1", [0.4, 0.5])]
    wide = [
        rec("a", 0, f"m{i}", 0.1 * i, display={"label": f"Metric number {i}", "unit": "%", "decimals": 2})
        for i in range(1, 8)
    ]
    assert r"\begin{table}" in to_latex(narrow, layout="twocolumn") and r"table*" not in to_latex(narrow)
    two = to_latex(wide, layout="twocolumn")
    assert r"\begin{table*}" in two and r"\end{table*}" in two and check_latex_structure(two) >= 1
    one = to_latex(wide)
    assert r"table*" not in one and r"{\shortstack{Metric\\number\\1 [\%] $\uparrow$}}" in one  # the widest word
    with pytest.raises(ValueError, match="layout"):
        to_latex(wide, layout="threecolumn")
