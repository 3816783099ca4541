"""Goal 5: wall time of the main job from an empty cache, broken down by stage.

``python -m pytest benchmarks/test_main_job.py -s`` runs ``python -m xbench run suites/quick.yaml``
once (tens of minutes on 2 CPU cores) with a fresh cache and reads the run's ``timings.json``:
data loading, training, explanation maps, each metric and the report, summed over cells. The
benchmark's ``extra_info`` holds the breakdown; the goal is the whole run within 10 minutes on 2
CPU cores. ``XBENCH_MAIN_JOB`` picks another suite (e.g. suites/smoke.yaml for a quick look).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 600.0


def breakdown(timings: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage: data, train, explain, metric:<name> for each metric, report, total."""
    stages: dict[str, float] = defaultdict(float)
    stages["data"] = sum(timings["data"].values())
    for cell in timings["cells"].values():
        stages["train"] += cell["train"]
        stages["explain"] += sum(cell["explain"].values())
        for name, sec in cell["metrics"].items():
            stages[f"metric:{name}"] += sec
    stages["report"] = timings["report"]
    stages["total"] = timings["total"]
    return dict(stages)


def test_main_job_wall_time_by_stage(benchmark: Any) -> None:
    suite = os.environ.get("XBENCH_MAIN_JOB", "suites/quick.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"

        def run() -> None:
            cmd = [sys.executable, "-m", "xbench", "run", suite, "--output", str(out),
                   "--cache-dir", str(Path(tmp) / "cache"), "--no-progress"]  # fmt: skip
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-3000:]

        benchmark.pedantic(run, rounds=1, iterations=1)
        stages = breakdown(json.loads((out / "timings.json").read_text()))
    benchmark.extra_info.update({"suite": suite, "goal_s": GOAL_S, **{k: round(v, 1) for k, v in stages.items()}})
    print(f"\n{suite}: {stages['total']:.0f} s (goal {GOAL_S:.0f} s)")
    for name, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        if name != "total" and sec >= 1:
            print(f"  {name:40s} {sec:8.1f} s  {100 * sec / stages['total']:5.1f}%")
    assert stages["train"] > 0, "the run trained nothing: the cache was not empty"
    if suite == "suites/quick.yaml" and stages["total"] > GOAL_S:
        pytest.fail(f"the main job took {stages['total']:.0f} s, over the {GOAL_S:.0f} s goal (breakdown above)")
