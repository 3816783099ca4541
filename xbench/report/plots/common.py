"""What the plots share: the cells they show, new figures and their titles, colours, text measurement."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.layout_engine import ConstrainedLayoutEngine

from xbench.report.stats import Statistics

# ----------------------------------------------------------------------------- records


def _shown(stats: Statistics, dataset: str) -> pd.DataFrame:
    """The cells of ``dataset`` with a successful seed (a plot shows nothing of a failure)."""
    cells = stats.shown
    return cells[cells["dataset"] == dataset]


def _display(cells: pd.DataFrame, metric: str) -> tuple[str, str, float]:
    """``(label, unit, scale)`` of the first cell of ``metric`` in ``cells``."""
    cell = cells[cells["metric"] == metric].iloc[0]
    return str(cell["label"]), str(cell["unit"]), float(cell["scale"])


def _overall(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (cells or measurements) of the final output (no exit) that are not explanation metrics."""
    return frame[frame["exit"].isna() & frame["explainer"].isna()]


# ----------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    # Constrained layout with a margin as wide as the padding of bbox_inches="tight" around the
    # figure: the whole figure is saved, so the margin is the image's.
    pad = float(mpl.rcParams["savefig.pad_inches"])
    fig = Figure(figsize=(width, height), layout=ConstrainedLayoutEngine(w_pad=pad, h_pad=pad))
    FigureCanvasAgg(fig)
    return fig


def _suptitle(fig: Figure, text: str) -> None:
    """Title ``fig``, widening it when the title is wider, so that the whole figure can be saved as is."""
    fig.suptitle(text)
    width, height = fig.get_size_inches()
    needed = _text_inches(text, mpl.rcParams["figure.titlesize"])[0] + 0.3
    if needed > width:
        fig.set_size_inches(needed, height)


def _colors(names: Sequence[str]) -> dict[str, Any]:
    palette = sns.color_palette("tab10" if len(names) <= 10 else "husl", n_colors=max(len(names), 1))
    return dict(zip(names, palette, strict=False))


@functools.cache
def _measuring_renderer() -> RendererAgg:
    return RendererAgg(8, 8, 100)


def _text_inches(text: str, size: str | float) -> tuple[float, float]:
    """Width and height in inches of ``text`` (one line per ``\\n``) in the default font at ``size``."""
    renderer = _measuring_renderer()
    prop = FontProperties(size=size)
    lines = text.split("\n")
    widths = [renderer.get_text_width_height_descent(line or " ", prop, ismath=False)[0] for line in lines]
    line_h = renderer.get_text_width_height_descent("lp", prop, ismath=False)[1]
    return max(widths) / renderer.dpi, line_h * (1 + 1.2 * (len(lines) - 1)) / renderer.dpi


def _fixed_empty_labels(ax: Axes) -> None:
    """Pin the axis labels that are empty, sparing matplotlib a search for their place on every draw."""
    if not ax.get_xlabel():
        ax.xaxis.set_label_coords(0.5, 0.0)
    if not ax.get_ylabel():
        ax.yaxis.set_label_coords(0.0, 0.5)
