"""A self-contained HTML report: one file with the summary, leaderboards and plots.

``report.html`` needs nothing but itself: CSS is inline, plots are embedded as base64
PNG ``data:`` URIs, and there is no JavaScript and no external reference, so it opens
offline in any browser and can be mailed or archived as is. Every piece of text that
comes from records (suite, method and metric labels, versions) is HTML-escaped.

Sections: title, run summary (suites, datasets, methods, cells, seeds, failures,
devices, git and library versions, all read from the records), the leaderboards (the
Markdown of :func:`xbench.report.tables.to_markdown` rendered as HTML tables), the
plots, Coded ResNeXt's branch-energy heatmaps (plots whose file name starts with
``branch_energy_``) and the saliency grids (``saliency_``).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from xbench.errors import DataError
from xbench.fileio import atomic_write_text
from xbench.report.claims import to_markdown as claims_markdown
from xbench.report.claims import verdicts as claim_verdicts
from xbench.report.ranking import ranking_markdown
from xbench.report.records import Record
from xbench.report.stats import as_statistics
from xbench.report.tables import to_markdown
from xbench.report.views import DEFAULT_VIEW, View

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d1d1f;
       background: #fafafa; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
h4 { margin: 1rem 0 0.2rem; color: #333; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; background: #fff; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f0f0f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary th { text-align: left; white-space: nowrap; }
.caption { color: #555; font-size: 0.9rem; margin: 0.2rem 0; }
.scroll { overflow-x: auto; }
figure { margin: 1.2rem 0; background: #fff; border: 1px solid #e3e3e3; padding: 0.6rem; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #444; font-size: 0.9rem; margin-top: 0.4rem; text-align: center; }
footer { color: #888; font-size: 0.8rem; margin-top: 3rem; }
"""

