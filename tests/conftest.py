"""Shared fixtures: every test gets its own cache and never touches ~/.cache."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path_factory.mktemp("xbench-cache")))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests use tiny models: intra-op threads gain nothing and thrash on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


SMOKE_RUN = ["suites/smoke.yaml", "--no-progress", "--set", "resources.cpus=1"]  # one thread: bitwise comparable


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``(output, cache, stdout)`` of one serial run of suites/smoke.yaml (trains 8 cells: a few minutes).

    Shared by the end-to-end tests and by the tests that compare other executors with it.
    """
    tmp = tmp_path_factory.mktemp("smoke")
    out, cache = tmp / "out", tmp / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "xbench", "run", *SMOKE_RUN, "--output", str(out), "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    return out, cache, proc.stdout


def comparable(records: list[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every record's value, n and status by (cell, metric, exit, explainer), timing metrics left out.

    Timings (``Metric.measures_time``) depend on the machine's load; everything else must be bitwise equal
    between two runs with the same seed, device and thread count.
    """
    from xbench.registry import METRICS

    timing = {name for name in METRICS.names() if METRICS.get(name).measures_time}
    return {
        (r.cell, r.metric, r.exit, r.explainer): (r.value, r.n, r.status) for r in records if r.metric not in timing
    }
