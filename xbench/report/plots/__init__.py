"""Paper-ready plots: pure functions of records (and of the saliency files a run writes).

Every plot is built as a :class:`matplotlib.figure.Figure` by a ``figure_*`` function
(``None`` when its data are absent, so no empty figure is ever written) and saved as
PNG and PDF by :func:`save_figure`. The figure's title says what is plotted; it is
also written into the PNG/PDF metadata (``Title``). Figures are drawn with the
object-oriented API on the Agg canvas, so importing this package never touches
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

Values shown are the cells of :func:`xbench.report.stats.statistics`, as in the
leaderboard: means and CIs of the successful seeds, the last record of a duplicated
measurement winning, rows and metrics in the tables' order, methods trained with
ground-truth masks (``config["uses_masks"]``) marked with a dagger. Every function that
takes records also takes their :class:`~xbench.report.stats.Statistics`.

The modules:

* :mod:`~xbench.report.plots.saving`: :func:`save_figure` (PNG and PDF, laid out once);
* :mod:`~xbench.report.plots.common`: what the plots share (the cells they show, new figures,
  titles, colours, text measurement);
* :mod:`~xbench.report.plots.curves`: accuracy against MACs (with the Pareto front) and accuracy per exit;
* :mod:`~xbench.report.plots.bars`: the bar charts per category;
* :mod:`~xbench.report.plots.energy`: the branch-energy heatmaps;
* :mod:`~xbench.report.plots.saliency_files`: the saliency file format, written and read;
* :mod:`~xbench.report.plots.saliency_grid`: the saliency grid;
* :mod:`~xbench.report.plots.write`: :func:`write_plots`, every plot of a report.
"""

from xbench.report.plots.bars import CATEGORIES, figure_category
from xbench.report.plots.curves import figure_accuracy_per_exit, figure_accuracy_vs_macs, pareto_front
from xbench.report.plots.energy import BRANCH_ENERGY, figure_branch_energy
from xbench.report.plots.saliency_files import Saliency, normalize_maps, read_saliency, write_saliency
from xbench.report.plots.saliency_grid import (
    MAP_ALPHA,
    MAP_CMAP,
    MAX_SALIENCY_IMAGES,
    SaliencyMosaic,
    figure_saliency_grid,
    saliency_mosaic,
)
from xbench.report.plots.saving import DEFAULT_DPI, save_figure
from xbench.report.plots.write import write_plots
from xbench.report.stats import mean_ci as mean_ci  # re-exported: the mean and CI of the tables

__all__ = [
    "BRANCH_ENERGY",
    "CATEGORIES",
    "DEFAULT_DPI",
    "MAP_ALPHA",
    "MAP_CMAP",
    "MAX_SALIENCY_IMAGES",
    "Saliency",
    "SaliencyMosaic",
    "figure_accuracy_per_exit",
    "figure_accuracy_vs_macs",
    "figure_branch_energy",
    "figure_category",
    "figure_saliency_grid",
    "mean_ci",
    "normalize_maps",
    "pareto_front",
    "read_saliency",
    "saliency_mosaic",
    "save_figure",
    "write_plots",
    "write_saliency",
]
