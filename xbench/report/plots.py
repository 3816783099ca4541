"""Paper-ready plots: pure functions of records (and of the saliency files a run writes).

Every plot is built as a :class:`matplotlib.figure.Figure` by a ``figure_*`` function
(``None`` when its data are absent, so no empty figure is ever written) and saved as
PNG and PDF by :func:`save_figure`. The figure's title says what is plotted; it is
also written into the PNG/PDF metadata (``Title``). Figures are drawn with the
object-oriented API on the Agg canvas, so importing this module never touches
pyplot's global state or the interactive backend.

Plots (one per dataset, and per category for the bar charts):

* ``accuracy_vs_macs_<dataset>``: top-1 under the exit policy against expected MACs
  (``policy_top1`` vs ``expected_flops``, same dataset/method/seed, mean ± 95% CI over
  seeds). A method whose ``policy_top1`` records carry ``params["curve"]`` (a list of
  ``{"threshold", "top1", "expected_macs"}``) gets its curve over thresholds, averaged
  over seeds per threshold; the non-dominated points of the whole plot (fewer MACs and
  higher accuracy) are ringed and joined by a dashed step line, the Pareto front.
  Methods without policy records are single points of ``top1`` vs ``flops``.
* ``accuracy_per_exit_<dataset>``: ``top1`` at each exit (records with ``exit`` set),
  one line per method.
* ``<category>_<dataset>``: one bar chart per category (accuracy, efficiency,
  localization, faithfulness, consistency, sanity, then any other), one facet per
  metric, one bar per method (``method (explainer)`` for explanation metrics), mean ±
  95% CI (Student's t) over seeds in display units (``value * display.scale``).
  Per-exit values are left to the two plots above. When every facet has the same rows,
  the rows are named once per line of facets, left of the first.
* ``branch_energy_<dataset>_<method>``: for each row with ``branch_energy`` records
  (Coded ResNeXt), one heatmap per coded block: classes × branches, colour = the
  class's share of the block's energy on each branch (rows sum to 1, mean over seeds),
  the class's codeword branches outlined (see :mod:`xbench.metrics.branch_energy`).
* ``saliency_<dataset>``: a grid of N test images (rows) × the image and every
  (method, explainer) map set (columns), with the ground-truth mask outlined when the
  file has masks; drawn as one image (:func:`saliency_mosaic`) on one axes.

Drawing cost grows with the number of axes, tick labels and layout passes, so figures
are laid out once (by measuring their text, or by constrained layout for the few axes of
the line plots and heatmaps) and that layout serves both the PNG and the PDF.

Saliency file format (``RUN_DIR/saliency/<dataset>.npz``), written by
:func:`write_saliency` and read by :func:`read_saliency`:

* ``images``: float32 (N, C, H, W) in [0, 1], C = 1 or 3;
* ``labels``: int64 (N,);
* ``masks`` (optional): bool (N, 1, H, W);
* ``maps/<method>/<explainer>``: float32 (N, H, W) in [0, 1], one array per map set,
  in the order given. The method label may contain ``/``, the explainer label not.

Values shown are the cells of :func:`xbench.report.stats.statistics`, as in the
leaderboard: means and CIs of the successful seeds, the last record of a duplicated
measurement winning, rows and metrics in the tables' order, methods trained with
ground-truth masks (``config["uses_masks"]``) marked with a dagger. Every function that
takes records also takes their :class:`~xbench.report.stats.Statistics`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from xbench.errors import DataError
from xbench.fileio import atomic_write
from xbench.report.records import Record
from xbench.report.stats import CATEGORY_ORDER, Statistics, as_statistics, category_order, column_title
from xbench.report.stats import mean_ci as mean_ci  # re-exported: the mean and CI of the tables

#: Categories with a bar chart, in this order; categories not listed follow in order of appearance.
CATEGORIES = CATEGORY_ORDER
DEFAULT_DPI = 150
MAX_SALIENCY_IMAGES = 8
_FORMATS = ("png", "pdf")


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


# ----------------------------------------------------------------------------- saving


def _title(fig: Figure) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    return suptitle.get_text() if suptitle is not None else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "plot"


class _Canvas(FigureCanvasAgg):
    """The Agg canvas, writing a PNG without its alpha channel when the image is opaque.

    The figures here have an opaque background, so the alpha channel is 255 throughout; leaving
    it out and compressing at level 3 (of 9) makes the PNG about as small, and quicker to write.
    """

    def print_png(
        self,
        filename_or_obj: Any,
        *,
        metadata: dict[str, str] | None = None,
        pil_kwargs: dict[str, Any] | None = None,
        **_: Any,  # facecolor, orientation, ...: taken care of by savefig, as for the Agg canvas
    ) -> None:
        FigureCanvasAgg.draw(self)
        rgba = np.asarray(self.buffer_rgba())
        image = Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1)
        if rgba[..., 3].min() == 255:
            image = image.convert("RGB")
        info = PngInfo()
        for key, value in {
            "Software": f"Matplotlib version{mpl.__version__}, https://matplotlib.org/",
            **(metadata or {}),
        }.items():
            info.add_text(key, value)
        dpi = round(self.figure.dpi)
        options = {"pnginfo": info, "dpi": (dpi, dpi), "compress_level": 3, **(pil_kwargs or {})}
        image.save(filename_or_obj, format="png", **options)


class _FittedFigure(Figure):
    """A figure whose builder sized it, from measured text, to hold all it draws: saved whole, unmeasured."""


def _saved_area(fig: Figure, renderer: RendererAgg) -> Bbox | None:
    """Lay the figure out (once, with its layout engine if any) and return the area to save.

    None (the whole figure) when everything drawn lies inside the figure, as the layouts
    here see to; else the tight bounding box of what is drawn, padded, in inches, as
    ``bbox_inches="tight"`` would give, so nothing drawn outside the figure is lost.
    """
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    tight = fig.get_tightbbox(renderer)
    slack = 1 / fig.dpi  # a pixel
    width, height = fig.get_size_inches()
    if tight.x0 >= -slack and tight.y0 >= -slack and tight.x1 <= width + slack and tight.y1 <= height + slack:
        return None
    pad = float(mpl.rcParams["savefig.pad_inches"])
    return tight.padded(pad, pad)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write ``fig`` to ``out_dir/<stem>.png`` and ``.pdf`` atomically, its title in the metadata.

    The figure is laid out and measured once, at the PNG's resolution, for both formats:
    the PNG is drawn by the renderer that measured it, so its text is not measured again.
    The saved area is the whole figure, or the tight bounding box of what is drawn when
    something lies outside the figure. The figures laid out here from measured text (the
    bar charts and the saliency grid) are known to fit and are not measured at all.

    Returns:
        The PNG path, then the PDF path.
    """
    canvas = _Canvas(fig)  # an Agg canvas whatever the interactive backend is
    title = _title(fig)
    metadata = {"Title": title} if title else None
    engine = fig.get_layout_engine()
    figure_dpi = fig.dpi
    fig.set_dpi(dpi)
    try:
        area = None if isinstance(fig, _FittedFigure) else _saved_area(fig, canvas.get_renderer())
        with mpl.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)  # laid out above: keep the positions for both formats
        paths = []
        for fmt in _FORMATS:

            def write(handle: Any, fmt: str = fmt) -> None:
                # No creation date in PDFs: the same records give the same bytes (reproducible reports)
                meta = {**(metadata or {}), "CreationDate": None} if fmt == "pdf" else metadata
                with mpl.rc_context({"savefig.bbox": "standard"}):  # None means the whole figure, whatever the rc
                    fig.savefig(handle, format=fmt, dpi=dpi, metadata=meta, bbox_inches=area)

            paths.append(atomic_write(Path(out_dir) / f"{_slug(stem)}.{fmt}", write))
    finally:
        fig.set_dpi(figure_dpi)
        if engine is not None:
            fig.set_layout_engine(engine)
    return paths


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


