"""The LaTeX leaderboards as a reader sees them: compiled with pdflatex, rendered with pdftoppm.

Every table of a smoke-shaped run (:mod:`report_fixtures`: every metric, per-exit values, three
seeds, so intervals and significance marks) must fit a standard 10-pt ``article``: no overfull
``\\hbox`` in the log, no ink right of the text block on any rendered page, in one column
(``\\textwidth``) and in two (``\\columnwidth``, ``table*`` where needed), paper and full view.
The checks are shown to fail on a table that is too wide.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xbench.report.claims import verdicts
from xbench.report.records import Record
from xbench.report.tables import DEFAULT_SIGNIFICANCE, to_latex
from xbench.report.tables.cells import _prepare
from xbench.report.tables.latex import _latex
from xbench.report.views import get_view

pytestmark = pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("pdftoppm") is None,
    reason="needs pdflatex (texlive) and pdftoppm (poppler-utils); .ci/run installs both",
)

DPI = 40
#: Rendered pixels past the text block that still count as inside (antialiasing, rounding).
SLACK_PX = 1


@dataclass
class Page:
    """What compiling a LaTeX body produced: the log's complaints and the rendered pages' overflow."""

    overfull: list[str]  # "Overfull \hbox (12.3pt too wide) ..." lines
    pages: int
    ink_past_margin: list[tuple[int, int]]  # (page, pixels of ink right of the text block)


def compile_document(body: str, folder: Path, twocolumn: bool = False) -> Page:
    """Compile ``body`` in a standard ``article`` (booktabs, siunitx), render it, and measure the overflow."""
    options = "[twocolumn]" if twocolumn else ""
    edges = r"\the\dimexpr 1in+\hoffset+\oddsidemargin+\textwidth\relax"
    document = "\n".join(
        [
            rf"\documentclass{options}{{article}}",
            r"\usepackage{booktabs}",
            r"\usepackage{siunitx}",
            r"\begin{document}",
            rf"\typeout{{XBENCH-RIGHT-EDGE={edges}}}",
            body,
            r"\end{document}",
        ]
    )
    (folder / "doc.tex").write_text(document)
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (folder / "doc.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    overfull = re.findall(r"^Overfull \\hbox.*$", log, re.M)
    pages = int(re.search(r"Output written on doc\.pdf \((\d+) pages?", log).group(1))  # type: ignore[union-attr]
    right_pt = float(re.search(r"XBENCH-RIGHT-EDGE=([\d.]+)pt", log).group(1))  # type: ignore[union-attr]
    subprocess.run(["pdftoppm", "-r", str(DPI), "-gray", "-png", "doc.pdf", "page"], cwd=folder, check=True, timeout=60)
    rendered = sorted(folder.glob("page-*.png"))
    assert len(rendered) == pages
    edge = int(np.ceil(right_pt / 72.27 * DPI)) + SLACK_PX
    past = []
    for number, png in enumerate(rendered, start=1):
        ink = np.asarray(Image.open(png).convert("L")) < 160
        columns = np.flatnonzero(ink.any(axis=0))
        if columns.size and columns.max() > edge:
            past.append((number, int(columns.max() - edge)))
    return Page(overfull, pages, past)


@pytest.mark.parametrize("layout", ["onecolumn", "twocolumn"])
def test_every_table_of_both_views_fits_the_page(smoke_like: list[Record], tmp_path: Path, layout: str) -> None:
    prepared = _prepare(smoke_like, DEFAULT_SIGNIFICANCE)
    found = verdicts(smoke_like)
    assert found, "the fixture carries the methods' claims"
    bodies = [
        _latex(
            prepared, None, f"tab:{name}", claims=found if name == "paper" else None, view=get_view(name), layout=layout
        )
        for name in ("paper", "full")
    ]
    tables = sum(body.count(r"\begin{table") for body in bodies)
    page = compile_document("\n\\clearpage\n".join(bodies), tmp_path, twocolumn=layout == "twocolumn")
    assert page.overfull == []
    assert page.ink_past_margin == []
    # Every table fits on a page of its own at most, and the floats are not all stuck at the end.
    assert 2 <= page.pages <= tables


def too_wide(smoke_like: list[Record]) -> str:
    """One tabular of 14 metric columns with intervals: far wider than any page."""
    records = [
        Record.model_validate(
            {
                **record.model_dump(),
                "metric": f"metric_{i}",
                "display": {"label": f"Metric {i}", "unit": "%", "scale": 100.0, "decimals": 2},
            }
        )
        for record in smoke_like[:2]
        for i in range(14)
    ]
    return to_latex(records, max_columns=14).replace(r"\par\medskip", "")


def test_the_page_checks_catch_a_table_that_is_too_wide(
    smoke_like: list[Record], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xbench.report.tables import latex_fit

    # Pretend the page is 2000 pt wide: the fitting keeps all 14 columns in one block.
    monkeypatch.setitem(latex_fit.LAYOUTS, "onecolumn", ("table", 2000.0))
    page = compile_document(too_wide(smoke_like), tmp_path)
    assert page.overfull and "too wide" in page.overfull[0]
    assert page.ink_past_margin and page.ink_past_margin[0][1] > 50


def test_the_fitted_wide_table_passes_the_same_checks(smoke_like: list[Record], tmp_path: Path) -> None:
    latex = too_wide(smoke_like)
    assert latex.count(r"\begin{tabular}") > 2  # split into blocks that fit
    page = compile_document(latex, tmp_path)
    assert page.overfull == [] and page.ink_past_margin == []


@pytest.mark.parametrize("layout", ["onecolumn", "twocolumn"])
def test_ranking_and_sanity_tables_fit_the_page(tmp_path: Path, layout: str) -> None:
    from tests.helpers import make_record
    from xbench.report.ranking import ranking_latex

    long_rows = ["integrated_gradients", "guided_gradcam", "kernel_shap", "gradient_shap", "ablationcam"]
    records = [
        make_record("baseline (masks, pretrained)", s, metric, v + i / 10, explainer=e, category=cat,
                    higher_is_better=metric != "parameter_randomisation")
        for i, e in enumerate(long_rows)
        for s in range(2)
        for metric, cat, v in (("pointing_game", "localization", 0.1), ("relevance_mass_accuracy", "localization", 0.2),
                               ("parameter_randomisation", "sanity", 0.1), ("randomisation_check", "sanity", 1.0))
    ]  # fmt: skip
    body = ranking_latex(records, layout)
    assert r"\label{tab:ranking:" in body and r"\label{tab:sanity:" in body
    page = compile_document(body, tmp_path, twocolumn=layout == "twocolumn")
    assert page.overfull == []
    assert page.ink_past_margin == []
