"""Verdicts on the papers' claims, computed from records alone.

Each method's claims (:class:`xbench.claims.Claim`) travel in its records (``config.claims``). For
every dataset with rows of a claim's subject, the claim is tested over seeds:

* the per-seed values of the subject rows, or their paired differences to the reference rows
  (the seeds both have), give a mean and a 95 % confidence interval, Student's t with n − 1
  degrees of freedom (the leaderboard's formula);
* **supported** when the whole interval satisfies the claim (``> 1.97``: its lower end is above
  1.97); **not supported** when the whole interval contradicts it (the claim is outside the
  interval); **inconclusive** when the interval straddles the threshold, or with fewer than
  :data:`MIN_SEEDS` seeds (no interval);
* a claim with ``also`` parts holds when all parts hold, fails when any part fails, and is
  inconclusive otherwise.

A metric that does not vary across seeds (a parameter count) has a zero-width interval and is
decided by its value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xbench.claims import Claim, Rows
from xbench.fileio import atomic_write_text
from xbench.report.records import Record
from xbench.report.stats import mean_ci

VerdictName = Literal["supported", "not supported", "inconclusive"]
#: Seeds needed for a confidence interval (and so for any verdict but "inconclusive").
MIN_SEEDS = 2
SUPPORTED: VerdictName = "supported"
REFUTED: VerdictName = "not supported"
OPEN: VerdictName = "inconclusive"


@dataclass
class Verdict:
    """One claim on one dataset: our mean ± CI (raw units), the seeds, and the verdict with its reason."""

    claim: Claim
    dataset: str
    row: str  # the subject's leaderboard row label
    mean: float | None
    ci: float | None
    seeds: int
    verdict: VerdictName
    reason: str
    display: dict[str, Any] = field(default_factory=dict)
    parts: list[Verdict] = field(default_factory=list)
    reference: str | None = None  # the reference's leaderboard row label, if the claim has one

    def tested(self) -> str:
        """What was compared, by leaderboard labels: ``top1[lap (pretrained)] − top1[baseline] >= -0.005``."""
        c = self.claim

        def row(label: str, rows: Rows) -> str:
            shown = f"{label} ({rows.explainer})" if rows.explainer else label
            return f"{shown} @exit {rows.exit}" if rows.exit is not None else shown

        lhs = f"{c.metric}[{row(self.row, c.subject)}]"
        if c.reference is not None:  # the run may lack the reference rows: then name them as the claim does
            reference = row(self.reference, c.reference) if self.reference is not None else c.reference.describe()
            lhs += f" − {c.reference_metric or c.metric}[{reference}]"
        return f"{lhs} {c.relation} {c.threshold:g}"

    def ours(self) -> str:
        """``mean ± CI`` in the metric's display units (``—`` without values)."""
        if self.mean is None:
            return "—"
        scale, decimals = float(self.display.get("scale", 1.0)), int(self.display.get("decimals", 3))
        unit = self.display.get("unit", "")
        text = f"{self.mean * scale:.{decimals}f}"
        if self.ci is not None:
            text += f" ± {self.ci * scale:.{decimals}f}"
        return text + (f" {unit}" if unit and unit != "%" else unit)


def claims_in(records: Iterable[Record]) -> list[Claim]:
    """Every claim the records carry, once each (by id), in order of appearance."""
    seen: dict[str, Claim] = {}
    for r in records:
        for raw in (r.config or {}).get("claims", []) or []:
            if raw.get("id") not in seen:
                claim = Claim.model_validate(raw)
                seen[claim.id] = claim
    return list(seen.values())


def matches(record: Record, rows: Rows, metric: str) -> bool:
    params = ((record.config or {}).get("method") or {}).get("params", {})
    return (
        record.method_name == rows.method
        and record.metric == metric
        and record.explainer == rows.explainer
        and record.exit == rows.exit
        and record.status == "ok"
        and record.value is not None
        and all(params.get(k) == v for k, v in rows.params.items())
    )


def _values(records: list[Record], rows: Rows, metric: str) -> dict[str, dict[int, float]]:
    """Per matching row label, the value of each seed."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        if matches(r, rows, metric):
            assert r.value is not None
            out.setdefault(r.method, {})[r.seed] = r.value
    return out


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and 95 % CI half-width (the leaderboard's, :func:`xbench.report.stats.mean_ci`); no half-width below 2."""
    mean, ci = mean_ci(values)
    return mean, None if math.isnan(ci) else ci


def decide(mean: float, ci: float | None, relation: str, threshold: float) -> tuple[VerdictName, str]:
    """The verdict of ``value relation threshold`` given the interval ``mean ± ci``."""
    if ci is None:
        return OPEN, f"fewer than {MIN_SEEDS} seeds: no confidence interval"
    lo, hi = mean - ci, mean + ci
    above = relation in (">", ">=")
    strict = relation in (">", "<")

    def holds(v: float) -> bool:
        if above:
            return v > threshold if strict else v >= threshold
        return v < threshold if strict else v <= threshold

    if holds(lo) and holds(hi):
        return SUPPORTED, f"the 95% CI [{lo:.4g}, {hi:.4g}] is {relation} {threshold:g}"
    if not holds(lo) and not holds(hi):
        return REFUTED, f"the 95% CI [{lo:.4g}, {hi:.4g}] excludes {relation} {threshold:g}"
    return OPEN, f"the 95% CI [{lo:.4g}, {hi:.4g}] straddles {threshold:g}"