# ----------------------------------------------------------------------------- Pareto front


def pareto_front(costs: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower cost and higher accuracy are better), by cost.

    A point is dominated when another costs no more, is no less accurate and is strictly
    better in one of the two. Identical points are all kept; NaN points never belong.
    The result is sorted by cost (then accuracy), so it traces the front left to right.
    """
    cost = np.asarray(costs, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if cost.shape != acc.shape or cost.ndim != 1:
        raise ValueError(f"costs and accuracies must be 1-D of equal length, got {cost.shape} and {acc.shape}")
    valid = np.isfinite(cost) & np.isfinite(acc)
    no_worse = (cost[None, :] <= cost[:, None]) & (acc[None, :] >= acc[:, None])
    better = (cost[None, :] < cost[:, None]) | (acc[None, :] > acc[:, None])
    dominated = (no_worse & better & valid[None, :]).any(axis=1)
    front = np.flatnonzero(valid & ~dominated)
    return front[np.lexsort((acc[front], cost[front]))]


# ----------------------------------------------------------------------------- accuracy vs MACs


@dataclass
class _Tradeoff:
    """One method's operating point (mean, CI over seeds; raw units) and its mean curve, if any."""

    method: str
    cost: float
    cost_ci: float
    acc: float
    acc_ci: float
    policy: bool
    curve: pd.DataFrame | None = field(default=None)


