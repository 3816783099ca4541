"""How wide LaTeX tables print, so that the leaderboard can fit them to a page before TeX sees them.

Widths are those of Computer Modern at ``\\small`` in a 10 pt ``article`` (9 pt, pdflatex's
default OT1 fonts), measured once with ``\\settowidth`` on every printable ASCII character and
on the symbols :func:`xbench.report.tables.latex_escape` produces. Summing character widths
ignores kerning, which only ever narrows a word, so an estimate errs on the wide side.

Page widths are those of the standard ``article`` class at 10 pt: ``\\textwidth`` is 345 pt in
one column; in two columns (A4, the narrower of A4 and letter) ``\\textwidth`` is 453 pt and
``\\columnwidth`` 221.5 pt.
"""

from __future__ import annotations

#: ``\\small`` text widths in pt, grouped by width (normal weight).
_TEXT_WIDTHS = {
    2.57: "!',.:;[]`il|·",
    2.83: "fj",
    3.08: "- ",  # the interword space as well as the hyphen
    3.33: "_",
    3.34: "I",
    3.6: "()t",
    3.62: "r",
    3.65: "s",
    4.11: "cez†",
    4.37: "?",
    4.62: '"$*/0123456789\\^ago{}~–↑↓',
    4.75: "J",
    4.88: "kqvxy",
    5.14: "Sbdhnpu",
    5.4: "λ",
    5.57: "µμ",
    5.65: "Z",
    5.78: "L",
    6.04: "F",
    6.29: "EP",
    6.55: "B",
    6.68: "CTw",
    6.81: "R",
    6.94: "AHNUVXY",
    7.07: "D",
    7.19: "&+<=>@KOQ±×−≥",
    7.26: "G",
    7.71: "#%m",
    8.48: "M",
    9.25: "—",
    9.51: "W",
}
TEXT_WIDTH = {char: width for width, chars in _TEXT_WIDTHS.items() for char in chars}
#: Any other character (accents, other scripts): as wide as a capital M, to err on the wide side.
OTHER_WIDTH = 8.48

#: siunitx numbers at ``\\small``, bold (``detect-weight``: the widest a column's cell can be).
DIGIT = 5.325
DECIMAL_MARKER = 2.958
MINUS = 8.283
#: `` ± `` between a value and its uncertainty (``separate-uncertainty``), spaces included.
PLUS_MINUS = 13.02

#: ``\\tabcolsep`` the leaderboard's tables use (LaTeX's default is 6 pt).
TABCOLSEP = 4.0
#: Line widths of a 10 pt ``article`` (pt).
ONE_COLUMN_TEXTWIDTH = 345.0
TWO_COLUMN_TEXTWIDTH = 453.0
TWO_COLUMN_COLUMNWIDTH = 221.5


def text_width(text: str) -> float:
    """Estimated width in pt of ``text`` set at ``\\small`` (before LaTeX escaping)."""
    return sum(TEXT_WIDTH.get(char, OTHER_WIDTH) for char in text)


def number_width(integer: int, decimals: int, negative: bool = False, uncertainty: int = 0) -> float:
    """Width in pt of an S column whose numbers have at most ``integer`` and ``decimals`` digits.

    ``uncertainty`` is the number of digits of the widest printed uncertainty (``0.12``: 3),
    0 for none; it has the value's decimals.
    """
    width = DIGIT * integer + (DECIMAL_MARKER + DIGIT * decimals if decimals else 0.0)
    width += MINUS if negative else 0.0
    if uncertainty:
        width += PLUS_MINUS + DIGIT * uncertainty + (DECIMAL_MARKER if decimals else 0.0)
    return width
