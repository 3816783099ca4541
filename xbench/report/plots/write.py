"""Every plot of a report, written into its ``plots`` folder."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from matplotlib.figure import Figure

from xbench.report.plots.bars import _category
from xbench.report.plots.common import _shown
from xbench.report.plots.curves import _accuracy_per_exit, _accuracy_vs_macs
from xbench.report.plots.energy import BRANCH_ENERGY, _branch_energy, _energy_rows
from xbench.report.plots.saliency_files import _saliency_files, read_saliency
from xbench.report.plots.saliency_grid import figure_saliency_grid
from xbench.report.plots.saving import DEFAULT_DPI, _slug, save_figure
from xbench.report.records import Record
from xbench.report.stats import as_statistics, category_order


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
        The written paths, a PNG followed by its PDF, in the order of the docstring of :mod:`xbench.report.plots`.
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
