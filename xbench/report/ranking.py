"""Explainers ranked per metric, and the sanity check per explainer: two tables from records.

**Ranking** (LATEC's aggregation, Klein et al., NeurIPS 2024). Per dataset and metric category
(localization, faithfulness, consistency), every explanation row (``method (explainer)``) gets a
rank on each of the category's metrics: its value is the *median over seeds* (robust to one bad
seed, as LATEC takes the median over samples), rank 1 is the best in the metric's direction, and
ties share their average rank. A row's *mean rank* is the mean of its ranks over the category's
metrics, its *spread* their standard deviation (ddof 0; how much the metrics disagree about it),
and ``n`` the number of metrics it was ranked on. Rows are ordered by mean rank. Metrics without
a direction, measured per exit, or with fewer than two rows are not ranked; a row missing a
metric is ranked on the others (``n`` says so). Efficiency (explanation time) and sanity are not
ranked: they are costs and checks, not quality.

**Sanity** (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency maps"). Per dataset and
row: the similarity of the explainer's maps before and after cascading randomisation of every
model parameter (``parameter_randomisation``, mean over seeds; lower is better), and the
pass/fail of ``randomisation_check``: ``pass`` if every seed passes, ``fail`` if none, else
``k/n``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from xbench.report.records import Record
from xbench.report.stats import as_statistics, category_order

#: Categories whose metrics are ranked.
RANKED = ("localization", "faithfulness", "consistency")
SIMILARITY, CHECK = "parameter_randomisation", "randomisation_check"
RANKING_COLUMNS = ["dataset", "category", "row", "mean_rank", "spread", "n_metrics", "n_rows", "metrics"]
SANITY_COLUMNS = ["dataset", "row", "similarity", "n_seeds", "passed", "checked", "verdict"]


def metric_ranks(records: Iterable[Record]) -> pd.DataFrame:
    """One row per (dataset, category, metric key, row): the median over seeds and the rank among rows."""
    stats = as_statistics(records)
    ok = stats.ok
    ok = ok[ok["explained"] & ok["exit"].isna() & ok["category"].isin(RANKED) & ok["higher_is_better"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=["dataset", "category", "key", "row", "median", "rank"])
    medians = (
        ok.groupby(["dataset", "category", "key", "row"], sort=False)
        .agg(median=("value", "median"), higher=("higher_is_better", "first"))
        .reset_index()
    )
    # Rank 1 is the best: negate the values of metrics where higher is better.
    signed = medians["median"].where(~medians["higher"].astype(bool), -medians["median"])
    medians["rank"] = signed.groupby([medians["dataset"], medians["key"]]).rank(method="average")
    counts = medians.groupby(["dataset", "key"])["row"].transform("count")
    return medians[counts >= 2].drop(columns="higher").reset_index(drop=True)


def ranking(records: Iterable[Record]) -> pd.DataFrame:
    """The Ranking table's rows (:data:`RANKING_COLUMNS`), per dataset and category, best mean rank first."""
    ranks = metric_ranks(records)
    if ranks.empty:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    out = (
        ranks.groupby(["dataset", "category", "row"], sort=False)["rank"]
        .agg(mean_rank="mean", spread=lambda r: float(np.std(r.to_numpy(), ddof=0)), n_metrics="count")
        .reset_index()
    )
    out["n_rows"] = out.groupby(["dataset", "category"])["row"].transform("count")
    metrics = ranks.groupby(["dataset", "category"])["key"].agg(lambda k: ", ".join(dict.fromkeys(k)))
    out["metrics"] = [metrics[(d, c)] for d, c in zip(out["dataset"], out["category"], strict=True)]
    order = {c: i for i, c in enumerate(category_order(out["category"].unique()))}
    datasets = {d: i for i, d in enumerate(dict.fromkeys(out["dataset"]))}
    out = out.assign(_d=out["dataset"].map(datasets), _c=out["category"].map(order))
    out = out.sort_values(["_d", "_c", "mean_rank", "row"], kind="stable").drop(columns=["_d", "_c"])
    return out[RANKING_COLUMNS].reset_index(drop=True)


