"""Claim verdicts from records: hand-computed intervals, each verdict, paired seeds, conjunctions."""

from __future__ import annotations

import math
import shutil
import subprocess
from typing import Any

import pytest
from helpers import make_record
from scipy import stats

from xbench.claims import Claim, Rows
from xbench.report.claims import claims_in, decide, interval, to_markdown, verdicts
from xbench.report.records import Record

SPEEDUP = Claim(
    id="egt.speedup",
    statement="early exits run faster",
    paper="1.97x",
    metric="latency_speedup",
    subject=Rows(method="egt", params={"lam": 1.0}),
    relation=">=",
    threshold=1.5,
)
BETTER = Claim(
    id="egt.consistency",
    statement="consistency above lam=0",
    paper="+18.5%",
    metric="attention_consistency",
    subject=Rows(method="egt", params={"lam": 1.0}),
    reference=Rows(method="egt", params={"lam": 0.0}),
    relation=">",
)


def rec(label: str, seed: int, metric: str, value: float | None, lam: float, claims: list[Claim]) -> Record:
    config: dict[str, Any] = {
        "method": {"name": "egt", "params": {"lam": lam}},
        "claims": [c.model_dump() for c in claims],
    }
    return make_record(label, seed, metric, value, method_name="egt", config=config)


def series(
    label: str, metric: str, values: list[float], lam: float = 1.0, claims: tuple[Claim, ...] = ()
) -> list[Record]:
    return [rec(label, s, metric, v, lam, list(claims)) for s, v in enumerate(values)]


def test_interval_is_students_t_by_hand() -> None:
    mean, ci = interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert ci == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))  # sd of 1, 2, 3 is 1
    assert interval([4.0]) == (4.0, None)


@pytest.mark.parametrize(
    ("mean", "ci", "relation", "verdict"),
    [
        (2.0, 0.4, ">=", "supported"),  # [1.6, 2.4] above 1.5
        (1.0, 0.4, ">=", "not supported"),  # [0.6, 1.4] below 1.5
        (1.6, 0.4, ">=", "inconclusive"),  # [1.2, 2.0] straddles
        (1.0, 0.4, "<", "supported"),
        (1.5, 0.0, ">=", "supported"),  # a deterministic value exactly at the threshold
        (1.5, 0.0, ">", "not supported"),
        (2.0, None, ">=", "inconclusive"),  # one seed
    ],
)
def test_decide(mean: float, ci: float | None, relation: str, verdict: str) -> None:
    assert decide(mean, ci, relation, 1.5)[0] == verdict


def test_absolute_claim_over_three_seeds() -> None:
    records = series("egt", "latency_speedup", [1.8, 2.0, 2.2], claims=(SPEEDUP,))
    (v,) = verdicts(records)
    assert (v.dataset, v.row, v.seeds, v.verdict) == ("fmnist", "egt", 3, "supported")
    assert v.mean == pytest.approx(2.0)
    assert v.ci == pytest.approx(stats.t.ppf(0.975, 2) * 0.2 / math.sqrt(3))  # 0.497: [1.503, 2.497]


def test_difference_claim_pairs_seeds() -> None:
    # Seed 2 has no reference value: the difference runs over seeds 0 and 1 only.
    records = [
        *series("egt", "attention_consistency", [0.9, 0.8, 0.1], claims=(BETTER,)),
        *series("egt (lam=0)", "attention_consistency", [0.5, 0.5], lam=0.0),
    ]
    (v,) = verdicts(records)
    assert v.seeds == 2 and v.mean == pytest.approx(0.35)  # (0.4 + 0.3) / 2
    assert v.ci == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(0.005) / math.sqrt(2))  # sd of 0.4, 0.3
    assert v.verdict == "inconclusive"  # 0.35 ± 0.64 straddles 0
    assert v.reference == "egt (lam=0)"
    (alone,) = verdicts(series("egt", "attention_consistency", [0.9, 0.8], claims=(BETTER,)))  # no λ = 0 row
    assert alone.reference is None and alone.reason == "no reference rows"
    assert alone.tested() == "attention_consistency[egt] − attention_consistency[egt (lam=0.0)] > 0"
    assert v.tested() == "attention_consistency[egt] − attention_consistency[egt (lam=0)] > 0"
    worse = [*series("egt", "attention_consistency", [0.1, 0.2, 0.15], claims=(BETTER,)),
             *series("egt (lam=0)", "attention_consistency", [0.5, 0.6, 0.55], lam=0.0)]  # fmt: skip
    assert verdicts(worse)[0].verdict == "not supported"  # -0.4 every seed: a zero-width CI below 0


