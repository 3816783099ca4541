"""Branch-energy heatmaps of Coded ResNeXt rows: classes × branches per coded block, codewords outlined."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xbench.report.plots.common import _fixed_empty_labels, _new_figure, _shown, _suptitle
from xbench.report.records import Record
from xbench.report.stats import Statistics, as_statistics

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