def _paired(frame: pd.DataFrame, acc_metric: str, cost_metric: str) -> pd.DataFrame:
    acc = frame[frame["metric"] == acc_metric][["seed", "value", "params"]]
    cost = frame[frame["metric"] == cost_metric][["seed", "value"]]
    return acc.merge(cost, on="seed", suffixes=("_acc", "_cost"))


def _curve(params: Iterable[Any]) -> pd.DataFrame | None:
    points = [
        p
        for par in params
        if isinstance(par, dict) and isinstance(par.get("curve"), list)
        for p in par["curve"]
        if isinstance(p, dict) and {"threshold", "top1", "expected_macs"} <= set(p)
    ]
    if not points:
        return None
    curve = pd.DataFrame(points).astype({"threshold": float, "top1": float, "expected_macs": float})
    return curve.groupby("threshold", sort=True)[["top1", "expected_macs"]].mean().reset_index()


def _tradeoffs(frame: pd.DataFrame) -> list[_Tradeoff]:
    out = []
    for method, rows in frame.groupby("method", sort=False):
        pairs, policy = _paired(rows, "policy_top1", "expected_flops"), True
        if pairs.empty:
            pairs, policy = _paired(rows, "top1", "flops"), False
        if pairs.empty:
            continue
        acc, acc_ci = mean_ci(pairs["value_acc"])
        cost, cost_ci = mean_ci(pairs["value_cost"])
        curve = _curve(pairs["params"]) if policy else None
        out.append(_Tradeoff(str(method), cost, cost_ci, acc, acc_ci, policy, curve))
    return out


def figure_accuracy_vs_macs(records: Iterable[Record], dataset: str) -> Figure | None:
    """Top-1 under the exit policy against expected MACs on ``dataset``, with the Pareto front.

    None when no method of ``dataset`` has paired ``policy_top1`` / ``expected_flops`` records.
    """
    return _accuracy_vs_macs(as_statistics(records), dataset)