_ENERGY_CAPTION = (
    "Each coded block's branch energies on the test split: one row per class, the mean energy per branch "
    "scaled to sum 1; the branches of the class's codeword are outlined. A perfectly coded network puts all "
    "of a class's energy inside its outlines (branch_energy = 100%); a class-blind one about N_act/N."
)
_SEPARATOR_CELL = re.compile(r"^:?-{3,}:?$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
# The leaderboard marks second-best values with <u>..</u> and significance with <sup>..</sup>;
# after escaping, only such balanced pairs without attributes are turned back into markup.
_TAG_PAIR = re.compile(r"&lt;(u|sup|sub)&gt;(.*?)&lt;/\1&gt;")


def _inline(text: str) -> str:
    """Escape Markdown cell/paragraph text for HTML; render ``**bold**``, ``<u>``, ``<sup>`` and ``<sub>``."""
    escaped = html.escape(text.replace(r"\|", "|"))
    return _TAG_PAIR.sub(r"<\1>\2</\1>", _BOLD.sub(r"<strong>\1</strong>", escaped))


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith(r"\|") else line
    return [cell.strip() for cell in _CELL_SPLIT.split(line)]


def _table_html(lines: list[str]) -> str:
    """A Markdown pipe table as an HTML table (first row the header when a separator row follows)."""
    rows = [_cells(line) for line in lines]
    sep = next((i for i, row in enumerate(rows) if row and all(_SEPARATOR_CELL.match(c) for c in row)), None)
    align = ["num" if c.endswith(":") and not c.startswith(":") else "" for c in rows[sep]] if sep is not None else []
    header, body = (rows[:sep], rows[sep + 1 :]) if sep is not None else ([], rows)

    def row_html(row: list[str], tag: str) -> str:
        cells = []
        for j, cell in enumerate(row):
            cls = f' class="{align[j]}"' if j < len(align) and align[j] else ""
            cells.append(f"<{tag}{cls}>{_inline(cell)}</{tag}>")
        return "<tr>" + "".join(cells) + "</tr>"

    parts = ['<div class="scroll"><table>']
    if header:
        parts.append("<thead>" + "".join(row_html(r, "th") for r in header) + "</thead>")
    parts.append("<tbody>" + "".join(row_html(r, "td") for r in body) + "</tbody>")
    parts.append("</table></div>")
    return "".join(parts)


def markdown_to_html(markdown: str, heading_offset: int = 1) -> str:
    """Render the Markdown subset the leaderboard uses: ``#`` headings, paragraphs, pipe tables,
    ``**bold**`` and the inline tags ``<u>``, ``<sup>``, ``<sub>``.

    A heading of level k becomes ``<h{k + heading_offset}>`` (at most h6). Everything is
    escaped, so no text of the Markdown can inject markup.
    """
    out: list[str] = []
    block: list[str] = []
    kind = ""

    def flush() -> None:
        if block and kind == "table":
            out.append(_table_html(block))
        elif block:
            out.append('<p class="caption">' + _inline(" ".join(line.strip() for line in block)) + "</p>")
        block.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped or heading:
            flush()
            if heading:
                level = min(len(heading.group(1)) + heading_offset, 6)
                out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            continue
        line_kind = "table" if stripped.startswith("|") else "text"
        if line_kind != kind:
            flush()
            kind = line_kind
        block.append(stripped)
    flush()
    return "\n".join(out)


def _values(items: Iterable[object]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item is not None:
            seen.setdefault(str(item), None)
    return list(seen)


def _summary_rows(records: Sequence[Record]) -> list[tuple[str, str]]:
    failed_cells = _values(r.cell for r in records if r.status == "failed")
    seeds = sorted({r.seed for r in records})
    versions: dict[str, dict[str, None]] = {}
    for r in records:
        for key, value in r.versions.items():
            versions.setdefault(str(key), {}).setdefault(str(value), None)
    rows = [
        ("Suite", ", ".join(_values(r.suite for r in records)) or "–"),
        ("Datasets", ", ".join(_values(r.dataset for r in records)) or "–"),
        ("Methods", ", ".join(_values(r.method for r in records)) or "–"),
        ("Explainers", ", ".join(_values(r.explainer for r in records)) or "–"),
        ("Cells", str(len(_values(r.cell for r in records)))),
        ("Seeds", f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "–"),
        (
            "Records",
            f"{sum(r.status == 'ok' for r in records)} ok, {sum(r.status == 'failed' for r in records)} failed",
        ),
        ("Failed cells", ", ".join(failed_cells) if failed_cells else "none"),
        ("Devices", ", ".join(_values(r.device for r in records)) or "–"),
        ("Git", ", ".join(_values(r.git for r in records)) or "not recorded (not a git checkout)"),
    ]
    rows += [(f"Version: {key}", ", ".join(values)) for key, values in sorted(versions.items())]
    return rows


def _summary_html(records: Sequence[Record]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>" for key, value in _summary_rows(records)
    )
    return f'<table class="summary"><tbody>{rows}</tbody></table>'


def _png_title(path: Path) -> str:
    with Image.open(path) as image:
        text = getattr(image, "text", {}) or {}
    return str(text.get("Title") or path.stem)


def _pngs(plots: Iterable[str | Path]) -> list[Path]:
    """The PNG of every plot (a PDF stands for its PNG sibling), each once, in order."""
    seen: dict[Path, None] = {}
    for plot in plots:
        path = Path(plot)
        png = path.with_suffix(".png")
        if path.suffix.lower() != ".png" and not png.is_file():
            continue  # a PDF without a PNG next to it cannot be shown inline
        if not png.is_file():
            raise DataError(f"plot not found: {png}")
        seen.setdefault(png, None)
    return list(seen)


def _figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    title = html.escape(_png_title(path))
    return (
        f'<figure id="{html.escape(path.stem)}"><img src="data:image/png;base64,{data}" alt="{title}">'
        f"<figcaption>{title}</figcaption></figure>"
    )


def render_html(
    records: Iterable[Record], plots: Iterable[str | Path], title: str, view: str | View = DEFAULT_VIEW
) -> str:
    """The report as one HTML string; see the module docstring for what it contains.

    ``records`` may be their :func:`~xbench.report.stats.statistics`, which the leaderboards then reuse;
    ``view`` picks what the tables show (:mod:`xbench.report.views`).
    """
    stats = as_statistics(records)
    pngs = _pngs(plots)
    saliency = [p for p in pngs if p.stem.startswith("saliency_")]
    energy = [p for p in pngs if p.stem.startswith("branch_energy_")]
    others = [p for p in pngs if p not in saliency and p not in energy]
    claims = claims_markdown(claim_verdicts(stats))
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        *([f'<section id="claims">{markdown_to_html(claims, heading_offset=0)}</section>'] if claims else []),
        f'<section id="summary"><h2>Run summary</h2>{_summary_html(stats.records)}</section>',
        '<section id="leaderboard"><h2>Leaderboards</h2>'
        + markdown_to_html(to_markdown(stats, view=view))
        + "</section>",
    ]
    ranked = ranking_markdown(stats)
    if ranked:  # the explainers' Ranking and Sanity tables (their own h2 headings)
        sections.append(f'<section id="ranking">{markdown_to_html(ranked, heading_offset=0)}</section>')
    if others:
        sections.append('<section id="plots"><h2>Plots</h2>' + "".join(_figure_html(p) for p in others) + "</section>")
    if energy:
        sections.append(
            '<section id="branch-energy"><h2>Branch energy (Coded ResNeXt)</h2>'
            f'<p class="caption">{html.escape(_ENERGY_CAPTION)}</p>'
            + "".join(_figure_html(p) for p in energy)
            + "</section>"
        )
    if saliency:
        sections.append(
            '<section id="saliency"><h2>Saliency maps</h2>' + "".join(_figure_html(p) for p in saliency) + "</section>"
        )
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n<footer>Generated by xbench.</footer>\n</main>\n</body>\n</html>\n"
    )


def write_html(
    records: Iterable[Record],
    out_dir: str | Path,
    plots: Iterable[str | Path],
    title: str,
    view: str | View = DEFAULT_VIEW,
) -> Path:
    """Write the self-contained report to ``out_dir/report.html`` atomically and return its path.

    Args:
        records: the run's records.
        out_dir: the report folder.
        plots: plot files to embed (e.g. what :func:`xbench.report.plots.write_plots` returned);
            PNGs are embedded, a PDF stands for the PNG next to it.
        title: the page title and heading.
        view: what the tables show (:mod:`xbench.report.views`).

    Raises:
        DataError: a listed PNG does not exist.
    """
    return atomic_write_text(Path(out_dir) / "report.html", render_html(records, plots, title, view))
