"""The leaderboard files of a report: Markdown, CSV and LaTeX, aggregated and tested once for all of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xbench.fileio import atomic_write_text
from xbench.report.claims import to_markdown as claims_markdown
from xbench.report.claims import verdicts as claim_verdicts
from xbench.report.ranking import ranking, ranking_latex, ranking_markdown, sanity
from xbench.report.records import Record
from xbench.report.stats import as_statistics
from xbench.report.tables.cells import DEFAULT_SIGNIFICANCE, Significance, _prepare
from xbench.report.tables.csv import _csv, _long_csv
from xbench.report.tables.latex import _latex
from xbench.report.tables.latex_fit import LAYOUTS
from xbench.report.tables.markdown import _markdown
from xbench.report.views import DEFAULT_VIEW, View, get_view


def write_leaderboard(
    records: Iterable[Record],
    out_dir: str | Path,
    significance: Significance = DEFAULT_SIGNIFICANCE,
    view: str | View = DEFAULT_VIEW,
) -> list[Path]:
    """Write the leaderboard files into ``out_dir`` atomically.

    ``leaderboard.md``, ``leaderboard.tex`` (one-column: every table fits ``\\textwidth``) and
    ``leaderboard_twocolumn.tex`` (``\\columnwidth``, ``table*`` where needed) show ``view``
    (``paper`` by default; :mod:`xbench.report.views`); ``leaderboard.csv`` and
    ``leaderboard_long.csv`` hold every column whatever the view.

    Returns:
        The paths: ``.md``, ``.csv``, ``_long.csv``, ``.tex``, ``_twocolumn.tex``.
    """
    chosen = get_view(view)
    stats = as_statistics(records)
    prepared = _prepare(stats, significance)  # aggregated and tested once for every file
    found = claim_verdicts(stats)  # the papers' claims come first: what a reader looks for
    out_dir = Path(out_dir)
    markdown = _markdown(prepared, "Leaderboard", claims_markdown(found), view=chosen)
    ranked = ranking_markdown(stats)  # the explainers' Ranking and Sanity, after the leaderboards
    if ranked:
        markdown = markdown.rstrip("\n") + "\n\n" + ranked
    one, two = (_latex(prepared, None, None, claims=found, view=chosen, layout=lay) for lay in LAYOUTS)
    if ranked:
        one, two = (
            tex.rstrip("\n") + "\n\n" + ranking_latex(stats, lay) for tex, lay in zip((one, two), LAYOUTS, strict=True)
        )
    ranks, checks = ranking(stats), sanity(stats)
    return [
        atomic_write_text(out_dir / "leaderboard.md", markdown),
        atomic_write_text(out_dir / "leaderboard.csv", _csv([table for table, _ in prepared])),
        atomic_write_text(out_dir / "leaderboard_long.csv", _long_csv(prepared)),
        atomic_write_text(out_dir / "leaderboard.tex", one),
        atomic_write_text(out_dir / "leaderboard_twocolumn.tex", two),
        *([atomic_write_text(out_dir / "ranking.csv", ranks.to_csv(index=False))] if not ranks.empty else []),
        *([atomic_write_text(out_dir / "sanity.csv", checks.to_csv(index=False))] if not checks.empty else []),
    ]
