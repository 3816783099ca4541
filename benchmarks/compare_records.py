"""Compare two runs' records bit for bit, timings aside.

    python benchmarks/compare_records.py BEFORE_DIR AFTER_DIR

Each argument is a results folder (``records.jsonl`` and ``config.yaml`` inside). Records are
matched by (dataset, method, seed, metric, exit, explainer); every field must be equal except
what measures the machine rather than the model: ``time_s`` and ``git`` of every record, and the
value and params of timing metrics (``Metric.measures_time``: latency and its speedups, binary
sub-network latency). Exit code 0 if the runs agree, 1 with one line per difference otherwise.
This is how the engine renovation showed that it changed no record (see docs/design.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

#: Fields that differ between two runs of the same code on the same data.
MACHINE_FIELDS = ("time_s", "git")


def timing_metrics(results: Path) -> set[str]:
    """Display names of the timing metrics of the suite that produced ``results``."""
    from xbench.registry import METRICS

    suite = yaml.safe_load((results / "config.yaml").read_text())
    names = set()
    for row in suite.get("metrics", []):
        spec = {"name": row} if isinstance(row, str) else row
        if METRICS.get(spec["name"]).measures_time:
            names.add(spec.get("label") or spec["name"])
    return names


def keyed(results: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines() if line.strip()]
    out = {}
    for r in rows:
        key = (r["dataset"], r["method"], r["seed"], r["metric"], r.get("exit"), r.get("explainer"))
        if key in out:
            raise SystemExit(f"{results}: two records for {key}")
        out[key] = r
    return out


def compare(before: Path, after: Path) -> list[str]:
    """One line per difference between the two runs (empty: they agree)."""
    timed = timing_metrics(before) | timing_metrics(after)
    a, b = keyed(before), keyed(after)
    problems = [f"only in {before}: {k}" for k in sorted(a.keys() - b.keys(), key=str)]
    problems += [f"only in {after}: {k}" for k in sorted(b.keys() - a.keys(), key=str)]
    for key in sorted(a.keys() & b.keys(), key=str):
        ignore = set(MACHINE_FIELDS) | ({"value", "params"} if key[3] in timed else set())
        for field in sorted((a[key].keys() | b[key].keys()) - ignore):
            if a[key].get(field) != b[key].get(field):
                problems.append(f"{key}: {field}: {a[key].get(field)!r} != {b[key].get(field)!r}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = (Path(p) for p in argv)
    problems = compare(before, after)
    for line in problems:
        print(line)
    n = len(keyed(before))
    print(f"{n} records compared: " + ("identical (timings aside)" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
