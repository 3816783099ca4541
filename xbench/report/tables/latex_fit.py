"""LaTeX tables fitted to the page: columns with estimated widths (:mod:`xbench.report.tables.texwidth`),
wrapped headers, and the blocks of columns stacked in one float when a table is too wide for one ``tabular``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xbench.report.tables.cells import _Analysis, _Cell
from xbench.report.tables.groups import (
    _exit_cells,
    _exit_rows,
    _Group,
    _header,
    _metric_columns,
    _metric_header,
)
from xbench.report.tables.latex_text import _LATEX_MARKS, _digits, _latex_cell, _table_format, latex_escape
from xbench.report.tables.layout import _Table
from xbench.report.tables.texwidth import (
    ONE_COLUMN_TEXTWIDTH,
    TABCOLSEP,
    TWO_COLUMN_COLUMNWIDTH,
    TWO_COLUMN_TEXTWIDTH,
    number_width,
    text_width,
)


@dataclass(frozen=True)
class _LatexColumn:
    """One column of a LaTeX table: its spec, header, cells and estimated width in pt.

    ``overhang`` is how far the zero-width significance marks of its cells reach past it.
    """

    spec: str
    header: str
    cells: list[str]
    width: float
    overhang: float = 0.0


def _mark_width(marks: str) -> float:
    # \textsuperscript at \small sets in 6 pt: two thirds of the 9-pt widths, plus a little air.
    return text_width("".join(_LATEX_MARKS[m].strip("$") for m in marks)) * 2 / 3 + 1.0 if marks else 0.0


def _header_lines(text: str, width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` where a word allows."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and text_width(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


#: Headers wrap into lines at least this wide (pt), so that short labels stay on one line.
_HEADER_LINE = 34.0


def _latex_header(text: str, width: float | None) -> tuple[str, float]:
    r"""A header in lines (``\shortstack``) about ``width`` wide (None: one line), braced, and its width."""
    widest_word = max(text_width(w) for w in text.split(" "))
    lines = [text] if width is None else _header_lines(text, max(width, widest_word, _HEADER_LINE))
    # A line starting with "[" would be read as the optional argument of the \\ before it.
    escaped = [("{}" if i and line.startswith("[") else "") + latex_escape(line) for i, line in enumerate(lines)]
    body = escaped[0] if len(escaped) == 1 else r"\shortstack{" + r"\\".join(escaped) + "}"
    return "{" + body + "}", max(text_width(line) for line in lines)


def _number_column(title: str, cells: list[_Cell], wrap: bool) -> _LatexColumn:
    """An S column (a c column when no cell has a number) fitted to its values and header (wrapped: in lines)."""
    fmt = _table_format(cells)
    ok = [c for c in cells if c.state == "ok"]
    numbers = 0.0
    if ok:
        numbers = number_width(
            max(_digits(c.mean)[0] for c in ok),
            max(_digits(c.mean)[1] for c in ok),
            negative=any(c.mean.startswith("-") for c in ok),
            uncertainty=max((len(c.ci.replace(".", "")) for c in ok if c.ci), default=0),
        )
    words = {"failed": "failed", "missing": "–"}
    texts = max((text_width(words[c.state]) for c in cells if c.state != "ok"), default=0.0)
    header, header_width = _latex_header(title, max(numbers, texts) if wrap else None)
    overhang = max((_mark_width(c.marks) for c in cells), default=0.0)
    spec = f"S[table-format={fmt}]" if fmt else "c"
    return _LatexColumn(spec, header, [_latex_cell(c) for c in cells], max(numbers, texts, header_width), overhang)


def _label_column(title: str, labels: list[str], spec: str = "l") -> _LatexColumn:
    width = max([text_width(title), *(text_width(label) for label in labels)])
    return _LatexColumn(spec, latex_escape(title), [latex_escape(label) for label in labels], width)


def _tabular_width(columns: list[_LatexColumn]) -> float:
    """Estimated width of a tabular of ``columns`` as :func:`_tabular_lines` sets it (``@{}`` at both edges)."""
    gaps = 2 * TABCOLSEP * (len(columns) - 1)
    inner = sum(max(c.overhang - 2 * TABCOLSEP, 0.0) for c in columns[:-1])
    return sum(c.width for c in columns) + gaps + inner + columns[-1].overhang


def _tabular_lines(columns: list[_LatexColumn], rules: Sequence[int] = ()) -> list[str]:
    """A booktabs tabular of ``columns``; ``rules`` are body rows after which an ``\addlinespace`` goes."""
    spec = "@{}"
    for i, column in enumerate(columns):
        spec += column.spec
        last = i == len(columns) - 1
        # A column whose marks reach past its cells gets the room before the next column.
        reach = column.overhang if last else max(column.overhang, 2 * TABCOLSEP)
        if last:
            spec += f"@{{\\hspace{{{reach:.1f}pt}}}}" if reach else "@{}"
        elif column.overhang > 2 * TABCOLSEP:
            spec += f"@{{\\hspace{{{reach:.1f}pt}}}}"
    header = " & ".join(c.header for c in columns) + r" \\"
    body = []
    for i, row in enumerate(zip(*(c.cells for c in columns), strict=True)):
        if i in rules:
            body.append(r"\addlinespace")
        body.append(" & ".join(row) + r" \\")
    return [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]


def _blocks(
    labels: list[_LatexColumn], columns: list[_LatexColumn], width: float, most: int
) -> list[list[_LatexColumn]]:
    """``columns`` in order, packed into blocks that fit ``width`` beside the label columns (at most ``most`` each)."""
    blocks: list[list[_LatexColumn]] = []
    for column in columns:
        if blocks and len(blocks[-1]) < most and _tabular_width([*labels, *blocks[-1], column]) <= width:
            blocks[-1].append(column)
        else:
            blocks.append([column])
    # As many blocks, but of even size where they fit (4 + 1 columns reads worse than 3 + 2).
    size = -(-len(columns) // len(blocks))
    even = [columns[i : i + size] for i in range(0, len(columns), size)]
    if len(even) == len(blocks) and all(_tabular_width([*labels, *block]) <= width for block in even):
        return even
    return blocks


def _latex_columns(
    table: _Table, analysis: _Analysis, group: _Group, wrap: bool
) -> tuple[list[_LatexColumn], list[_LatexColumn], list[int]]:
    """(label columns, metric columns, body rows before which a method's rows start) of one group.

    ``wrap`` sets the metric headers in lines about as wide as their numbers.
    """
    first = "Method (explainer)" if table.explained else "Method"
    if not group.per_exit:
        labels = [_label_column(first, [str(row) for row in table.stats.index])]
        metrics = [_number_column(_header(table.columns.loc[k]), list(analysis.cells[k]), wrap) for k in group.keys]
        return labels, metrics, []
    pairs = _exit_rows(table, group)
    # A method's name on its first exit only; a little space between methods.
    names = [row if i == 0 or pairs[i - 1][0] != row else "" for i, (row, _) in enumerate(pairs)]
    starts = [i for i, (row, _) in enumerate(pairs) if i and pairs[i - 1][0] != row]
    labels = [_label_column(first, names), _label_column("Exit", [str(e) for _, e in pairs], "c")]
    lines = [_exit_cells(table, analysis, group, row, exit) for row, exit in pairs]
    metrics = [
        _number_column(_metric_header(column), [line[j] for line in lines], wrap)
        for j, column in enumerate(_metric_columns(table, group))
    ]
    return labels, metrics, starts


#: Page layouts of :func:`to_latex`: (float, width in pt) of a table that fits one column, and of
#: one that does not (None: there is no wider float).
LAYOUTS = {"onecolumn": ("table", ONE_COLUMN_TEXTWIDTH), "twocolumn": ("table", TWO_COLUMN_COLUMNWIDTH)}
#: What a table is allowed to fill of its line width, for the estimate's errors.
_FILL = 0.97


def _fit(
    table: _Table, analysis: _Analysis, group: _Group, layout: str, max_columns: int
) -> tuple[str, list[list[_LatexColumn]], list[_LatexColumn], list[int]]:
    """(float environment, blocks of metric columns, label columns, method starts) that fit the layout.

    Headers stay on one line when the whole table fits in one block; otherwise they wrap and
    the columns are packed into as few blocks as fit. In two columns a table that needs more
    than one block at ``\\columnwidth`` becomes a ``table*`` packed to the page's ``\\textwidth``.
    """
    env, width = LAYOUTS[layout]
    labels, metrics, starts = _latex_columns(table, analysis, group, wrap=False)
    if len(metrics) <= max_columns and _tabular_width([*labels, *metrics]) <= width * _FILL:
        return env, [metrics], labels, starts
    labels, metrics, starts = _latex_columns(table, analysis, group, wrap=True)
    blocks = _blocks(labels, metrics, width * _FILL, max_columns)
    if layout == "twocolumn" and len(blocks) > 1:
        env = "table*"
        blocks = _blocks(labels, metrics, TWO_COLUMN_TEXTWIDTH * _FILL, max_columns)
    return env, blocks, labels, starts
