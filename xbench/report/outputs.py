"""Everything a results folder holds besides the records: tables, plots and the HTML report."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xbench.report.claims import write_claims
from xbench.report.html import write_html
from xbench.report.plots import write_plots
from xbench.report.records import Record
from xbench.report.stats import statistics
from xbench.report.tables import write_leaderboard
from xbench.report.views import DEFAULT_VIEW, View


def write_report(
    records: Iterable[Record],
    out_dir: str | Path,
    title: str,
    saliency: Path | None = None,
    view: str | View = DEFAULT_VIEW,
) -> list[Path]:
    """Write the leaderboards, the plots (``plots/``), ``report.html`` and ``claims.json`` into ``out_dir``.

    Args:
        records: the records to report.
        out_dir: the folder to write into.
        title: the HTML report's title.
        saliency: a folder of ``<dataset>.npz`` saliency samples (see
            :func:`xbench.report.plots.write_saliency`), or None.
        view: what the Markdown, LaTeX and HTML tables show (:mod:`xbench.report.views`).
    """
    stats = statistics(records)  # aggregated once, rendered by the tables, the plots and the HTML
    out_dir = Path(out_dir)
    tables = write_leaderboard(stats, out_dir, view=view)
    plots = write_plots(stats, out_dir, saliency if saliency is not None and saliency.exists() else None)
    html = write_html(stats, out_dir, [p for p in plots if p.suffix == ".png"], title, view=view)
    claims = write_claims(stats, out_dir)
    return [*tables, *plots, html, *claims]
