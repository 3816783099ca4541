"""Leaderboards: pure functions from records to Markdown, CSV and LaTeX tables.

One table per dataset, and a second one per dataset for explanation metrics whose
rows are (method, explainer) pairs labelled ``method (explainer)``. Rows are methods
and columns are metrics, each in order of first appearance in the records (a
metric's per-exit columns right after it). A column key is ``metric``, or
``metric@exit{k}`` for a value measured at early exit ``k``. Its header is
``display.label`` (+ `` @exit k``), the unit in brackets, then ↑ (higher is
better), ↓ (lower is better) or nothing (no direction).

Each cell aggregates the seeds of one (method, column): the mean, and from two
seeds on ± the half-width of the 95% confidence interval of the mean with
Student's t, ``t.ppf(0.975, n - 1) * std(ddof=1) / sqrt(n)``. The number of seeds
is stated in each table's caption. Values are shown as ``value * display.scale``
with ``display.decimals`` decimals; large counts (parameters, FLOPs) get their
scale and unit from ``display``, never from the table.

The best value of each column is bold (``**x**`` in Markdown, ``\\textbf{x}`` in
LaTeX), judged on the *displayed* (rounded) means, so values that print the same
tie and are all bold. Columns without a direction have no bold. A row with a
failed record shows "failed" in every column where it has no successful value,
and a failure is never best. Duplicate records of the same (suite, dataset,
method, seed, metric, exit) keep the last one, so a re-run replaces a failure.

``to_csv`` writes one row per (dataset, method) with the columns ``dataset``,
``method``, then per column key ``<key>_mean``, ``<key>_ci`` and
``<key>_n_seeds``, then ``failed`` (the row has a failed record). ``_mean`` and
``_ci`` are in display units (raw value * ``display.scale``, e.g. ``top1_mean``
in % when the scale is 100) at full precision; ``_ci`` is empty with one seed.

``to_latex`` needs only ``\\usepackage{booktabs}`` in the preamble: labels and
method names are escaped (``_ & % # $ { } ~ ^ \\``), and ±, ↑, ↓, µ and the multiplication sign become
math-mode symbols, so the output compiles with pdflatex.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from xbench.errors import DataError
from xbench.fileio import atomic_write_text
from xbench.report.records import Record, records_to_frame

STATS = ("mean", "ci", "n_seeds", "n_failed")
MASK_MARK = " †"  # appended to rows whose training used ground-truth masks
# Identifies one measurement; later duplicates replace earlier ones.
_RECORD_KEY = ["dataset", "method", "seed", "key"]


@dataclass(frozen=True)
class _Table:
    """One dataset's leaderboard before formatting.

    ``stats`` is indexed by method with columns (key, stat), stat in STATS, raw
    units. ``columns`` is indexed by key with the display metadata of each column.
    """

    dataset: str
    stats: pd.DataFrame
    columns: pd.DataFrame

    @property
    def row_failed(self) -> pd.Series:
        return self.stats.xs("n_failed", axis=1, level="stat").sum(axis=1) > 0


def _column_keys(frame: pd.DataFrame) -> pd.Series:
    return frame["metric"] + ("@exit" + frame["exit"].astype("string")).fillna("")


def _stats(frame: pd.DataFrame, methods: list[str], keys: list[str]) -> pd.DataFrame:
    failed = frame["status"].eq("failed")
    grouped = frame.assign(failed=failed).groupby(["method", "key"], sort=False)
    # Failed records have value NaN, so mean/std/count see the successful seeds only.
    agg = grouped.agg(
        mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"), n_failed=("failed", "sum")
    )
    n = agg["n_seeds"].to_numpy()
    t = scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1))
    agg["ci"] = np.where(n >= 2, t * agg["std"].to_numpy() / np.sqrt(n), np.nan)
    wide = agg[list(STATS)].unstack("key").swaplevel(axis=1)
    full = pd.MultiIndex.from_product([keys, STATS], names=["key", "stat"])
    wide = wide.reindex(index=pd.Index(methods, name="method"), columns=full)
    counts = [c for c in full if c[1] in ("n_seeds", "n_failed")]
    wide[counts] = wide[counts].fillna(0).astype("int64")
    return wide


def _table(dataset: str, frame: pd.DataFrame) -> _Table:
    methods = list(frame["method"].unique())
    # Metrics in the order of the method that reports the most of them (a baseline skips the
    # early-exit metrics, which would otherwise trail behind everything), then by first
    # appearance; a metric's per-exit columns follow its overall one.
    per_method = [list(g["metric"].unique()) for _, g in frame.groupby("method", sort=False)]
    reference = max(per_method, key=len)
    rest = [m for m in frame["metric"].unique() if m not in reference]
    metric_order = {m: i for i, m in enumerate([*reference, *rest])}
    firsts = frame.drop_duplicates("key")
    order = firsts.assign(_metric=firsts["metric"].map(metric_order), _exit=firsts["exit"].fillna(-1))
    keys = list(order.sort_values(["_metric", "_exit"], kind="stable")["key"])
    columns = frame.drop_duplicates("key").set_index("key")[
        [
            "metric",
            "exit",
            "display_label",
            "display_unit",
            "display_scale",
            "display_decimals",
            "higher_is_better",
        ]
    ]
    latest = frame.drop_duplicates(_RECORD_KEY, keep="last")
    return _Table(dataset, _stats(latest, methods, keys), columns.reindex(keys))


def _check_setups(frame: pd.DataFrame) -> None:
    """Refuse to average seeds trained or measured with different settings into one row."""
    if "setup" not in frame:
        return
    setups = frame.dropna(subset=["setup"]).groupby(["dataset", "method"], sort=False)["setup"].unique()
    for (dataset, method), values in setups.items():
        if len(values) > 1:
            raise DataError(
                f"records of method {method!r} on {dataset!r} come from different settings "
                f"(setups {', '.join(sorted(values))}); report those runs separately or give the rows distinct labels"
            )


def _tables(records: Iterable[Record]) -> list[_Table]:
    frame = records_to_frame(records)
    _check_setups(frame)
    frame["key"] = _column_keys(frame)
    # Rows trained with ground-truth masks (weak supervision) carry a dagger; the caption says so.
    masks = frame["config"].map(lambda c: bool(isinstance(c, dict) and c.get("uses_masks")))
    frame.loc[masks, "method"] = frame.loc[masks, "method"] + MASK_MARK
    tables = []
    for name, group in frame.groupby("dataset", sort=False):
        explained = group["explainer"].notna()
        if (~explained).any():
            tables.append(_table(str(name), group[~explained]))
        if explained.any():
            # Explanation metrics get their own table: one row per (method, explainer), so a
            # method's native maps, Grad-CAM and the random chance level read side by side.
            rows = group[explained].copy()
            rows["method"] = rows["method"] + " (" + rows["explainer"] + ")"
            tables.append(_table(f"{name} · explanations", rows))
    return tables


def leaderboard_frame(records: Iterable[Record]) -> dict[str, pd.DataFrame]:
    """Aggregate records over seeds, one frame per dataset in order of appearance.

    Each frame is indexed by method; its columns are a MultiIndex (key, stat)
    with stat in ``mean``, ``ci`` (95% CI half-width, NaN below two seeds),
    ``n_seeds`` (successful seeds) and ``n_failed`` (failed records), in raw
    (unscaled) units.
    """
    return {table.dataset: table.stats for table in _tables(records)}


def _number(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _direction(column: pd.Series) -> bool | None:
    """``higher_is_better`` as a Python bool or None (pandas may hand back numpy bools)."""
    value = column["higher_is_better"]
    return None if pd.isna(value) else bool(value)


def _header(column: pd.Series) -> str:
    text = str(column["display_label"])
    if pd.notna(column["exit"]):
        text += f" @exit {column['exit']}"
    if column["display_unit"]:
        text += f" [{column['display_unit']}]"
    return text + {True: " ↑", False: " ↓", None: ""}[_direction(column)]


def _best(shown: np.ndarray, direction: bool | None) -> float | None:
    """The best displayed value of a column, or None for a column without a direction."""
    if direction is None:
        return None
    return float(shown.max(initial=-np.inf) if direction else shown.min(initial=np.inf))


def _cells(table: _Table, bold: Callable[[str], str], pm: str, missing: str) -> pd.DataFrame:
    """Format every cell of ``table`` as text, with the best value per column marked by ``bold``."""
    out = pd.DataFrame("failed", index=table.stats.index, columns=table.columns.index, dtype=object)
    out.loc[~table.row_failed] = missing
    for key, column in table.columns.iterrows():
        scale, decimals = float(column["display_scale"]), int(column["display_decimals"])
        stats = table.stats[key][table.stats[key]["n_seeds"] > 0]
        means = [_number(m * scale, decimals) for m in stats["mean"]]
        shown = np.array([float(m) for m in means])
        best = _best(shown, _direction(column))
        for method, mean, value, ci in zip(stats.index, means, shown, stats["ci"], strict=True):
            text = bold(mean) if best is not None and value == best else mean
            # A zero-width interval (a count that no seed changes, e.g. parameters) is noise in a table.
            plain = pd.isna(ci) or ci == 0
            out.loc[method, key] = text if plain else f"{text}{pm}{_number(ci * scale, decimals)}"
    return out


def _caption(table: _Table) -> str:
    seeds = table.stats.xs("n_seeds", axis=1, level="stat").to_numpy().ravel()
    seeds = seeds[seeds > 0]
    if seeds.size == 0:
        return "No successful cells."
    low, high = int(seeds.min()), int(seeds.max())
    if high == 1:
        text = "Mean over 1 seed (no CI)."
    else:
        count = f"{high}" if low == high else f"{low}\u2013{high}"
        text = f"Mean ± 95% CI (Student's t) over {count} seeds."
        if low == 1:
            text += " Cells with 1 seed have no CI."
    text += " Best per column in bold; ↑ higher is better, ↓ lower is better."
    if any(str(m).endswith(MASK_MARK) for m in table.stats.index):
        text += " † trained with ground-truth masks (weak supervision)."
    return text


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(records: Iterable[Record], title: str | None = None) -> str:
    """GitHub-flavoured Markdown: one ``## dataset`` section per dataset with a caption line."""
    parts = [f"# {title}\n"] if title else []
    for table in _tables(records):
        cells = _cells(table, bold=lambda x: f"**{x}**", pm=" ± ", missing="\u2013")
        header = ["Method", *(_header(c) for _, c in table.columns.iterrows())]
        lines = [
            "| " + " | ".join(_markdown_escape(h) for h in header) + " |",
            "|:---|" + "---:|" * len(table.columns),
            *(
                "| " + " | ".join([_markdown_escape(str(method)), *row]) + " |"
                for method, row in zip(cells.index, cells.to_numpy().tolist(), strict=True)
            ),
        ]
        parts.append(f"## {table.dataset}\n\n{_caption(table)}\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts) if parts else "No records.\n"


def to_csv(records: Iterable[Record]) -> str:
    """Wide CSV, one row per (dataset, method); see the module docstring for the columns."""
    frames = []
    for table in _tables(records):
        wide = pd.DataFrame(index=table.stats.index)
        for key, column in table.columns.iterrows():
            scale = float(column["display_scale"])
            wide[f"{key}_mean"] = table.stats[(key, "mean")] * scale
            wide[f"{key}_ci"] = table.stats[(key, "ci")] * scale
            wide[f"{key}_n_seeds"] = table.stats[(key, "n_seeds")]
        wide["failed"] = table.row_failed
        frames.append(wide.reset_index().assign(dataset=table.dataset))
    if not frames:
        return "dataset,method,failed\n"
    out = pd.concat(frames, ignore_index=True, sort=False)
    n_seeds = [c for c in out.columns if c.endswith("_n_seeds")]
    out[n_seeds] = out[n_seeds].fillna(0).astype("int64")
    values = [c for c in out.columns if c not in ("dataset", "method", "failed")]
    out = out[["dataset", "method", *values, "failed"]]
    return str(out.to_csv(index=False, lineterminator="\n", float_format="%.12g"))


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
        "†": r"\textdagger{}",
        "·": r"$\cdot$",
    }
)


