"""The suite fuzz tests' harness: the CLI contract checked per case, in a sandbox (fixture ``suite_check``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from xbench.cli import main
from xbench.registry import DATASETS

# Examples per fuzz test: a bounded number in the default run, many more under ``-m slow``.
BUDGETS = {"default": 100, "slow": 800}
SECONDS_PER_CASE = 30.0  # a hang guard, not a timing: cases take milliseconds; a busy CI machine must not fail them


def fuzz_settings(budget: str) -> settings:
    return settings(
        max_examples=BUDGETS[budget],
        deadline=None,
        database=None,
        derandomize=budget == "default",  # the default run tries the same cases every time; -m slow new ones
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


budgets = pytest.mark.parametrize("budget", ["default", pytest.param("slow", marks=pytest.mark.slow)])


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_cli(args: list[str]) -> tuple[int, str, str, float]:
    """``python -m xbench ARGS`` in this process: exit code, stdout, stderr and seconds taken."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


@dataclass
class Case:
    """One suite to try: files (the first is the suite), ``--set`` flags, and what must happen.

    ``must_fail``: the input is invalid, so exit 2 with every fragment of ``expected`` in the line;
    otherwise exit 0 or exit 2 (a check across fields) are both fine. Either way: no traceback,
    one line naming the file, nothing written.
    """

    kind: str
    files: dict[str, bytes]
    overrides: list[str] = field(default_factory=list)
    must_fail: bool = False
    expected: list[str] = field(default_factory=list)


@dataclass
class Checker:
    """Runs cases through ``validate`` (and ``run`` when refused) in a sandbox and checks the contract."""

    root: Path
    home: Path
    cwd: Path
    env_cache: Path
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, case: Case, also_run: bool = True) -> str | None:
        workdir = Path(tempfile.mkdtemp(dir=self.root)).resolve()
        try:
            return self._check(case, workdir, also_run)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _check(self, case: Case, workdir: Path, also_run: bool) -> str | None:
        for rel, content in case.files.items():
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (workdir / rel).write_bytes(content)
        suite = workdir / next(iter(case.files))
        sets = [f"--set={flag}" for flag in case.overrides]  # "--set=-x" is a value, "--set -x" a flag
        code, stdout, stderr, seconds = run_cli(["validate", str(suite), *sets])
        outcome = "refused" if code == 2 else "valid"
        key = f"{case.kind}:{outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1
        assert "Traceback" not in stderr, stderr
        assert seconds < SECONDS_PER_CASE, f"validate took {seconds:.1f}s"
        if case.must_fail or code != 0:
            line = self._one_line(code, stdout, stderr, suite, case)
        else:
            assert stderr == "", stderr
            return None
        if also_run:  # the same line from `run`, before any data is loaded or anything written
            before = snapshot(workdir)
            out, cache = workdir / "results" / "run", workdir / "cache"
            args = ["run", str(suite), *sets, "--output", str(out), "--cache-dir", str(cache), "--no-progress"]
            code2, stdout2, stderr2, _ = run_cli(args)
            assert (code2, stderr2.strip()) == (code, line), stderr2
            assert stdout2 == "" and snapshot(workdir) == before, snapshot(workdir) - before
        self.untouched()
        return line

    @staticmethod
    def _one_line(code: int, stdout: str, stderr: str, suite: Path, case: Case) -> str:
        lines = stderr.splitlines()
        assert code == 2, f"exit {code} for a case that must fail ({case.kind}); stderr {stderr[:300]!r}"
        assert len(lines) == 1, f"expected one stderr line, got {stderr[:2000]!r}"
        line = lines[0]
        assert line.startswith("xbench: error: ") and str(suite) in line, line
        assert len(line) < 2000, f"a {len(line)}-character line"
        assert stdout == "", stdout[:300]
        for part in case.expected:
            assert part in line, f"{part!r} not in {line!r}"
        return line

    def untouched(self) -> None:
        assert not any(self.home.iterdir()), f"wrote into $HOME: {snapshot(self.home)}"
        assert not any(self.cwd.iterdir()), f"wrote into the working directory: {snapshot(self.cwd)}"
        assert not self.env_cache.exists(), "created $XBENCH_CACHE"


@pytest.fixture
def suite_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Checker]:
    """A :class:`Checker` in a sandbox: its own $HOME, cache and working directory; loading data fails."""
    home, cwd, cases = tmp_path / "home", tmp_path / "cwd", tmp_path / "cases"
    for folder in (home, cwd, cases):
        folder.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env-data"))
    monkeypatch.chdir(cwd)

    def refuse(self: Any, split: str) -> Any:
        raise AssertionError(f"a refused suite reached data loading ({type(self).__name__}, {split})")

    for name in DATASETS.names():
        monkeypatch.setattr(DATASETS.get(name), "load", refuse)
    checker = Checker(cases, home, cwd, tmp_path / "env-cache")
    yield checker
    if os.environ.get("XBENCH_FUZZ_REPORT"):  # the numbers for README's Reliability section
        print(f"\n{sorted(checker.counts.items())}")
