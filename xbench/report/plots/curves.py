"""Accuracy against cost: top-1 under the exit policy against expected MACs (Pareto front), top-1 per exit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xbench.report.plots.common import _colors, _display, _new_figure, _overall, _shown, _suptitle
from xbench.report.records import Record
from xbench.report.stats import Statistics, as_statistics, column_title, mean_ci

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
