"""Leaderboards: pure functions from records to Markdown, CSV and LaTeX tables.

The modules, from the data model to the files:

* :mod:`~xbench.report.tables.layout`: a leaderboard's sections (per dataset, and per dataset's
  explanation metrics), their rows and their columns, in order;
* :mod:`~xbench.report.tables.cells`: each cell's mean and CI as printed, its rank (bold,
  underlined) and its significance marks;
* :mod:`~xbench.report.tables.groups`: the tables a view prints of a section, their headers,
  notes and captions;
* :mod:`~xbench.report.tables.markdown` and :mod:`~xbench.report.tables.csv`: Markdown and CSV;
* :mod:`~xbench.report.tables.latex_text`, :mod:`~xbench.report.tables.latex_fit` and
  :mod:`~xbench.report.tables.latex`: LaTeX, fitted to the page by the width estimates of
  :mod:`~xbench.report.tables.texwidth`;
* :mod:`~xbench.report.tables.leaderboard`: the leaderboard files of a report.
"""

from xbench.report.tables.cells import DEFAULT_SIGNIFICANCE, Significance
from xbench.report.tables.csv import LONG_COLUMNS, to_csv, to_long_csv
from xbench.report.tables.groups import EXIT_NOTE
from xbench.report.tables.latex import LATEX_PREAMBLE, to_latex
from xbench.report.tables.latex_fit import LAYOUTS
from xbench.report.tables.latex_text import latex_escape
from xbench.report.tables.layout import EXPLANATIONS, leaderboard_frame
from xbench.report.tables.leaderboard import write_leaderboard
from xbench.report.tables.markdown import to_markdown

__all__ = [
    "DEFAULT_SIGNIFICANCE",
    "EXIT_NOTE",
    "EXPLANATIONS",
    "LATEX_PREAMBLE",
    "LAYOUTS",
    "LONG_COLUMNS",
    "Significance",
    "latex_escape",
    "leaderboard_frame",
    "to_csv",
    "to_latex",
    "to_long_csv",
    "to_markdown",
    "write_leaderboard",
]
