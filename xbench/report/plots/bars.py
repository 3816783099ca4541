"""Bar charts per category: a facet per metric, a bar per row (mean ± 95% CI), laid out from measured text."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xbench.report.plots.common import _colors, _display, _fixed_empty_labels, _shown, _text_inches
from xbench.report.plots.saving import _FittedFigure
from xbench.report.records import Record
from xbench.report.stats import CATEGORY_ORDER, Statistics, as_statistics, column_title

#: Categories with a bar chart, in this order; categories not listed follow in order of appearance.
CATEGORIES = CATEGORY_ORDER


def figure_category(records: Iterable[Record], dataset: str, category: str) -> Figure | None:
    """Bar chart of the ``category`` metrics on ``dataset``: a facet per metric, a bar per row.

    Rows are methods, or ``method (explainer)`` for explanation metrics; bars are means
    in display units with 95% CI error bars over seeds. Per-exit values are left out.
    """
    return _category(as_statistics(records), dataset, category)


def _category(stats: Statistics, dataset: str, category: str) -> Figure | None:
    cells = _shown(stats, dataset)
    cells = cells[(cells["category"] == category) & cells["exit"].isna()]
    if cells.empty:
        return None
    by_metric = {str(m): rows for m, rows in cells.groupby("metric", sort=False)}
    metrics = list(by_metric)
    rows_all = [str(r) for r in cells["row"].unique()]
    names_of = {m: [str(r) for r in rows["row"]] for m, rows in by_metric.items()}
    # When every facet has the same rows in the same order, the bars of a line of facets line
    # up, so the row names are written once, left of each line, and the facets can be narrower.
    shared = len({tuple(names) for names in names_of.values()}) == 1
    colors = _colors(rows_all)
    most = 5 if shared else 3  # facets per line
    ncols = math.ceil(len(metrics) / math.ceil(len(metrics) / most))  # lines as full as can be
    named = [not shared or i % ncols == 0 for i in range(len(metrics))]
    titles = {m: _facet_title(rows, m) for m, rows in by_metric.items()}
    fig, axes = _facet_grid(
        ncols,
        len(rows_all),
        [names_of[m] if show else [] for m, show in zip(metrics, named, strict=True)],
        list(titles.values()),
        f"{dataset}: {category} metrics (mean ± 95% CI over seeds)",
    )
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
        rows = by_metric[metric]
        scale = _display(rows, metric)[2]
        names = names_of[metric]
        means = rows["mean"].to_numpy(dtype="float64") * scale
        cis = rows["ci"].to_numpy(dtype="float64") * scale
        _bars(ax, names, means, cis, [colors[n] for n in names], named=named[i])
        ax.set_title(titles[metric], fontsize="medium", y=1.0)
    return fig


def _facet_title(rows: pd.DataFrame, metric: str) -> str:
    label, unit, _ = _display(rows, metric)
    return column_title(label, unit, higher_is_better=rows["higher_is_better"].iloc[0])


def _facet_grid(
    ncols: int, n_rows: int, names: list[list[str]], titles: list[str], suptitle: str
) -> tuple[Figure, list[Axes]]:
    """A figure of bar-chart facets, ``ncols`` a line, its margins measured from its text.

    Facet ``i`` has the one-line title ``titles[i]`` above, x tick labels below and the row
    names ``names[i]`` (none: ``[]``) as tick labels on its left; ``n_rows`` sets the height.
    Laying the grid out from measured text, rather than by a layout engine, spares the
    passes over every tick label that the engine makes to measure them.
    """
    rc = mpl.rcParams
    pad = 0.1
    tick = (rc["ytick.major.size"] + rc["ytick.major.pad"]) / 72 + 0.05

    def names_width(facets: list[list[str]]) -> float:
        shown = [name for facet in facets for name in facet]
        return max(_text_inches(name, "small")[0] for name in shown) + tick if shown else 0.0

    n = len(titles)
    nrows = math.ceil(n / ncols)
    left_names = names_width(names[::ncols])  # of the first facet of each line
    inner_names = names_width([facet for i, facet in enumerate(names) if i % ncols])
    ticks_h = _text_inches("0", rc["xtick.labelsize"])[1] + (rc["xtick.major.size"] + rc["xtick.major.pad"]) / 72
    offset_h = _text_inches("0", rc["xtick.labelsize"])[1]  # a "1e6" multiplier under the axis, if any
    title_w = max(_text_inches(title, "medium")[0] for title in titles)
    title_h = _text_inches("Ag", "medium")[1] + rc["axes.titlepad"] / 72
    sup_w, sup_h = _text_inches(suptitle, rc["figure.titlesize"])
    overhang = 0.25  # of the outermost x tick labels past the sides of a facet
    gap = 2 * overhang + inner_names
    facet_w = max(2.5, title_w + 0.15 - gap)
    facet_h = max(0.24 * n_rows + 0.3, 0.8)
    vgap = ticks_h + title_h + 0.2
    grid_w = ncols * facet_w + (ncols - 1) * gap
    width = pad + left_names + grid_w + overhang + pad
    extra = max(0.0, sup_w + 2 * pad - width)  # room for a title wider than the grid, split both sides
    width += extra
    top = pad + sup_h + 0.15 + title_h
    bottom = ticks_h + offset_h + pad
    height = top + nrows * facet_h + (nrows - 1) * vgap + bottom
    fig = _FittedFigure(figsize=(width, height))
    FigureCanvasAgg(fig)
    left = pad + left_names + extra / 2
    grid = fig.add_gridspec(
        nrows,
        ncols,
        left=left / width,
        right=(left + grid_w) / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap / facet_w,
        hspace=vgap / facet_h,
    )
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]
    fig.suptitle(suptitle, y=1 - pad / height, va="top")
    return fig, axes


def _bars(
    ax: Axes, names: list[str], means: np.ndarray, cis: np.ndarray, colors: list[Any], named: bool = True
) -> None:
    """Horizontal bars (row ``i`` centred on ``y = i``, first row on top) with their CI as error bars.

    The rows are named by tick labels when ``named``. Bars without a finite mean are left
    out, error bars without a finite CI too. The bars are one collection (one artist to
    build and draw, where ``barh`` makes one patch per bar).
    """
    y = np.arange(len(names), dtype=float)
    shown = np.isfinite(means)
    verts = [
        [(0.0, i - 0.4), (0.0, i + 0.4), (m, i + 0.4), (m, i - 0.4)]
        for i, m in zip(y[shown], means[shown], strict=True)
    ]
    bars = PolyCollection(
        verts, facecolors=[c for c, ok in zip(colors, shown, strict=True) if ok], edgecolors="black", linewidths=0.5
    )
    bars.sticky_edges.x.append(0.0)  # the value axis starts at 0 when every bar is on one side, as with barh
    ax.add_collection(bars)
    with_ci = shown & np.isfinite(cis)
    if with_ci.any():
        ax.errorbar(means[with_ci], y[with_ci], xerr=cis[with_ci], fmt="none", ecolor="black", capsize=3)
    ax.autoscale_view()
    # A few round values on the axis of a narrow facet; fixed, so no tick is made outside the view.
    low, high = ax.get_xlim()
    values = np.asarray(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high))
    slack = 1e-9 * (high - low)
    ax.set_xticks(values[(values >= low - slack) & (values <= high + slack)])
    if named:
        ax.set_yticks(y, names, fontsize="small")
    else:
        ax.set_yticks([])  # named by the facet on the left of the line, whose rows are the same
    ax.set_ylim(len(names) - 0.5, -0.5)  # first row on top, as in the tables
    ax.axvline(0, color="black", lw=0.6)
    ax.grid(True, axis="x", alpha=0.3)
    _fixed_empty_labels(ax)