def test_a_conjunction_fails_when_a_part_fails() -> None:
    at_accuracy = Claim(
        id="egt.accuracy",
        statement="no accuracy loss",
        paper="0.5 points",
        metric="policy_top1",
        reference_metric="top1",
        subject=Rows(method="egt", params={"lam": 1.0}),
        reference=Rows(method="baseline"),
        relation=">=",
        threshold=-0.005,
    )
    claim = SPEEDUP.model_copy(update={"also": [at_accuracy]})
    fast = series("egt", "latency_speedup", [1.8, 2.0, 2.2], claims=(claim,))
    accurate = series("egt", "policy_top1", [0.90, 0.90, 0.90])
    baseline = [make_record("baseline", s, "top1", 0.92, method_name="baseline") for s in range(3)]
    (v,) = verdicts(fast + accurate + baseline)
    assert v.verdict == "not supported" and v.parts[0].verdict == "not supported"  # 2 points lost
    baseline = [make_record("baseline", s, "top1", 0.90, method_name="baseline") for s in range(3)]
    assert verdicts(fast + accurate + baseline)[0].verdict == "supported"


def test_two_rows_of_a_method_get_a_verdict_each_named_by_their_labels() -> None:
    # Two EGT rows with λ = 1 (e.g. another exit layout): each is compared with the reference on its own.
    records = [
        *series("egt", "attention_consistency", [0.9, 0.8, 0.85], claims=(BETTER,)),
        *series("egt (wide)", "attention_consistency", [0.4, 0.5, 0.45], claims=(BETTER,)),
        *series("egt (lam=0)", "attention_consistency", [0.5, 0.6, 0.55], lam=0.0),
    ]
    found = verdicts(records)
    assert [(v.row, v.verdict) for v in found] == [("egt", "supported"), ("egt (wide)", "not supported")]
    md = to_markdown(found)
    assert "attention_consistency[egt (wide)] − attention_consistency[egt (lam=0)] > 0" in md


def test_claims_come_from_records_once_and_render() -> None:
    records = series("egt", "latency_speedup", [1.8, 2.0, 2.2], claims=(SPEEDUP, BETTER))
    assert [c.id for c in claims_in(records)] == ["egt.speedup", "egt.consistency"]
    found = verdicts(records)
    assert [v.claim.id for v in found] == ["egt.speedup"]  # no attention values: no verdict to give
    md = to_markdown(found)
    assert md.startswith("## Claims") and "| early exits run faster | fmnist |" in md and "| supported |" in md
    assert to_markdown([]) == ""


def test_every_output_format_has_the_claims_first(tmp_path: Any) -> None:
    import json

    from xbench.report.claims import write_claims
    from xbench.report.html import render_html
    from xbench.report.tables import write_leaderboard

    records = series("egt", "latency_speedup", [1.8, 2.0, 2.2], claims=(SPEEDUP,)) + series("egt", "top1", [0.9] * 3)
    write_leaderboard(records, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.index("## Claims") < md.index("## fmnist")  # first, right under the title
    assert "| early exits run faster | fmnist | latency_speedup[egt] >= 1.5 | 1.97x |" in md
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert tex.index(r"\label{tab:claims}") < tex.index("fmnist") and "early exits run faster" in tex
    page = render_html(records, [], "t")
    assert page.index('id="claims"') < page.index('id="summary"') and "<td>supported</td>" in page
    (path,) = write_claims(records, tmp_path)
    (entry,) = json.loads(path.read_text())
    assert entry["verdict"] == "supported" and entry["seeds"] == 3 and entry["claim"]["id"] == "egt.speedup"
    assert entry["mean"] == pytest.approx(2.0)
    assert write_claims(series("egt", "top1", [0.9] * 3), tmp_path / "none") == []  # no claims: no file


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_latex_claims_table_compiles_within_the_text_width(tmp_path: Any) -> None:
    from xbench.report.tables import write_leaderboard

    records = [
        *series("egt", "attention_consistency", [0.9, 0.8, 0.1], claims=(BETTER, SPEEDUP)),  # inconclusive
        *series("egt (lam=0)", "attention_consistency", [0.5, 0.6, 0.55], lam=0.0),
        *series("egt", "latency_speedup", [1.0, 1.1, 1.2]),  # not supported
    ]
    write_leaderboard(records, tmp_path)
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert "inconclusive" in tex and "not supported" in tex
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{siunitx}\n\\begin{document}\n"
    (tmp_path / "doc.tex").write_text(doc + tex + "\n\\end{document}\n")
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Overfull \\hbox" not in (tmp_path / "doc.log").read_text()
