"""Leaderboards as GitHub-flavoured Markdown: per section a ``## <section>``, its caption and a ``### <table>`` each."""

from __future__ import annotations

from collections.abc import Iterable

from xbench.report import significance as sig
from xbench.report.records import Record
from xbench.report.tables.cells import DEFAULT_SIGNIFICANCE, Significance, _Analysis, _Cell, _prepare, _Prepared
from xbench.report.tables.groups import (
    _caption,
    _exit_cells,
    _exit_rows,
    _Group,
    _group_note,
    _groups,
    _header,
    _Mark,
    _metric_columns,
    _metric_header,
)
from xbench.report.tables.layout import _Table
from xbench.report.views import FULL, View, get_view

_MD_MARKS = {sig.BETTER: "+", sig.WORSE: "\u2212", sig.TIED: "*"}


def _md_marks(marks: str) -> str:
    return f"<sup>{''.join(_MD_MARKS[m] for m in marks)}</sup>" if marks else ""


def _md_cell(cell: _Cell) -> str:
    if cell.state == "failed":
        return "failed"
    if cell.state == "missing":
        return "\u2013"
    mean = {1: f"**{cell.mean}**", 2: f"<u>{cell.mean}</u>"}.get(cell.rank, cell.mean)
    return mean + (f" ± {cell.ci}" if cell.ci else "") + _md_marks(cell.marks)


def _md_caption(parts: list[str | _Mark]) -> str:
    return "".join(_md_marks(p.symbol) if isinstance(p, _Mark) else p for p in parts)


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(
    records: Iterable[Record],
    title: str | None = None,
    significance: Significance = DEFAULT_SIGNIFICANCE,
    view: str | View = FULL,
) -> str:
    """GitHub-flavoured Markdown: per section a ``## section`` heading, its caption and its tables.

    ``view`` (:mod:`xbench.report.views`) picks the tables: ``full`` (the default here) one per
    category with every column, ``paper`` compact ones and per-exit tables.
    """
    return _markdown(_prepare(records, significance), title, view=get_view(view))


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_group(table: _Table, analysis: _Analysis, group: _Group) -> list[str]:
    first = "Method (explainer)" if table.explained else "Method"
    if group.per_exit:
        header = [first, "Exit", *(_metric_header(c) for c in _metric_columns(table, group))]
        body = [
            _md_row(
                [
                    _markdown_escape(row),
                    str(exit),
                    *(_md_cell(c) for c in _exit_cells(table, analysis, group, row, exit)),
                ]
            )
            for row, exit in _exit_rows(table, group)
        ]
        align = "|:---|---:|" + "---:|" * len(group.metrics)
    else:
        header = [first, *(_header(table.columns.loc[k]) for k in group.keys)]
        body = [
            _md_row([_markdown_escape(str(row)), *(_md_cell(c) for c in cells)])
            for row, cells in zip(table.stats.index, analysis.cells[group.keys].to_numpy().tolist(), strict=True)
        ]
        align = "|:---|" + "---:|" * len(group.keys)
    return [_md_row([_markdown_escape(h) for h in header]), align, *body]


def _markdown(prepared: _Prepared, title: str | None, claims: str = "", view: View = FULL) -> str:
    parts = [f"# {title}\n"] if title else []
    if claims:
        parts.append(claims)
    for table, analysis in prepared:
        section = [f"## {table.name}\n\n{_md_caption(_caption(table, analysis))}\n"]
        for group in _groups(table, view):
            note = _group_note(table, group)
            lines = _md_group(table, analysis, group)
            section.append(f"### {group.heading}\n\n" + (f"{note}\n\n" if note else "") + "\n".join(lines) + "\n")
        parts.append("\n".join(section))
    return "\n".join(parts) if parts else "No records.\n"