def evaluate(claim: Claim, records: list[Record], dataset: str) -> list[Verdict]:
    """The claim on one dataset's records: one verdict per subject row (usually one)."""
    here = [r for r in records if r.dataset == dataset]
    subjects = _values(here, claim.subject, claim.metric)
    reference_metric = claim.reference_metric or claim.metric
    references = _values(here, claim.reference, reference_metric) if claim.reference is not None else {}
    display = next((r.display for r in here if matches(r, claim.subject, claim.metric)), {})
    verdicts = []
    for row, values in subjects.items():
        if claim.reference is not None:
            if not references:
                verdicts.append(Verdict(claim, dataset, row, None, None, 0, OPEN, "no reference rows", display))
                continue
            # The subject's own row when the reference is another explainer of it, else the first reference row.
            ref_row = row if row in references else next(iter(references))
            ref = references[ref_row]
            seeds = sorted(values.keys() & ref.keys())
            diffs = [values[s] - ref[s] for s in seeds]
        else:
            ref_row = None
            seeds = sorted(values)
            diffs = [values[s] for s in seeds]
        if not diffs:
            verdicts.append(Verdict(claim, dataset, row, None, None, 0, OPEN, "no seeds in common", display))
            continue
        mean, ci = interval(diffs)
        verdict, reason = decide(mean, ci, claim.relation, claim.threshold)
        parts = [v for part in claim.also for v in evaluate(part, records, dataset)[:1]]
        if parts:
            missing = len(parts) < len(claim.also)
            names = [verdict, *(p.verdict for p in parts)]
            if REFUTED in names:
                verdict, reason = REFUTED, "; ".join([reason, *(p.reason for p in parts if p.verdict == REFUTED)])
            elif missing or any(n != SUPPORTED for n in names):
                verdict = OPEN
                reason = "; ".join([reason, *(p.reason for p in parts)] + (["a condition has no values"] * missing))
        verdicts.append(Verdict(claim, dataset, row, mean, ci, len(diffs), verdict, reason, display, parts, ref_row))
    return verdicts


def verdicts(records: Iterable[Record]) -> list[Verdict]:
    """Every claim the records carry, on every dataset that has its subject rows."""
    records = list(records)
    datasets = list(dict.fromkeys(r.dataset for r in records))
    return [
        v
        for claim in claims_in(records)
        for d in datasets
        if not (claim.optional and not _has_reference(claim, records, d))
        for v in evaluate(claim, records, d)
    ]


def _has_reference(claim: Claim, records: list[Record], dataset: str) -> bool:
    """Whether the dataset's records hold any row the claim compares with."""
    if claim.reference is None:
        return True
    metric = claim.reference_metric or claim.metric
    return any(r.dataset == dataset and matches(r, claim.reference, metric) for r in records)


def to_rows(found: list[Verdict]) -> list[dict[str, str]]:
    """The Claims table: one row per verdict, as strings (Markdown, LaTeX, HTML and JSON render it)."""
    return [
        {
            "Claim": v.claim.statement,
            "Dataset": v.dataset,
            "Tested": v.tested(),
            "Paper": v.claim.paper,
            "Ours (mean ± 95% CI)": v.ours(),
            "Seeds": str(v.seeds),
            "Verdict": v.verdict,
        }
        for v in found
    ]


def to_markdown(found: list[Verdict]) -> str:
    """``## Claims`` and its table; empty when no record carries a claim."""
    if not found:
        return ""
    rows = to_rows(found)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h].replace("|", "\\|") for h in head) + " |" for r in rows]
    caption = (
        "Each paper's checkable claims, tested on this run's records: our mean ± 95% CI over seeds (of the "
        "difference to the reference row where there is one); *supported*: the CI satisfies the claim; "
        "*not supported*: the CI excludes it; *inconclusive*: the CI straddles it or there are too few seeds."
    )
    return "## Claims\n\n" + caption + "\n\n" + "\n".join(lines) + "\n"


def to_json(found: list[Verdict]) -> list[dict[str, Any]]:
    """Machine-readable verdicts: the claim itself, our numbers (raw units) and the verdict with its reason."""
    return [
        {
            "claim": v.claim.model_dump(mode="json"),
            "dataset": v.dataset,
            "row": v.row,
            "reference_row": v.reference,
            "tested": v.tested(),
            "mean": v.mean,
            "ci": v.ci,
            "seeds": v.seeds,
            "verdict": v.verdict,
            "reason": v.reason,
            "parts": to_json(v.parts),
        }
        for v in found
    ]


def write_claims(records: Iterable[Record], out_dir: str | Path) -> list[Path]:
    """``claims.json`` with every verdict, if any record carries a claim; the path written, or nothing."""
    found = verdicts(records)
    if not found:
        return []
    return [atomic_write_text(Path(out_dir) / "claims.json", json.dumps(to_json(found), indent=1, allow_nan=False))]
