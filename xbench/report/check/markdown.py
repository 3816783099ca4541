"""The outcome of a check as GitHub-flavoured Markdown: a verdict line, notes and a table per status."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from xbench.report.check.comparison import STATUSES, CheckResult, Comparison
from xbench.report.stats import arrow

_TITLES = {
    "regressed": "Regressed",
    "missing": "Missing",
    "improved": "Improved",
    "changed": "Changed (no direction)",
    "new": "New (not in the baseline)",
}


def _fmt(value: float, display: Mapping[str, Any], signed: bool = False, unit: bool = True) -> str:
    x = value * float(display["scale"])
    decimals = int(display["decimals"])
    text = f"{x:{'+' if signed else ''}.{decimals}f}"
    if x != 0 and float(text) == 0:  # a real difference that the display precision would hide
        text = f"{x:{'+' if signed else ''}.2g}"
    elif float(text) == 0:
        text = f"{0:.{decimals}f}"  # no "-0.00" / "+0.00"
    return f"{text} {display['unit']}" if unit and display["unit"] else text


def _value_cell(value: float | None, ci: float | None, seeds: int, display: Mapping[str, Any]) -> str:
    if value is None:
        return "\u2014"
    text = _fmt(value, display, unit=False)
    if ci is not None and math.isfinite(ci) and ci > 0:
        text += f" ± {_fmt(ci, display, unit=False)}"
    if display["unit"]:
        text += f" {display['unit']}"
    return f"{text} ({seeds} seed{'s' if seeds != 1 else ''})"


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _metric_cell(row: Comparison) -> str:
    return f"{row.metric}{f' @exit {row.exit}' if row.exit is not None else ''}{arrow(row.higher_is_better)}"


def verdict(result: CheckResult) -> str:
    """One line: PASS or FAIL with the count of each status."""
    counts = {status: len(result.by_status(status)) for status in STATUSES}
    total = sum(counts[s] for s in STATUSES if s != "new")
    detail = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s != "ok")
    word = "FAIL" if result.failed else "PASS"
    return f"**{word}**: {detail}; {counts['ok']} of {total} baseline rows within tolerance."


def to_markdown(result: CheckResult, title: str | None = None) -> str:
    """GitHub-flavoured Markdown: a verdict line, notes, then a table per non-empty status (not ``ok``)."""
    parts = [f"# {title}\n"] if title else []
    parts.append(verdict(result) + "\n")
    if result.notes:
        parts.append("\n".join(f"- Note: {note}" for note in result.notes) + "\n")
    header = ["Dataset", "Method", "Explainer", "Metric", "Baseline", "Current", "Delta", "Tolerance", "Note"]
    for status in STATUSES:
        rows = result.by_status(status)
        if status == "ok" or not rows:
            continue
        lines = ["| " + " | ".join(header) + " |", "|:---|:---|:---|:---|---:|---:|---:|---:|:---|"]
        for row in rows:
            delta = row.delta
            tolerance = (
                "\u2014" if row.tolerance is None else f"±{_fmt(row.tolerance, row.display)} ({row.tolerance_kind})"
            )
            cells = [
                row.dataset,
                row.method,
                row.explainer or "\u2014",
                _metric_cell(row),
                _value_cell(row.baseline, row.baseline_ci, row.baseline_seeds, row.display),
                _value_cell(row.current, row.current_ci, row.current_seeds, row.display),
                "\u2014" if delta is None else _fmt(delta, row.display, signed=True),
                tolerance,
                row.note,
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        parts.append(f"## {_TITLES[status]} ({len(rows)})\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)
