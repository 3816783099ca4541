"""suites/smoke.yaml on a real Ray cluster (a head node and a worker node) gives the local run's records.

Ray binds to the machine's network address even when told to use 127.0.0.1, so the whole cluster
(head, worker, driver) runs inside a network namespace this test creates with only loopback up:
nothing it does can reach another address. Without root (or without ``ip``/Ray) the test skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMOKE_RUN, comparable
from xbench.report.records import read_records

PORT = "6390"


def _why_not() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'xbench[ray]')"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed: cannot create a network namespace"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    return None


def _in_ns(ns: str, *cmd: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


@pytest.fixture
def loopback_only_namespace() -> Iterator[tuple[str, dict[str, str], Path]]:
    """``(namespace, environment, ray temp dir)``; the namespace is removed afterwards."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    ns = f"xbench-ray-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    # Ray's socket paths must stay under 107 bytes: a short temp dir.
    temp = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        yield ns, env, temp
    finally:
        _in_ns(ns, sys.executable, "-m", "ray.scripts.scripts", "stop", "--force", env=env)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_smoke_suite_on_a_ray_cluster_matches_the_local_run(
    loopback_only_namespace: tuple[str, dict[str, str], Path], smoke_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    ns, env, temp = loopback_only_namespace
    links = _in_ns(ns, "ip", "-o", "link", env=env).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]  # loopback is the only interface

    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
    head = _in_ns(ns, *ray, "--head", f"--port={PORT}", "--include-dashboard=false", "--disable-usage-stats",
                  f"--temp-dir={temp}", env=env)  # fmt: skip
    assert head.returncode == 0, head.stderr[-2000:]
    worker = _in_ns(ns, *ray, f"--address=127.0.0.1:{PORT}", env=env)
    assert worker.returncode == 0, worker.stderr[-2000:]

    out, cache = tmp_path / "out", tmp_path / "cache"
    run = _in_ns(
        ns, sys.executable, "-m", "xbench", "run", *SMOKE_RUN, "--executor", "ray", "--address", f"127.0.0.1:{PORT}",
        "--output", str(out), "--cache-dir", str(cache), env=env, timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[8/8]" in run.stdout and "cached" not in run.stdout
    assert "[timings 8/8]" in run.stdout  # latencies measured by the driver once the cluster is done

    local = read_records(smoke_run[0] / "records.jsonl")
    remote = read_records(out / "records.jsonl")
    assert comparable(remote) == comparable(local)
    assert [r.cell for r in remote] == [r.cell for r in local]
    summary = json.loads((out / "run.json").read_text())
    assert summary["executor"] == "ray" and summary["failed_cells"] == []
    nodes = {
        c["worker"].split("ray-node:")[1] for c in json.loads((out / "timings.json").read_text())["cells"].values()
    }
    assert len(nodes) == 2, nodes  # the head and the worker node both ran cells
    # TAME waited for its baseline: both ran, and TAME's model builds on the baseline's (same records as local).
    assert {r.method for r in remote} >= {"baseline", "tame"}
