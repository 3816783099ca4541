"""``benchmarks/compare_records.py``, the script that shows a refactor changed no record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("compare_records", ROOT / "benchmarks" / "compare_records.py")
assert spec is not None and spec.loader is not None
compare_records = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_records)


def results(folder: Path, rows: list[dict[str, Any]]) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text("metrics: [top1, {name: latency, label: lat}]\n")
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def row(metric: str, value: float, **extra: Any) -> dict[str, Any]:
    base = {"dataset": "d", "method": "m", "seed": 0, "metric": metric, "exit": None, "explainer": None}
    return {**base, "value": value, "time_s": 1.0, "git": "a", "params": {}, **extra}


def test_timings_aside_the_runs_agree(tmp_path: Path) -> None:
    a = results(tmp_path / "a", [row("top1", 0.5), row("lat", 2.0, params={"p95": 3})])
    b = results(tmp_path / "b", [row("top1", 0.5, time_s=9.0, git="b"), row("lat", 7.0, params={"p95": 8})])
    assert compare_records.compare(a, b) == []
    assert compare_records.main([str(a), str(b)]) == 0


def test_a_changed_value_or_setting_is_reported(tmp_path: Path) -> None:
    a = results(tmp_path / "a", [row("top1", 0.5), row("lat", 2.0)])
    b = results(tmp_path / "b", [row("top1", 0.5000001, setup="x")])
    problems = compare_records.compare(a, b)
    assert any("value" in p and "0.5000001" in p for p in problems)
    assert any("setup" in p for p in problems)
    assert any(p.startswith(f"only in {a}") and "'lat'" in p for p in problems)
    assert compare_records.main([str(a), str(b)]) == 1
