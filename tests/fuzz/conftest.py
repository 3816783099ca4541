"""Fixtures of the fuzz tests: ``cli`` runs the CLI in-process in a sandbox and checks its error line."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fuzz.suite_cli import suite_check  # noqa: F401 (a fixture of tests/fuzz/test_suite_fuzz.py)
from xbench.cli import main


@dataclass
class Cli:
    """``python -m xbench`` in this process, with its own $HOME, cache and working directory."""

    home: Path
    cwd: Path

    @staticmethod
    def run(args: list[str]) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``python -m xbench ARGS``."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        return code, out.getvalue(), err.getvalue()

    @staticmethod
    def snapshot(root: Path) -> dict[str, str]:
        """Every file under ``root`` with the sha256 of its bytes (folders as ``dir``)."""
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))
        }

    @staticmethod
    def error_line(code: int, stdout: str, stderr: str, target: str) -> str:
        """The one error line of a refused command, checked: exit 2, no traceback, naming ``target``."""
        assert "Traceback" not in stderr, stderr[:2000]
        lines = stderr.splitlines()
        assert code == 2 and len(lines) == 1, (code, stderr[:2000])
        line = lines[0]
        assert line.startswith("xbench: error: ") and target in line, line
        assert stdout == "", stdout[:500]
        return line


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.chdir(cwd)
    return Cli(home, cwd)