def _accuracy_vs_macs(stats: Statistics, dataset: str) -> Figure | None:
    frame = _overall(stats.ok)
    points = _tradeoffs(frame[frame["dataset"] == dataset])
    if not any(p.policy for p in points):
        return None
    cells = _overall(_shown(stats, dataset))
    x_label, x_unit, x_scale = _display(cells, "expected_flops")
    y_label, y_unit, y_scale = _display(cells, "policy_top1")

    fig = _new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    colors = _colors([p.method for p in points])
    all_cost, all_acc = [], []
    for p in points:
        color = colors[p.method]
        if p.curve is not None:
            ax.plot(
                p.curve["expected_macs"] * x_scale,
                p.curve["top1"] * y_scale,
                marker=".",
                ms=4,
                lw=1.2,
                color=color,
                alpha=0.8,
            )
            all_cost += list(p.curve["expected_macs"])
            all_acc += list(p.curve["top1"])
        ax.errorbar(
            p.cost * x_scale,
            p.acc * y_scale,
            xerr=None if math.isnan(p.cost_ci) else p.cost_ci * x_scale,
            yerr=None if math.isnan(p.acc_ci) else p.acc_ci * y_scale,
            fmt="o" if p.policy else "s",
            ms=7,
            color=color,
            mec="black",
            mew=0.6,
            capsize=3,
            label=p.method if p.policy else f"{p.method} (no exits)",
            zorder=3,
        )
        all_cost.append(p.cost)
        all_acc.append(p.acc)
    front = pareto_front(all_cost, all_acc)
    fx, fy = np.asarray(all_cost)[front] * x_scale, np.asarray(all_acc)[front] * y_scale
    ax.plot(fx, fy, drawstyle="steps-post", ls="--", lw=1, color="black", label="Pareto front", zorder=2)
    ax.scatter(fx, fy, s=110, facecolors="none", edgecolors="black", linewidths=1, zorder=4)
    costs = np.asarray(all_cost) * x_scale
    if costs.min() > 0 and costs.max() / costs.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(column_title(x_label, x_unit) + " (lower is better)")
    ax.set_ylabel(column_title(y_label, y_unit) + " (higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    _suptitle(fig, f"{dataset}: {y_label} vs {x_label} (curves over exit thresholds, mean ± 95% CI over seeds)")
    return fig


# ----------------------------------------------------------------------------- accuracy per exit


def figure_accuracy_per_exit(records: Iterable[Record], dataset: str, metric: str = "top1") -> Figure | None:
    """``metric`` at each early exit on ``dataset``, one line per method (mean ± 95% CI over seeds)."""
    return _accuracy_per_exit(as_statistics(records), dataset, metric)


def _accuracy_per_exit(stats: Statistics, dataset: str, metric: str = "top1") -> Figure | None:
    cells = _shown(stats, dataset)
    cells = cells[(cells["metric"] == metric) & cells["exit"].notna() & ~cells["explained"]]
    if cells.empty:
        return None
    label, unit, scale = _display(cells, metric)
    fig = _new_figure(5.5, 3.8)
    ax = fig.add_subplot()
    methods = [str(m) for m in cells["method"].unique()]
    colors = _colors(methods)
    for method in methods:
        rows = cells[cells["method"] == method].sort_values("exit", kind="stable")
        exits = [int(e) for e in rows["exit"]]
        means = rows["mean"].to_numpy(dtype="float64") * scale
        cis = rows["ci"].to_numpy(dtype="float64") * scale
        ax.errorbar(
            exits,
            means,
            yerr=None if np.isnan(cis).all() else np.nan_to_num(cis),
            marker="o",
            capsize=3,
            color=colors[method],
            label=method,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("exit")
    ax.set_ylabel(column_title(label, unit) + " (higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _suptitle(fig, f"{dataset}: {label} at each exit (mean ± 95% CI over seeds)")
    return fig


# ----------------------------------------------------------------------------- category bars


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


def _fixed_empty_labels(ax: Axes) -> None:
    """Pin the axis labels that are empty, sparing matplotlib a search for their place on every draw."""
    if not ax.get_xlabel():
        ax.xaxis.set_label_coords(0.5, 0.0)
    if not ax.get_ylabel():
        ax.yaxis.set_label_coords(0.0, 0.5)


# ----------------------------------------------------------------------------- branch energy

BRANCH_ENERGY = "branch_energy"
#: Largest class count whose rows are labelled one by one; beyond it every k-th class is named.
_MAX_CLASS_TICKS = 30


@dataclass(frozen=True)
class _EnergyMaps:
    """One row's branch-energy matrices (mean over seeds) and codewords, one per coded block."""

    classes: list[int]
    class_names: list[str]
    energy: list[np.ndarray]  # (classes, N) per block, rows sum to 1
    codewords: list[np.ndarray]  # (K, N) 0/1 per block, every class
    shares: list[float]  # mean energy share on the codeword per block
    n_seeds: int


def _energy_key(params: Any) -> tuple[Any, ...] | None:
    """What must agree for two seeds' matrices to be averaged: classes, block shapes and codewords."""
    if not isinstance(params, dict) or not isinstance(params.get("blocks"), list) or not params["blocks"]:
        return None
    try:
        codes = tuple(np.asarray(b["codewords"], dtype=int).tobytes() for b in params["blocks"])
        shapes = tuple(np.asarray(b["energy"], dtype=float).shape for b in params["blocks"])
    except (KeyError, TypeError, ValueError):
        return None
    return tuple(params.get("classes") or []), shapes, codes


def _energy_maps(rows: pd.DataFrame) -> _EnergyMaps | None:
    """Average the matrices of every seed that shares the first usable seed's classes and codewords."""
    usable = [(p, _energy_key(p)) for p in rows["params"]]
    usable = [(p, key) for p, key in usable if key is not None]
    if not usable:
        return None
    first, key = usable[0]
    same = [p for p, k in usable if k == key]
    blocks = first["blocks"]
    energy = [
        np.mean([np.asarray(p["blocks"][i]["energy"], dtype=float) for p in same], axis=0) for i in range(len(blocks))
    ]
    codewords = [np.asarray(b["codewords"], dtype=int) for b in blocks]
    classes = [int(c) for c in first.get("classes") or range(len(energy[0]))]
    given = first.get("class_names")
    ok = isinstance(given, list) and len(given) == len(classes)
    names = [str(n) for n in given] if ok else [str(c) for c in classes]
    shares = [float((e * w[classes]).sum(axis=1).mean()) for e, w in zip(energy, codewords, strict=True)]
    return _EnergyMaps(classes, names, energy, codewords, shares, len(same))


def _energy_rows(stats: Statistics, dataset: str) -> list[str]:
    cells = _shown(stats, dataset)
    cells = cells[(cells["metric"] == BRANCH_ENERGY) & cells["exit"].isna()]
    return [str(m) for m in cells["method"].unique()]


def figure_branch_energy(records: Iterable[Record], dataset: str, method: str) -> Figure | None:
    """Heatmaps of ``method``'s branch-energy shares on ``dataset``, one per coded block.

    Rows are classes, columns branches, colour the share of the class's mean energy on each
    branch (rows sum to 1; mean over seeds); the branches of the class's codeword are outlined.
    None without ``branch_energy`` records carrying matrices.
    """
    return _branch_energy(as_statistics(records), dataset, method)


def _heatmap(ax: Axes, matrix: np.ndarray, vmax: float, square: bool) -> None:
    """``matrix`` as coloured cells, row 0 on top, cell (row r, column c) spanning [c, c+1] × [r, r+1]."""
    ax.pcolormesh(matrix, cmap="viridis", vmin=0.0, vmax=vmax)
    ax.set_xlim(0, matrix.shape[1])
    ax.set_ylim(matrix.shape[0], 0)
    if square:
        ax.set_aspect("equal")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)


def _branch_energy(stats: Statistics, dataset: str, method: str) -> Figure | None:
    frame = stats.ok
    rows = frame[
        (frame["dataset"] == dataset)
        & (frame["method"] == method)
        & (frame["metric"] == BRANCH_ENERGY)
        & frame["exit"].isna()
    ]
    maps = _energy_maps(rows) if not rows.empty else None
    if maps is None:
        return None
    n_blocks, n_classes = len(maps.energy), len(maps.classes)
    n_branches = max(e.shape[1] for e in maps.energy)
    ncols = min(n_blocks, 4)
    nrows = math.ceil(n_blocks / ncols)
    cell_w = max(0.32 * n_branches + 1.2, 2.8)
    cell_h = min(0.28 * n_classes, 12.0) + 1.3  # + two-line title, tick labels and axis label
    fig = _new_figure(ncols * cell_w + 1.0, nrows * cell_h + 0.9)  # + two-line figure title
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    vmax = max(float(e.max()) for e in maps.energy) or 1.0
    step = math.ceil(n_classes / _MAX_CLASS_TICKS)  # beyond the limit, every step-th class is named
    for i, (ax, energy, code) in enumerate(zip(axes, maps.energy, maps.codewords, strict=False)):
        _heatmap(ax, energy, vmax, square=n_classes <= _MAX_CLASS_TICKS)
        ax.set_xticks(np.arange(energy.shape[1]) + 0.5, [str(n) for n in range(energy.shape[1])])
        if i % ncols == 0:
            named = np.arange(0, n_classes, step)
            ax.set_yticks(named + 0.5, [maps.class_names[r] for r in named])
        else:
            ax.set_yticks([])
        for r, k in enumerate(maps.classes):
            for n in np.flatnonzero(code[k]).tolist():
                # A black halo under a white line stays visible on any colour of the map.
                ax.add_patch(Rectangle((n, r), 1, 1, fill=False, edgecolor="black", lw=2.2))
                ax.add_patch(Rectangle((n, r), 1, 1, fill=False, edgecolor="white", lw=1.0))
        active, total = int(code[0].sum()), code.shape[1]
        ax.set_title(
            f"block {i}: {maps.shares[i]:.0%} on code\n({active} of {total} branches per class)",
            fontsize="medium",
            y=1.0,
        )
        ax.set_xlabel("branch")
        ax.tick_params(axis="x", labelsize="small", rotation=0)
        ax.tick_params(axis="y", labelsize="small", rotation=0)
        if i % ncols == 0:
            ax.set_ylabel("class")
        _fixed_empty_labels(ax)
    for ax in axes[n_blocks:]:
        ax.remove()
    fig.colorbar(axes[0].collections[0], ax=list(axes[:n_blocks]), label="share of the class's energy", shrink=0.8)
    seeds = f"mean over {maps.n_seeds} seeds" if maps.n_seeds > 1 else "1 seed"
    _suptitle(
        fig,
        f"{dataset}: {method}: branch energy share per class and coded block\n"
        f"(rows sum to 1; codeword branches outlined; {seeds})",
    )
    return fig


# ----------------------------------------------------------------------------- saliency files


@dataclass(frozen=True)
class Saliency:
    """The contents of one saliency file; see the module docstring for shapes and dtypes."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    maps: dict[tuple[str, str], np.ndarray]


_MAP_PREFIX = "maps/"


def _in_unit_range(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}] (see normalize_maps)")


def _check_saliency(
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    maps: Mapping[tuple[str, str], np.ndarray],
) -> Saliency:
    """Validate and convert to the stored dtypes; raises ValueError naming what is wrong."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C 1 or 3, got shape {images.shape}")
    n, _, h, w = images.shape
    images = images.astype(np.float32)
    _in_unit_range("images", images)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape == (n, h, w):
            masks = masks[:, None]
        if masks.shape != (n, 1, h, w):
            raise ValueError(f"masks must have shape ({n}, 1, {h}, {w}), got {masks.shape}")
        if masks.dtype != np.bool_ and not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    checked = {}
    for key, array in maps.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) and k for k in key)):
            raise ValueError(f"map keys must be (method, explainer) pairs of non-empty strings, got {key!r}")
        if "/" in key[1]:
            raise ValueError(f"explainer label {key[1]!r} must not contain '/'")
        array = np.asarray(array, dtype=np.float32)
        if array.shape != (n, h, w):
            raise ValueError(f"map {key} must have shape ({n}, {h}, {w}), got {array.shape}")
        _in_unit_range(f"map {key}", array)
        checked[key] = array
    return Saliency(images, labels.astype(np.int64), masks, checked)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max scale each map of an (N, H, W) batch to [0, 1] (constant maps become 0), as float32."""
    x = np.asarray(maps, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    out = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return out.reshape(x.shape).astype(np.float32)


def write_saliency(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    maps: Mapping[tuple[str, str], np.ndarray],
) -> Path:
    """Write a saliency file (``.npz``, compressed) atomically; the format is in the module docstring.

    Args:
        path: usually ``RUN_DIR/saliency/<dataset>.npz``.
        images: (N, C, H, W) in [0, 1].
        labels: (N,) integer class labels.
        masks: (N, 1, H, W) (or (N, H, W)) ground-truth masks, or None.
        maps: ``{(method, explainer): (N, H, W) map in [0, 1]}``, in display order.

    Raises:
        ValueError: a shape, dtype or value range is wrong (the message says which).
    """
    data = _check_saliency(images, labels, masks, maps)
    arrays: dict[str, Any] = {"images": data.images, "labels": data.labels}
    if data.masks is not None:
        arrays["masks"] = data.masks
    for (method, explainer), array in data.maps.items():
        arrays[f"{_MAP_PREFIX}{method}/{explainer}"] = array
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def read_saliency(path: str | Path) -> Saliency:
    """Read a file written by :func:`write_saliency`.

    Raises:
        DataError: the file is missing, not an npz, or its arrays break the format.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable saliency file ({err})") from err
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise DataError(f"{path}: saliency file lacks {sorted(missing)}")
    maps = {}
    for name, array in arrays.items():
        if name.startswith(_MAP_PREFIX):
            method, sep, explainer = name[len(_MAP_PREFIX) :].rpartition("/")
            if not sep or not method or not explainer:
                raise DataError(f"{path}: map array {name!r} is not named maps/<method>/<explainer>")
            maps[(method, explainer)] = array
        elif name not in ("images", "labels", "masks"):
            raise DataError(f"{path}: unknown array {name!r} in saliency file")
    try:
        return _check_saliency(arrays["images"], arrays["labels"], arrays.get("masks"), maps)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


