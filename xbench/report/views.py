"""Table views: which columns the leaderboard's tables show.

A view is data. ``full`` shows every column: one table per (section, category), each early
exit a column of its own (``Top-1 @exit 0``, ...), as the leaderboard always did. ``paper``
(the default of ``xbench run`` and ``xbench report``) fits a page: each category's table shows
at most :attr:`View.max_columns` metric columns, the final output's values only, chosen by
:attr:`View.preferred` (a category's preferred metrics first, then the others in table order;
shown in table order), and a caption names the columns it leaves out. Per-exit values move to
long tables of their own, one row per (method, exit) and one column per metric, so that a
network with more exits gets more rows instead of more columns.

The CSV files are data, not pages: they hold every column in every view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class View:
    """What a leaderboard table shows.

    Attributes:
        name: the view's name (``paper``, ``full``).
        per_exit_table: per-exit values in their own (method × exit) tables instead of one column per exit.
        max_columns: metric columns per category table at most; None: every column.
        preferred: per category, the metrics (as the suite names or labels them) that get a
            column first when there are more than ``max_columns``.
    """

    name: str
    per_exit_table: bool = False
    max_columns: int | None = None
    preferred: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_columns is not None and self.max_columns < 1:
            raise ValueError(f"max_columns must be at least 1, got {self.max_columns}")


FULL = View("full")
PAPER = View(
    "paper",
    per_exit_table=True,
    # Seven metric columns and the row label: what a paper's page holds at \small.
    max_columns=7,
    preferred=MappingProxyType(
        {
            "accuracy": ("top1", "policy_top1", "top5", "binary_precision", "binary_recall"),
            "efficiency": (
                "params",
                "flops",
                "flops_speedup",
                "latency_speedup",
                "expected_flops",
                "latency",
                "binary_speedup",
            ),
            "localization": (
                "pointing_game",
                "attribution_localisation",
                "relevance_mass_accuracy",
                "relevance_rank_accuracy",
                "top_k_intersection",
                "top_q_iou",
                "localisation_auc",
            ),
            "faithfulness": (
                "insertion_auc",
                "deletion_auc",
                "faithfulness_correlation",
                "road",
                "irof",
                "pixel_flipping",
                "monotonicity_correlation",
            ),
            "consistency": ("branch_energy", "explanation_consistency"),
            "sanity": ("parameter_randomisation", "randomisation_check"),
        }
    ),
)
#: The views by name.
VIEWS: Mapping[str, View] = MappingProxyType({view.name: view for view in (PAPER, FULL)})
#: The view ``xbench run`` and ``xbench report`` write unless told otherwise.
DEFAULT_VIEW = PAPER.name


def get_view(view: str | View) -> View:
    """The view named ``view`` (a :class:`View` is returned as is).

    Raises:
        ValueError: no view has that name.
    """
    if isinstance(view, View):
        return view
    try:
        return VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown table view {view!r} (known: {', '.join(VIEWS)})") from None
