"""LaTeX text of a leaderboard: escaping, significance marks, cells, ``table-format``, labels and captions."""

from __future__ import annotations

import re
import unicodedata

from xbench.report import significance as sig
from xbench.report.tables.cells import _Cell
from xbench.report.tables.groups import _Mark

# Greek letters (e.g. "egt (λ=0)") have no text-mode glyph with pdflatex's default fonts: math mode.
_GREEK = "αβγδεζηθικλνξπρστυφχψωΓΔΘΛΞΠΣΥΦΨΩ"


def _greek(letter: str) -> str:
    *_, case, _, name = unicodedata.name(letter).split()  # "GREEK SMALL LETTER LAMDA"
    name = name.lower().replace("lamda", "lambda")
    return "$\\" + (name.capitalize() if case == "CAPITAL" else name) + "$"


_LATEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
        "|": r"\textbar{}",
        "±": r"$\pm$",
        "↑": r"$\uparrow$",
        "↓": r"$\downarrow$",
        "µ": r"$\mu$",
        "μ": r"$\mu$",
        "\u00d7": r"$\times$",
        "\u2013": "--",
        "\u2014": "---",
        "\u2212": r"$-$",
        "†": r"\textdagger{}",
        "·": r"$\cdot$",
        "≥": r"$\geq$",
        **{letter: _greek(letter) for letter in _GREEK},
    }
)

_LATEX_MARKS = {sig.BETTER: "+", sig.WORSE: "$-$", sig.TIED: "*"}


def latex_escape(text: str) -> str:
    """Escape ``text`` for LaTeX text mode; ±, ↑, ↓, µ and the multiplication sign become math symbols."""
    return text.translate(_LATEX_ESCAPES)


def _latex_marks(marks: str) -> str:
    # Zero width, so a mark does not push its number out of alignment.
    return rf"\rlap{{\textsuperscript{{{''.join(_LATEX_MARKS[m] for m in marks)}}}}}" if marks else ""


def _latex_cell(cell: _Cell) -> str:
    """An S-column cell: a number, or braced text that siunitx leaves alone."""
    if cell.state == "failed":
        return "{failed}"
    if cell.state == "missing":
        return "{--}"
    number = cell.mean + (rf" \pm {cell.ci}" if cell.ci else "")
    if cell.rank:
        style = r"\textbf" if cell.rank == 1 else r"\underline"
        return rf"{{{style}{{\tablenum{{{number}}}}}{_latex_marks(cell.marks)}}}"
    return number + (f"{{{_latex_marks(cell.marks)}}}" if cell.marks else "")


def _digits(text: str) -> tuple[int, int]:
    """(integer digits, decimal digits) of a formatted number, sign excluded."""
    whole, _, frac = text.lstrip("-").partition(".")
    return len(whole), len(frac)


def _table_format(cells: list[_Cell]) -> str | None:
    """``table-format`` that fits every value of a column (compact uncertainty digits), or None."""
    ok = [c for c in cells if c.state == "ok"]
    if not ok:
        return None
    sign = "-" if any(c.mean.startswith("-") for c in ok) else ""
    integer = max(_digits(c.mean)[0] for c in ok)
    decimals = max(_digits(c.mean)[1] for c in ok)
    # siunitx stores "89.87 \pm 0.12" as 89.87(12): the uncertainty's digits without leading zeros.
    uncertainty = max((len(c.ci.replace(".", "").lstrip("0")) or 1 for c in ok if c.ci), default=0)
    text = f"{sign}{integer}" + (f".{decimals}" if decimals else "")
    return text + (f"({uncertainty})" if uncertainty else "")


def _latex_label(base: str | None, section: str, category: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.:-]+", "-", f"{section}:{category}").strip("-")
    return f"{base}:{slug}" if base else f"tab:xbench:{slug}"


def _latex_caption(parts: list[str | _Mark]) -> str:
    return "".join(
        rf"\textsuperscript{{{_LATEX_MARKS[p.symbol]}}}" if isinstance(p, _Mark) else latex_escape(p) for p in parts
    )