#: Opacity of a saliency map over its greyscale image in the grid, and the map's colormap.
MAP_ALPHA = 0.55
MAP_CMAP = "jet"


@dataclass(frozen=True)
class SaliencyMosaic:
    """The saliency grid as one RGB image: tile (row i, column j) starts at ``(i * pitch[0], j * pitch[1])``.

    Column 0 holds the images, column ``j >= 1`` the ``j``-th map set drawn at
    :data:`MAP_ALPHA` over the greyscale image; tiles are ``gap`` white pixels apart.
    ``outline`` (same height and width, or None without masks) is 1 inside every tile's
    ground-truth mask and 0 elsewhere; masks with no boundary (all or nothing) are left out.
    """

    rgb: np.ndarray  # (rows * pitch[0] - gap, cols * pitch[1] - gap, 3) uint8
    outline: np.ndarray | None
    pitch: tuple[int, int]
    gap: int
    rows: int
    cols: int


def _tile_gap(h: int, w: int) -> int:
    return max(2, round(0.08 * max(h, w)))


def saliency_mosaic(saliency: Saliency, n: int, keys: Sequence[tuple[str, str]]) -> SaliencyMosaic:
    """Compose the first ``n`` images and their ``keys`` map sets into one mosaic (see :class:`SaliencyMosaic`)."""
    images = saliency.images[:n]
    n, c, h, w = images.shape
    gap = _tile_gap(h, w)
    ph, pw = h + gap, w + gap
    cols = 1 + len(keys)
    gray = images[:, 0] if c == 1 else images.mean(axis=1)
    tiles = np.ones((n, cols, ph, pw, 3), dtype=np.float32)  # white gutters
    tiles[:, 0, :h, :w] = gray[..., None] if c == 1 else np.transpose(images, (0, 2, 3, 1))
    cmap = mpl.colormaps[MAP_CMAP]
    under = (1 - MAP_ALPHA) * gray[..., None]
    for j, key in enumerate(keys, start=1):
        colored = cmap(saliency.maps[key][:n])[..., :3]  # the 256-colour table imshow uses
        tiles[:, j, :h, :w] = MAP_ALPHA * colored + under  # alpha compositing, as imshow(alpha=...) does
    rgb = tiles.transpose(0, 2, 1, 3, 4).reshape(n * ph, cols * pw, 3)[:-gap, :-gap]
    rgb = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # 8-bit: what the PNG holds, and cheaper to draw
    outline = None
    if saliency.masks is not None:
        masks = saliency.masks[:n, 0]
        drawn = np.asarray(masks.any(axis=(1, 2)) & ~masks.all(axis=(1, 2)))  # a constant mask has no boundary
        inside = np.zeros((n, cols, ph, pw), dtype=np.float32)
        inside[:, :, :h, :w] = (masks & drawn[:, None, None])[:, None]
        outline = inside.transpose(0, 2, 1, 3).reshape(n * ph, cols * pw)[:-gap, :-gap]
    return SaliencyMosaic(rgb, outline, (ph, pw), gap, n, cols)


