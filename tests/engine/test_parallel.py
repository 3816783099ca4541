"""Executors, the output lock, resuming a killed run, and determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import ROOT, SMOKE_RUN, comparable
from xbench.cli import main
from xbench.engine.output import output_lock
from xbench.report.records import read_records

# Synthetic shapes: two cells, each trains for a few seconds.
TINY = {
    "name": "tiny",
    "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 600, "n_test": 100, "image_size": 16}}],
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 8}},
    "methods": ["baseline", "egt"],
    "metrics": ["top1", "params", "latency"],
    "seeds": [0],
    "training": {"epochs": 8, "batch_size": 32, "lr": 0.05},
    "evaluation": {"batch_size": 100},
    "resources": {"cpus": 1},
}


def _suite(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


@pytest.mark.slow
def test_jobs_reproduce_the_serial_smoke_run(smoke_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Determinism: --jobs 2 from an empty cache gives the serial run's records, timings aside."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "xbench", "run", *SMOKE_RUN, "--jobs", "2", "--output", str(out),
         "--cache-dir", str(cache)],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "trained" in proc.stdout and "cached" not in proc.stdout  # really trained again
    # Timings are measured by the driver alone, after the workers are done: one line per cell.
    assert "[timings 8/8] synthetic_shapes/tame/seed0: Latency" in proc.stdout
    latency = [r for r in read_records(out / "records.jsonl") if r.metric == "latency" and r.exit is None]
    assert len(latency) == 8 and all(r.status == "ok" and r.value > 0 for r in latency)
    assert {r.params["threads"] for r in latency} == {1}  # resources.cpus, as in the serial run
    serial = comparable(read_records(smoke_run[0] / "records.jsonl"))
    parallel = comparable(read_records(out / "records.jsonl"))
    assert parallel == serial
    assert len(serial) > 500
    # Cells finish in any order but the records keep the suite's order.
    assert [r.cell for r in read_records(out / "records.jsonl")] == [
        r.cell for r in read_records(smoke_run[0] / "records.jsonl")
    ]
    workers = {c["worker"] for c in json.loads((out / "timings.json").read_text())["cells"].values()}
    assert len(workers) == 2, workers  # two worker processes shared the cells


def test_the_timing_phase_of_a_parallel_run_uses_the_workers_threads(tmp_path: Path) -> None:
    # Two workers of one thread each; the driver times alone afterwards, with one thread too (not every core).
    path = _suite(tmp_path, training={**TINY["training"], "epochs": 1})
    out = tmp_path / "out"
    torch.set_num_threads(2)
    try:
        assert main(["run", str(path), "--jobs", "2", "--output", str(out), "--no-progress"]) == 0
        assert torch.get_num_threads() == 2  # the run restores the process's own setting
    finally:
        torch.set_num_threads(1)
    latency = [r for r in read_records(out / "records.jsonl") if r.metric == "latency"]
    assert latency and {r.params["threads"] for r in latency} == {1}


def test_different_seeds_give_different_numbers_and_a_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suite(tmp_path, methods=["baseline"], seeds=[0, 1], training={**TINY["training"], "epochs": 1})
    out = tmp_path / "out"
    assert main(["run", str(path), "--output", str(out), "--no-progress"]) == 0
    top1 = {r.seed: r.value for r in read_records(out / "records.jsonl") if r.metric == "top1"}
    assert set(top1) == {0, 1} and top1[0] != top1[1]
    md = (out / "leaderboard.md").read_text()
    assert "Mean ± 95% CI over 2 seeds" in md or "over 2 seeds" in md
    assert "±" in md.split("### Accuracy")[1].split("###")[0]


def test_second_run_on_the_same_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with output_lock(out):  # another run holds the folder
        code = main(["run", str(_suite(tmp_path)), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "another xbench run" in err and f"pid {os.getpid()}" in err and str(out) in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no staging folder, and the holder removed its lock file


def test_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from xbench.engine.output import "
         "output_lock\nwith output_lock(Path(sys.argv[1])):\n print('locked', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match="another xbench run"), output_lock(out):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with output_lock(out):  # the kernel dropped the dead process's lock
        assert (tmp_path / ".out.lock").exists()
    assert not (tmp_path / ".out.lock").exists()


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_resumes(tmp_path: Path) -> None:
    """Kill -9 while the second cell trains; the same command again finishes from the cache.

    The first cell's model and metric values are reused, the second cell's training resumes
    from its last epoch checkpoint, and the leaderboard is the one an uninterrupted run writes.
    """
    suite = _suite(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "xbench", "run", str(suite), "--output", str(out), "--cache-dir", str(cache),
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("[1/2] synthetic_shapes/baseline/seed0"), first
    deadline = time.monotonic() + 300
    while not list((cache / "train-state").rglob("*.pt.json")):  # egt has finished an epoch
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before an epoch checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not out.exists()  # nothing published by the killed run
    assert len(list((cache / "models").rglob("*.pt"))) == 1  # the first cell's model only

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert "(cached;" in lines[0], lines[0]
    assert "(trained" in lines[1] and "resumed after epoch" in lines[1], lines[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # the dead run's staging is gone
    assert not list((cache / "train-state").rglob("*.pt"))  # epoch checkpoints go once the model is saved

    fresh = tmp_path / "fresh"
    assert main(["run", str(suite), "--output", str(fresh), "--cache-dir", str(tmp_path / "c2"), "--no-progress"]) == 0
    assert comparable(read_records(out / "records.jsonl")) == comparable(read_records(fresh / "records.jsonl"))
    assert _leaderboard_without_timings(out) == _leaderboard_without_timings(fresh)


def _leaderboard_without_timings(out: Path) -> list[str]:
    """The long-format leaderboard's rows, timing metrics left out."""
    rows = (out / "leaderboard_long.csv").read_text().splitlines()
    kept = [row for row in rows if "latency" not in row.lower()]
    assert len(kept) > 3
    return kept