def latex_escape(text: str) -> str:
    """Escape ``text`` for LaTeX text mode; ±, ↑, ↓, µ and the multiplication sign become math symbols."""
    return text.translate(_LATEX_ESCAPES)


def _latex_label(base: str | None, dataset: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.:-]+", "-", dataset).strip("-")
    return f"{base}:{slug}" if base else f"tab:xbench:{slug}"


def to_latex(records: Iterable[Record], caption: str | None = None, label: str | None = None) -> str:
    """One booktabs ``table`` per dataset; compiles with ``\\usepackage{booktabs}``.

    Args:
        records: the records to tabulate.
        caption: text put before the dataset name in every ``\\caption``.
        label: prefix of every ``\\label``; a table's label is ``{label}:{dataset}``
            (default ``tab:xbench:{dataset}``), the dataset reduced to ``[A-Za-z0-9.:-]``.
    """
    parts = []
    for table in _tables(records):
        cells = _cells(table, bold=lambda x: rf"\textbf{{{x}}}", pm=r" $\pm$ ", missing="--")
        title = f"{caption} ({table.dataset})" if caption else table.dataset
        header = ["Method", *(_header(c) for _, c in table.columns.iterrows())]
        rows = [
            " & ".join([latex_escape(str(method)), *row]) + r" \\"
            for method, row in zip(cells.index, cells.to_numpy().tolist(), strict=True)
        ]
        parts.append(
            "\n".join(
                [
                    r"\begin{table}[htbp]",
                    r"\centering",
                    rf"\caption{{{latex_escape(title)}. {latex_escape(_caption(table))}}}",
                    rf"\label{{{_latex_label(label, table.dataset)}}}",
                    rf"\begin{{tabular}}{{l{'r' * len(table.columns)}}}",
                    r"\toprule",
                    " & ".join(latex_escape(h) for h in header) + r" \\",
                    r"\midrule",
                    *rows,
                    r"\bottomrule",
                    r"\end{tabular}",
                    r"\end{table}",
                ]
            )
            + "\n"
        )
    return "\n".join(parts) if parts else "% xbench leaderboard: no records\n"


def write_leaderboard(records: Iterable[Record], out_dir: str | Path) -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.tex`` to ``out_dir`` atomically.

    Returns:
        The three paths, in that order.
    """
    records = list(records)
    out_dir = Path(out_dir)
    return [
        atomic_write_text(out_dir / "leaderboard.md", to_markdown(records, title="Leaderboard")),
        atomic_write_text(out_dir / "leaderboard.csv", to_csv(records)),
        atomic_write_text(out_dir / "leaderboard.tex", to_latex(records)),
    ]