def figure_saliency_grid(saliency: Saliency, dataset: str, max_images: int = MAX_SALIENCY_IMAGES) -> Figure | None:
    """N images (rows) × [image, every map set] (columns), masks outlined; None without maps.

    Drawn as one mosaic image (:func:`saliency_mosaic`) on one axes, the columns and rows
    named by tick labels and the masks outlined by one contour over the whole mosaic, so
    the cost does not grow with the number of tiles as one axes per tile would.
    """
    if not saliency.maps or len(saliency.images) == 0:
        return None
    n = min(len(saliency.images), max_images)
    keys = list(saliency.maps)
    mosaic = saliency_mosaic(saliency, n, keys)
    col_labels = ["image", *(f"{method}\n{explainer}" for method, explainer in keys)]
    row_labels = [f"label {int(label)}" for label in saliency.labels[:n]]
    ph, pw = mosaic.pitch
    pad = 0.1
    col_w, col_h = map(max, zip(*(_text_inches(label, "small") for label in col_labels), strict=True))
    row_w = max(_text_inches(label, "small")[0] for label in row_labels)
    title = f"{dataset}: saliency maps of {n} test images"
    title += ", ground-truth mask outlined" if saliency.masks is not None else ""
    title_w, title_h = _text_inches(title, mpl.rcParams["figure.titlesize"])
    # An inch per tile, more if a column's label needs it (at most 2).
    tile_in = min(max(1.0, col_w + 0.12), 2.0)
    inch = tile_in / pw  # per pixel of the mosaic
    height_px, width_px = mosaic.rgb.shape[:2]
    tick_pad = mpl.rcParams["xtick.major.pad"] / 72
    left = pad + row_w + tick_pad + 0.05
    top = pad + title_h + 0.15 + col_h + tick_pad + 0.05
    bottom = pad
    fig_w = max(left + width_px * inch + pad, title_w + 2 * pad)
    fig_h = top + height_px * inch + bottom
    fig = _FittedFigure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width_px * inch / fig_w, height_px * inch / fig_h))
    # Each mosaic pixel repeated so that a tile is about 100 pixels wide in the PDF too, where
    # viewers may smooth a small image they enlarge; the axes stay in mosaic pixels.
    k = math.ceil(100 / max(ph, pw))
    pixels = np.repeat(np.repeat(mosaic.rgb, k, axis=0), k, axis=1) if k > 1 else mosaic.rgb
    ax.imshow(pixels, interpolation="none", extent=(-0.5, width_px - 0.5, height_px - 0.5, -0.5))
    if mosaic.outline is not None and mosaic.outline.any():
        # A black halo under a white line stays visible on any image and any colormap.
        ax.contour(mosaic.outline, levels=[0.5], colors=["black"], linewidths=2.0)
        ax.contour(mosaic.outline, levels=[0.5], colors=["white"], linewidths=0.9)
    ax.set_xlim(-0.5, width_px - 0.5)
    ax.set_ylim(height_px - 0.5, -0.5)
    h, w = ph - mosaic.gap, pw - mosaic.gap
    ax.set_xticks([j * pw + (w - 1) / 2 for j in range(mosaic.cols)], col_labels, fontsize="small")
    ax.set_yticks([i * ph + (h - 1) / 2 for i in range(mosaic.rows)], row_labels, fontsize="small")
    ax.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_frame_on(False)
    fig.suptitle(title, y=1 - pad / fig_h, va="top")
    return fig


