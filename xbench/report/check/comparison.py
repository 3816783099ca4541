"""Comparing a run with a baseline, row by row.

With ``delta = current - baseline`` and ``tol`` the row's tolerance (:mod:`xbench.report.check.tolerances`,
plus float round-off slack), a row is


* ``regressed`` (fails): ``delta < -tol`` when higher is better, ``delta > tol``
  when lower is better;
* ``improved``: beyond ``tol`` in the metric's own good direction;
* ``changed`` (does not fail): ``|delta| > tol`` for a metric without direction;
* ``missing`` (fails): in the baseline but not in the run, or every seed of it
  failed, or some seeds failed and fewer successful seeds remain than the
  baseline had;
* ``new`` (does not fail): in the run but not in the baseline;
* ``ok``: otherwise.

The direction and display of a row come from the baseline entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from xbench.report.check.baseline import validate_baseline
from xbench.report.check.rows import Aggregate, RowKey, _merged, aggregate
from xbench.report.check.tolerances import (
    DEFAULT_KEY,
    allowed_deviation,
    check_tolerance,
    describe_tolerance,
    tolerance_for,
)
from xbench.report.records import Record

STATUSES = ("regressed", "missing", "improved", "changed", "new", "ok")
FAILING = frozenset({"regressed", "missing"})


@dataclass(frozen=True)
class Comparison:
    """One row of a check, in raw units; ``status`` is one of :data:`STATUSES`."""

    dataset: str
    method: str
    explainer: str | None
    metric: str
    exit: int | None
    status: str
    higher_is_better: bool | None
    display: dict[str, Any]
    baseline: float | None = None
    baseline_ci: float | None = None
    baseline_seeds: int = 0
    current: float | None = None
    current_ci: float | None = None
    current_seeds: int = 0
    current_failed: int = 0
    tolerance: float | None = None
    tolerance_kind: str = ""
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass(frozen=True)
class CheckResult:
    """Every row of a check and notes on how the run differs from the baseline's settings."""

    rows: tuple[Comparison, ...]
    notes: tuple[str, ...] = ()

    def by_status(self, status: str) -> list[Comparison]:
        return [row for row in self.rows if row.status == status]

    @property
    def failed(self) -> bool:
        """A row regressed or is missing."""
        return any(row.status in FAILING for row in self.rows)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _status(delta: float, tol: float, higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "changed" if abs(delta) > tol else "ok"
    worse = -delta if higher_is_better else delta
    if worse > tol:
        return "regressed"
    if worse < -tol:
        return "improved"
    return "ok"


def _seeds_note(entry: Mapping[str, Any], row: Aggregate) -> str:
    notes = []
    if row.n_failed:
        notes.append(f"{row.n_failed} failed record(s)")
    if row.n_seeds != entry["n_seeds"]:
        notes.append(f"seeds {entry['n_seeds']} → {row.n_seeds}")
    return "; ".join(notes)


def compare(
    records: Iterable[Record],
    baseline: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CheckResult:
    """Compare a run's records with a baseline (see the module docstring for the rules).

    Args:
        records: the run's records.
        baseline: a baseline dict (from :func:`load_baseline` or :func:`make_baseline`).
        overrides: tolerances that replace the baseline's for this check (``"*"``: the default).

    Raises:
        DataError: the baseline is malformed, or records of one row come from different settings.
    """
    records = list(records)
    base = validate_baseline(baseline, "baseline")
    for name, override in (overrides or {}).items():
        if name == DEFAULT_KEY:
            base["default_tolerance"] = check_tolerance(override, f"tolerance {name}")
        else:
            base["tolerances"][name] = check_tolerance(override, f"tolerance {name}")
    run = aggregate(records)
    rows = []
    for entry in base["entries"]:
        key: RowKey = (entry["dataset"], entry["method"], entry["explainer"], entry["metric"], entry["exit"])
        common: dict[str, Any] = {
            "dataset": key[0],
            "method": key[1],
            "explainer": key[2],
            "metric": key[3],
            "exit": key[4],
            "higher_is_better": entry["higher_is_better"],
            "display": entry["display"],
            "baseline": entry["mean"],
            "baseline_ci": entry["ci"],
            "baseline_seeds": entry["n_seeds"],
        }
        spec = tolerance_for(base, key[3], key[4])
        tol = allowed_deviation(spec, entry["mean"], entry["ci"])
        common.update(tolerance=tol, tolerance_kind=describe_tolerance(spec, entry["mean"], entry["ci"]))
        row = run.get(key)
        if row is None:
            rows.append(Comparison(status="missing", note="not in the run", **common))
            continue
        current: dict[str, Any] = {
            "current": row.mean,
            "current_ci": row.ci,
            "current_seeds": row.n_seeds,
            "current_failed": row.n_failed,
        }
        if row.mean is None:
            note = f"all {row.n_failed} record(s) failed"
            rows.append(Comparison(status="missing", note=note, **common, **current))
            continue
        if row.n_failed and row.n_seeds < entry["n_seeds"]:
            note = f"{row.n_failed} record(s) failed; seeds {entry['n_seeds']} → {row.n_seeds}"
            rows.append(Comparison(status="missing", note=note, **common, **current))
            continue
        # Slack for float round-off (a mean summed in another order), far below any display precision.
        slack = 1e-9 * max(1.0, abs(entry["mean"]))
        status = _status(row.mean - entry["mean"], tol + slack, entry["higher_is_better"])
        rows.append(Comparison(status=status, note=_seeds_note(entry, row), **common, **current))
    known = {(e["dataset"], e["method"], e["explainer"], e["metric"], e["exit"]) for e in base["entries"]}
    for extra, row in run.items():
        if extra in known:
            continue
        note = f"all {row.n_failed} record(s) failed" if row.mean is None else ""
        rows.append(
            Comparison(
                dataset=extra[0],
                method=extra[1],
                explainer=extra[2],
                metric=extra[3],
                exit=extra[4],
                status="new",
                higher_is_better=row.higher_is_better,
                display=row.display,
                current=row.mean,
                current_ci=row.ci,
                current_seeds=row.n_seeds,
                current_failed=row.n_failed,
                note=note,
            )
        )
    return CheckResult(tuple(rows), tuple(_notes(base, records)))


def _notes(base: Mapping[str, Any], records: list[Record]) -> list[str]:
    """Differences in settings and versions between the run and the baseline (they do not fail a check)."""
    notes = []
    setups = (base.get("settings") or {}).get("setups") or {}
    seen = set()
    for r in records:
        old = setups.get(r.dataset, {}).get(r.method)
        if old is None or r.setup is None or old == r.setup or (r.dataset, r.method) in seen:
            continue
        seen.add((r.dataset, r.method))
        notes.append(
            f"{r.method} on {r.dataset} ran with other settings than the baseline (setup {old} → {r.setup}); "
            "its numbers may not be comparable"
        )
    versions = base.get("versions") or {}
    run_versions = {
        k: _merged(r.versions.get(k) for r in records) for k in sorted({k for r in records for k in r.versions})
    }
    changed = [f"{k} {versions[k]} → {v}" for k, v in run_versions.items() if k in versions and versions[k] != v]
    if changed:
        notes.append("versions differ from the baseline's: " + ", ".join(changed))
    return notes
