"""The Ranking and Sanity tables' numbers, against ranks computed by hand."""

from __future__ import annotations

import math

from tests.helpers import make_record
from xbench.report.ranking import metric_ranks, ranking, sanity
from xbench.report.records import Record


def values(metric: str, explainer: str, seeds: list[float], category: str, higher: bool) -> list[Record]:
    return [
        make_record(
            "baseline", s, metric, v, explainer=explainer, category=category, higher_is_better=higher,
            display={"label": metric, "unit": "", "scale": 1.0, "decimals": 3},
        )
        for s, v in enumerate(seeds)
    ]  # fmt: skip


def records() -> list[Record]:
    # pointing game (higher better), medians: a 0.9, b 0.7, c 0.5 -> ranks 1, 2, 3 (by the mean b would lead)
    # relevance mass: a 3, b 1, c 2 -> localization mean ranks a 2, b 1.5, c 2.5
    # relevance mass (higher better), medians: a 0.2, b 0.8, c 0.4 -> ranks 3, 1, 2
    # pixel flipping (lower better, faithfulness), medians: a 0.1, b 0.3 -> ranks 1, 2 (c has none)
    return [
        *values("pointing_game", "a", [0.9, 0.0, 0.95], "localization", True),  # median 0.9, mean 0.62
        *values("pointing_game", "b", [0.7, 0.7, 0.7], "localization", True),
        *values("pointing_game", "c", [0.4, 0.5, 0.6], "localization", True),
        *values("relevance_mass_accuracy", "a", [0.2], "localization", True),
        *values("relevance_mass_accuracy", "b", [0.8], "localization", True),
        *values("relevance_mass_accuracy", "c", [0.4], "localization", True),
        *values("pixel_flipping", "a", [0.1, 0.1], "faithfulness", False),
        *values("pixel_flipping", "b", [0.3, 0.2, 0.4], "faithfulness", False),
        *values("explanation_time", "a", [1.0], "efficiency", False),  # not ranked: a cost
    ]


def test_each_metric_ranks_the_median_over_seeds() -> None:
    ranks = metric_ranks(records())
    got = {(r.key, r.row): r.rank for r in ranks.itertuples()}
    assert got[("pointing_game", "baseline (a)")] == 1  # by the median (0.9 > 0.7), not the mean (0.62 < 0.7)
    assert got[("pointing_game", "baseline (b)")] == 2 and got[("pointing_game", "baseline (c)")] == 3
    assert got[("relevance_mass_accuracy", "baseline (b)")] == 1
    assert got[("pixel_flipping", "baseline (a)")] == 1  # lower is better
    assert not any(key == "explanation_time" for key, _ in got)


def test_mean_rank_and_spread_per_category() -> None:
    table = ranking(records())
    loc = table[table["category"] == "localization"].set_index("row")
    assert list(loc.index) == ["baseline (b)", "baseline (a)", "baseline (c)"]  # mean ranks 1.5, 2, 2.5
    assert loc.loc["baseline (a)", "mean_rank"] == 2.0
    assert math.isclose(loc.loc["baseline (a)", "spread"], 1.0)  # ranks 1 and 3: std 1
    assert math.isclose(loc.loc["baseline (b)", "spread"], 0.5)  # ranks 2 and 1
    assert set(loc["n_metrics"]) == {2} and set(loc["n_rows"]) == {3}
    faith = table[table["category"] == "faithfulness"]
    assert list(faith["row"]) == ["baseline (a)", "baseline (b)"] and list(faith["mean_rank"]) == [1.0, 2.0]
    assert list(table["category"].unique()) == ["localization", "faithfulness"]


def test_sanity_verdicts() -> None:
    recs = [
        *values("parameter_randomisation", "a", [0.1, 0.3], "sanity", False),
        *values("randomisation_check", "a", [1.0, 1.0], "sanity", True),
        *values("parameter_randomisation", "b", [0.9, 0.7], "sanity", False),
        *values("randomisation_check", "b", [0.0, 1.0], "sanity", True),
        *values("parameter_randomisation", "c", [0.95], "sanity", False),
        *values("randomisation_check", "c", [0.0], "sanity", True),
    ]
    table = sanity(recs).set_index("row")
    assert math.isclose(table.loc["baseline (a)", "similarity"], 0.2)
    assert table.loc["baseline (a)", "verdict"] == "pass"
    assert table.loc["baseline (b)", "verdict"] == "1/2"
    assert table.loc["baseline (c)", "verdict"] == "fail"


def test_no_explanation_records_give_empty_tables() -> None:
    plain = [make_record("baseline", 0, "top1", 0.9)]
    assert ranking(plain).empty and sanity(plain).empty


def test_every_report_format_has_the_ranking_and_sanity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from xbench.report.html import render_html
    from xbench.report.tables import write_leaderboard

    recs = [
        *records(),
        *values("parameter_randomisation", "a", [0.1], "sanity", False),
        *values("randomisation_check", "a", [1.0], "sanity", True),
    ]
    write_leaderboard(recs, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Ranking" in md and "## Sanity" in md
    assert md.index("## Ranking") > md.index("# Leaderboard")
    assert "| 1 | baseline (b) | 1.50 | 0.50 | 2 |" in md
    for tex in ("leaderboard.tex", "leaderboard_twocolumn.tex"):
        text = (tmp_path / tex).read_text()
        assert r"\label{tab:ranking:fmnist:localization}" in text and r"\label{tab:sanity:fmnist}" in text
        assert "baseline (b) & 1.50 & 0.50 & 2" in text
    csv = (tmp_path / "ranking.csv").read_text().splitlines()
    assert csv[0] == "dataset,category,row,mean_rank,spread,n_metrics,n_rows,metrics"
    assert (tmp_path / "sanity.csv").read_text().splitlines()[1].startswith("fmnist,baseline (a),0.1,1,1,1,pass")
    html = render_html(recs, [], "t")
    assert 'id="ranking"' in html and "Mean rank" in html