def sanity(records: Iterable[Record]) -> pd.DataFrame:
    """The Sanity table's rows (:data:`SANITY_COLUMNS`): similarity after randomisation and the check's verdict."""
    ok = as_statistics(records).ok
    ok = ok[ok["explained"] & ok["metric"].isin([SIMILARITY, CHECK])]
    if ok.empty:
        return pd.DataFrame(columns=SANITY_COLUMNS)
    rows = []
    for (dataset, row), group in ok.groupby(["dataset", "row"], sort=False):
        similarity = group.loc[group["metric"] == SIMILARITY, "value"]
        checks = group.loc[group["metric"] == CHECK, "value"]
        passed, checked = int((checks >= 0.5).sum()), len(checks)
        verdict = (
            "—" if not checked else "pass" if passed == checked else "fail" if not passed else f"{passed}/{checked}"
        )
        rows.append(
            {
                "dataset": dataset,
                "row": row,
                "similarity": float(similarity.mean()) if len(similarity) else float("nan"),
                "n_seeds": len(similarity),
                "passed": passed,
                "checked": checked,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows, columns=SANITY_COLUMNS)


# -- rendering: Markdown (also the HTML report's), LaTeX and CSV -----------------------------------------
RANKING_CAPTION = (
    "Each explanation row ranked on every metric of the category by its median over seeds (1 = best); mean "
    "rank over the metrics, and their spread (standard deviation): LATEC's aggregation."
)
SANITY_CAPTION = (
    "Similarity (Spearman) of each explainer's maps after randomising every model parameter to its maps of the "
    "trained model (Adebayo et al. 2018; lower is better), and the check: pass below the threshold on every seed."
)


def _ranking_rows(table: pd.DataFrame) -> list[tuple[str, str, list[list[str]]]]:
    """``(dataset, category, rows)`` with each row's cells as text: rank, row, mean rank, spread, metrics."""
    out = []
    for (dataset, category), group in table.groupby(["dataset", "category"], sort=False):
        rows = [
            [f"{i}", r.row, f"{r.mean_rank:.2f}", f"{r.spread:.2f}", f"{r.n_metrics}"]
            for i, r in enumerate(group.itertuples(), start=1)
        ]
        out.append((str(dataset), str(category), rows))
    return out


def ranking_markdown(records: Iterable[Record]) -> str:
    """The ``## Ranking`` and ``## Sanity`` sections (empty string without explanation records)."""
    parts = []
    table = ranking(records)
    if not table.empty:
        parts += ["## Ranking", "", RANKING_CAPTION, ""]
        for dataset, category, rows in _ranking_rows(table):
            metrics = table[(table["dataset"] == dataset) & (table["category"] == category)]["metrics"].iloc[0]
            parts += [f"### {dataset} · {category}", "", f"Ranked on: {metrics}.", ""]
            parts += ["| Rank | Method (explainer) | Mean rank ↓ | Spread | Metrics |", "|---:|:---|---:|---:|---:|"]
            parts += ["| " + " | ".join(cells) + " |" for cells in rows] + [""]
    checks = sanity(records)
    if not checks.empty:
        parts += ["## Sanity", "", SANITY_CAPTION, ""]
        for dataset, group in checks.groupby("dataset", sort=False):
            parts += [f"### {dataset}", "", "| Method (explainer) | Similarity ↓ | Check |", "|:---|---:|:---|"]
            parts += [f"| {r.row} | {_number(r.similarity)} | {r.verdict} |" for r in group.itertuples()] + [""]
    return "\n".join(parts)


def _number(value: float) -> str:
    return "—" if value != value else f"{value:.3f}"  # NaN: no similarity recorded


def ranking_latex(records: Iterable[Record], layout: str = "onecolumn") -> str:
    """Booktabs tables of the Ranking and Sanity: ``table`` floats on one column; in the two-column layout
    ``table*`` (page-wide), as the leaderboard's wide tables, since row labels like
    ``baseline (integrated_gradients)`` leave five columns wider than ``\\columnwidth``."""
    env = "table*" if layout == "twocolumn" else "table"
    from xbench.report.tables.latex import _breakable
    from xbench.report.tables.latex_text import latex_escape

    parts = []
    table = ranking(records)
    for dataset, category, rows in _ranking_rows(table):
        body = [" & ".join([cells[0], _breakable(latex_escape(cells[1])), *cells[2:]]) + r" \\" for cells in rows]
        parts.append(
            _float(
                f"Ranking: {dataset}, {category}. {RANKING_CAPTION}",
                f"tab:ranking:{dataset}:{category}",
                r"rp{0.38\linewidth}rrr",  # long row labels wrap (after underscores and spaces)
                r"Rank & Method (explainer) & {Mean rank $\downarrow$} & Spread & Metrics \\",
                body,
                env,
            )
        )
    checks = sanity(records)
    for dataset, group in checks.groupby("dataset", sort=False):
        body = [
            f"{_breakable(latex_escape(r.row))} & {_number(r.similarity)} & {latex_escape(r.verdict)}" + r" \\"
            for r in group.itertuples()
        ]
        parts.append(
            _float(
                f"Sanity: {dataset}. {SANITY_CAPTION}",
                f"tab:sanity:{dataset}",
                r"p{0.6\linewidth}rl",
                r"Method (explainer) & {Similarity $\downarrow$} & Check \\",
                body,
                env,
            )
        )
    return "\n".join(parts)


def _float(caption: str, label: str, spec: str, header: str, body: list[str], env: str = "table") -> str:
    from xbench.report.tables.latex_text import latex_escape

    safe = "".join(c if c.isalnum() or c in ".:-" else "-" for c in label)
    return "\n".join(
        [
            rf"\begin{{{env}}}[htbp]",
            r"\centering\small",
            rf"\caption{{{latex_escape(caption)}}}",
            rf"\label{{{safe}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            header,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            rf"\end{{{env}}}",
            "",
        ]
    )