def test_ray_executor_without_ray_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = tmp_path / "out"
    assert main(["run", str(_suite(tmp_path)), "--executor", "ray", "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'xbench[ray]'" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "must be at least 1"),
        (["--address", "auto"], "only applies to --executor ray"),
        (["--executor", "ray", "--jobs", "2"], "only applies to --executor local"),
    ],
)
def test_executor_flag_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "out"
    try:
        code = main(["run", str(_suite(tmp_path)), "--output", str(out), *argv])
    except SystemExit as exc:  # argparse rejects --jobs 0 itself
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


class LosesCell:
    """An executor whose worker for cell ``lost`` dies; the others run in process."""

    name = "local"

    def __init__(self, runner: Any, lost: int) -> None:
        self.runner, self.lost = runner, lost

    def submit(self, index: int) -> Any:
        return RuntimeError("worker process died") if index == self.lost else self.runner.worker.outcome(index)

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        return [(handles[0], handles[0])]

    def close(self, cancel: bool = False) -> None:
        pass


def test_a_lost_worker_fails_its_cell_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.engine.driver import Driver, RunOptions
    from xbench.suite import load_suite

    suite = load_suite(_suite(tmp_path, training={**TINY["training"], "epochs": 1})).model_copy(
        update={"output": tmp_path / "out"}
    )
    lines: list[str] = []
    runner = Driver(suite, RunOptions(progress=False, echo=lines.append))
    monkeypatch.setattr(runner, "_executor", lambda: LosesCell(runner, lost=0))
    result = runner.run()
    assert result.failed_cells == ["synthetic_shapes/baseline/seed0"]
    lost = [r for r in result.records if r.method == "baseline"]
    assert lost and all(r.status == "failed" and "worker lost" in (r.error or "") for r in lost)
    assert all(r.status == "ok" for r in result.records if r.method == "egt")
    assert "FAILED: worker lost" in lines[0] and "[2/2]" in lines[1]
    assert "failed" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_out_of_memory_in_one_cell_fails_that_cell_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OOM (torch.OutOfMemoryError, as CUDA raises it) while training egt: recorded, the baseline still runs."""
    from xbench.engine import cell as cell_module

    real_train = cell_module.train

    def train(method: Any, *args: Any, **kwargs: Any) -> Any:
        if method.name == "egt":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(method, *args, **kwargs)

    monkeypatch.setattr(cell_module, "train", train)
    out = tmp_path / "out"
    suite = _suite(tmp_path, training={**TINY["training"], "epochs": 1})
    assert main(["run", str(suite), "--output", str(out), "--no-progress"]) == 1
    records = read_records(out / "records.jsonl")
    egt = [r for r in records if r.method == "egt"]
    assert egt and all(r.status == "failed" and "OutOfMemoryError" in (r.error or "") for r in egt)
    assert "Traceback" in (egt[0].error or "")  # the traceback travels with the record
    assert all(r.status == "ok" for r in records if r.method == "baseline")
    assert json.loads((out / "run.json").read_text())["failed_cells"] == ["synthetic_shapes/egt/seed0"]


def test_cells_start_longest_critical_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.engine.driver import Driver, RunOptions
    from xbench.suite import load_suite

    runner = Driver(load_suite(_suite(tmp_path, methods=["baseline", "egt", "tame"])), RunOptions(progress=False)).costs
    cells = runner.worker.plan.cells()
    needs = {0: None, 1: None, 2: 0}  # tame builds on the baseline
    costs = {"baseline": 1.0, "egt": 5.0, "tame": 4.5}
    monkeypatch.setattr(runner, "cell_cost", lambda cell: costs[cell.method.name])
    assert runner.start_order(cells, needs) == [0, 1, 2]  # baseline + tame (5.5) before egt (5)
    costs["egt"] = 6.0
    assert runner.start_order(cells, needs) == [1, 0, 2]

    def broken(cell: Any) -> float:
        raise RuntimeError("cannot build")

    monkeypatch.setattr(runner, "cell_cost", broken)
    assert runner.start_order(cells, needs) == [0, 1, 2]  # an estimate only: suite order


def test_cell_cost_counts_the_images_a_cell_pushes_through_its_model(tmp_path: Path) -> None:
    from xbench.engine.driver import Driver, RunOptions
    from xbench.engine.schedule import EXPLAIN_FORWARDS
    from xbench.suite import load_suite

    coded = {"name": "coded_resnext", "params": {"blocks": 1}}
    suite = load_suite(_suite(tmp_path, methods=["baseline", coded])).model_copy(update={"cache_dir": tmp_path})
    runner = Driver(suite, RunOptions(progress=False)).costs
    baseline, coded_cell = runner.worker.plan.resolved
    # 100 test images, and 600 training images × 8 epochs × (forward + backward ≈ 3 forwards)
    assert runner.images_through(baseline) == runner.images_through(coded_cell) == 100 + 3 * 600 * 8
    assert runner.seconds_per_image(baseline) > 0 and runner.seconds_per_image(coded_cell) > 0
    services = runner.worker.services
    services.cache.save_model(baseline.model_key, {}, {})
    assert runner.images_through(baseline) == 100  # a cached model is not trained again
    # explanation metrics: EXPLAIN_FORWARDS per explained image and explainer (native, gradcam)
    suite = load_suite(
        _suite(tmp_path, metrics=["top1", "pointing_game"], explainers=["native", "gradcam"],
               evaluation={"batch_size": 100, "explain_limit": 40})
    ).model_copy(update={"cache_dir": tmp_path / "empty"})  # fmt: skip
    runner = Driver(suite, RunOptions(progress=False)).costs
    assert runner.images_through(runner.worker.plan.resolved[0]) == 100 + 3 * 600 * 8 + EXPLAIN_FORWARDS * 40 * 2


class InAnotherRunner(LosesCell):
    """A parallel executor whose cells run in a runner of their own, as in a worker process."""

    def __init__(self, worker: Any) -> None:
        super().__init__(worker, lost=-1)
        self.outcomes: list[Any] = []

    def submit(self, index: int) -> Any:
        outcome = super().submit(index)
        self.outcomes.append(outcome)
        return outcome


def test_the_driver_times_with_the_exit_policy_the_worker_calibrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xbench.engine.driver import Driver, RunOptions
    from xbench.metrics.context import EvalContext
    from xbench.suite import load_suite

    calibrated: list[str] = []
    real = EvalContext._exit_policy

    def counting(self: EvalContext) -> Any:
        calibrated.append(self.desc)
        return real(self)

    monkeypatch.setattr(EvalContext, "_exit_policy", counting)
    metrics = ["top1", "policy_top1", "latency", "policy_latency"]
    suite = load_suite(_suite(tmp_path, metrics=metrics, training={**TINY["training"], "epochs": 1}))
    suite = suite.model_copy(update={"output": tmp_path / "out", "cache_dir": tmp_path / "cache"})
    worker = Driver(suite, RunOptions(progress=False, echo=lambda _: None))
    driver = Driver(suite, RunOptions(progress=False, echo=lambda _: None))
    executor = InAnotherRunner(worker)
    monkeypatch.setattr(driver, "_executor", lambda: executor)
    result = driver.run()
    assert not result.failed_cells
    # Calibrated once per cell, by the worker (policy_top1); the driver's timing run reused it.
    assert calibrated == ["synthetic_shapes/baseline/seed0", "synthetic_shapes/egt/seed0"]
    (policy,) = [o.policy for o in executor.outcomes if o.records[0].cell == "synthetic_shapes/egt/seed0"]
    assert policy is not None and policy.source == "train"  # the tiny suite holds nothing out
    (timed,) = [r for r in result.records if r.metric == "policy_latency" and r.method == "egt" and r.exit is None]
    assert timed.status == "ok" and timed.params["thresholds"] == policy.thresholds


class Counting:
    """A parallel executor (not serial) that runs each submitted cell in process and remembers it."""

    name = "local"

    def __init__(self, runner: Any) -> None:
        self.runner, self.submitted = runner, []

    def submit(self, index: int) -> Any:
        self.submitted.append(index)
        return self.runner.worker.outcome(index)

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        return [(handles[0], handles[0])]

    def close(self, cancel: bool = False) -> None:
        pass


def test_cells_the_cache_holds_whole_start_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.engine.driver import Driver, RunOptions
    from xbench.suite import load_suite

    suite = load_suite(_suite(tmp_path, training={**TINY["training"], "epochs": 1}))

    def run(name: str) -> tuple[Any, Counting, list[str]]:
        lines: list[str] = []
        runner = Driver(
            suite.model_copy(update={"output": tmp_path / name}), RunOptions(progress=False, echo=lines.append)
        )
        executor = Counting(runner)
        monkeypatch.setattr(runner, "_executor", lambda: executor)
        return runner.run(), executor, lines

    first, executor, _ = run("first")
    assert executor.submitted == [0, 1]  # an empty cache: both cells go to workers
    second, executor, lines = run("second")
    assert executor.submitted == []  # read from the cache in the driver
    assert comparable(second.records) == comparable(first.records)
    assert "cached" in lines[0] and "[2/2]" in lines[1]
    assert (tmp_path / "second" / "leaderboard.md").read_text() == (tmp_path / "first" / "leaderboard.md").read_text()
    # One metric value of egt's cell gone from the cache: that cell, and only that one, runs in a worker.
    cache = Path(os.environ["XBENCH_CACHE"]) / "metrics"
    meta = {p: json.loads(p.read_text()) for p in cache.rglob("*.json.json")}
    (sidecar,) = [
        p for p, m in meta.items() if (m.get("cell"), m.get("metric")) == ("synthetic_shapes/egt/seed0", "params")
    ]
    sidecar.with_name(sidecar.name.removesuffix(".json")).unlink()
    third, executor, _ = run("third")
    assert executor.submitted == [1]
    assert comparable(third.records) == comparable(first.records)