def _saliency_files(saliency: str | Path | None) -> list[Path]:
    if saliency is None:
        return []
    saliency = Path(saliency)
    if saliency.is_dir():
        return sorted(saliency.glob("*.npz"))
    return [saliency] if saliency.is_file() else []


# ----------------------------------------------------------------------------- all plots


def write_plots(
    records: Iterable[Record],
    out_dir: str | Path,
    saliency: str | Path | None = None,
    dpi: int = DEFAULT_DPI,
) -> list[Path]:
    """Write every plot that has data into ``out_dir/plots/`` as PNG and PDF.

    Args:
        records: the run's records (any number of datasets).
        out_dir: the report folder; plots go to its ``plots`` subfolder.
        saliency: ``RUN_DIR/saliency`` (every ``<dataset>.npz`` in it) or one ``.npz`` file
            (dataset = its stem), or None for no saliency grid.
        dpi: resolution of the PNGs.

    Returns:
        The written paths, a PNG followed by its PDF, in the order of the module docstring.
    """
    plots_dir = Path(out_dir) / "plots"
    stats = as_statistics(records)
    # Each figure is built just before it is saved and dropped after, so only one is alive at a time.
    figures: list[tuple[str, Callable[[], Figure | None]]] = []
    for dataset in [str(d) for d in stats.shown["dataset"].unique()]:
        figures.append((f"accuracy_vs_macs_{dataset}", functools.partial(_accuracy_vs_macs, stats, dataset)))
        figures.append((f"accuracy_per_exit_{dataset}", functools.partial(_accuracy_per_exit, stats, dataset)))
        overall = _shown(stats, dataset)
        for category in category_order(overall.loc[overall["exit"].isna(), "category"]):
            figures.append((f"{category}_{dataset}", functools.partial(_category, stats, dataset, category)))
        for method in _energy_rows(stats, dataset):
            stem = f"{BRANCH_ENERGY}_{dataset}_{method}"
            figures.append((stem, functools.partial(_branch_energy, stats, dataset, method)))
    for path in _saliency_files(saliency):  # read up front: a bad file fails before any plot is written
        grid = functools.partial(figure_saliency_grid, read_saliency(path), path.stem)
        figures.append((f"saliency_{path.stem}", grid))
    paths: list[Path] = []
    used: set[str] = set()
    with _long_lived_objects_frozen():
        for stem, build in figures:
            fig = build()
            if fig is None:
                continue
            unique, i = _slug(stem), 1
            while unique in used:  # two labels that slug alike (e.g. differing only in non-ASCII) keep both plots
                i += 1
                unique = f"{_slug(stem)}-{i}"
            used.add(unique)
            paths += save_figure(fig, plots_dir, unique, dpi=dpi)
    return paths


@contextlib.contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Keep the garbage collector's full passes off the objects that exist already (records, frames).

    Drawing makes many short-lived objects, so full collections come often; without the
    freeze each would walk every record again. Left alone if the caller froze objects itself.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
