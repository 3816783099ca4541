"""Every command-line flag of every command, given hostile values: one line, exit 2, nothing written.

The flags are read off the argument parser itself, so a new flag is fuzzed without a new test.
Values are the ones that broke commands before (a 300-character path, a file where a folder
goes, a path under a file, numbers out of range, unparsable addresses) and random text. Each
``run`` case carries at least one such value among valid ones, so it must stop before any cell
starts: no output folder, no cache, no exported models.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xbench.cli import build_parser, main

BUDGETS = {"default": 30, "slow": 300}
LONG = "a" * 300  # longer than a file name may be (ENAMETOOLONG)
TINY = {
    "name": "tiny",
    "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 64, "n_test": 32, "image_size": 16}}],
    "backbone": {"name": "resnet_cifar", "params": {"width": 4}},
    "methods": ["baseline"],
    "metrics": ["top1"],
    "explainers": [],
    "training": {"epochs": 1, "batch_size": 32},
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(command: str) -> list[argparse.Action]:
    """The options of ``command`` that take a value (not --help, -v, or on/off switches)."""
    return [
        a
        for a in _subparsers()[command]._actions
        if a.option_strings and a.nargs != 0 and not isinstance(a, argparse.BooleanOptionalAction)
    ]


def test_the_fuzzed_flags_are_the_parsers() -> None:
    """If this fails, a command lost or gained flags: the strategies below still read them from the parser."""
    names = {c: {a.option_strings[-1] for a in _flags(c)} for c in _subparsers()}
    assert {"--cache-dir", "--output", "--export-reference", "--jobs", "--address", "--set"} <= names["run"]
    assert {"--baseline", "--tolerance", "--output"} <= names["check"]
    assert all(names[c] for c in ("run", "report", "check", "baseline", "validate", "list"))


@contextlib.contextmanager
def _sandbox(root: Path):  # type: ignore[no-untyped-def]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(cwd)


def _hostile(root: Path) -> st.SearchStrategy[str]:
    a_file = root / "a_file"
    return st.sampled_from(
        [LONG, f"{LONG}/x", str(a_file), str(a_file / "below"), "/dev/null/x", "0", "-1", "nan", "1e999",
         "99999999999999999999", ":::", "x=", "=", "[", "{a: [[[[", "cuda:99", "\udcff\udcfe"]
    ) | st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse refusing a value
            code = int(stop.code or 0)
    return code, err.getvalue()


def _assert_one_line(code: int, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err[-2000:])
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, (argv, code, err[-2000:])
    assert "error:" in lines[0], lines[0]


def _budget(name: str) -> settings:
    return settings(
        max_examples=BUDGETS[name],
        derandomize=name == "default",  # the default run tries the same cases every time; -m slow new ones
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


budgets = pytest.mark.parametrize("budget", ["default", pytest.param("slow", marks=pytest.mark.slow)])

# The flags of `run` that name something a run must be able to use, with a hostile value each can get.
RUN_MUST_FAIL = ["--cache-dir", "--output", "--export-reference", "--data-dir", "--reference", "--jobs", "--device"]


@budgets
def test_run_refuses_a_hostile_flag_before_any_cell_starts(tmp_path: Path, budget: str) -> None:
    root = tmp_path
    (root / "a_file").write_text("not a folder\n")
    suite = root / "tiny.yaml"
    suite.write_text(yaml.safe_dump({**TINY, "output": str(root / "out"), "cache_dir": str(root / "cache")}))
    a_file = str(root / "a_file")
    bad_values = {
        "--cache-dir": [a_file, f"{a_file}/x", LONG, "/dev/null/x"],
        "--output": [a_file, f"{a_file}/x", LONG, "", "."],
        "--export-reference": [a_file, f"{a_file}/x", LONG],
        "--data-dir": [a_file, LONG],
        "--reference": [a_file, str(root / "no_such_folder"), LONG],
        "--jobs": ["0", "-1", "nan", "99999999999999999999", "two"],
        "--device": ["cuda:99", "tpu", LONG, ""],
    }
    other = st.sampled_from(["--view", "--executor", "--address", "--set"])

    @_budget(budget)
    @given(
        bad=st.lists(st.sampled_from(RUN_MUST_FAIL), min_size=1, max_size=3, unique=True).flatmap(
            lambda flags: st.tuples(*(st.tuples(st.just(f), st.sampled_from(bad_values[f])) for f in flags))
        ),
        extra=st.lists(st.tuples(other, _hostile(root)), max_size=2),
        switches=st.lists(st.sampled_from(["--fail-fast", "--no-progress", "--progress"]), max_size=2),
    )
    def case(bad: tuple[tuple[str, str], ...], extra: list[tuple[str, str]], switches: list[str]) -> None:
        pairs = [*bad, *extra]
        argv = ["run", str(suite), *switches, *(x for pair in pairs for x in pair)]
        with _sandbox(root):
            code, err = _run(argv)
        _assert_one_line(code, err, argv)
        written = {p.name for p in root.iterdir()} - {"a_file", "tiny.yaml", "no_such_folder"}
        assert not written, (argv, written)  # no output, no cache, no exported models

    case()


@budgets
@pytest.mark.parametrize("command", ["report", "check", "baseline", "validate", "list"])
def test_other_commands_refuse_hostile_arguments(tmp_path: Path, budget: str, command: str) -> None:
    root = tmp_path
    (root / "a_file").write_text("not a folder\n")
    flags = _flags(command)
    positionals = [a for a in _subparsers()[command]._actions if not a.option_strings and a.dest != "help"]
    required = [a for a in flags if a.required]

    @_budget(budget)
    @given(
        args=st.tuples(*(_hostile(root) for _ in positionals)),
        required_values=st.tuples(*(_hostile(root) for _ in required)),
        options=st.lists(st.tuples(st.sampled_from(flags), _hostile(root)), max_size=3),
    )
    def case(args: tuple[str, ...], required_values: tuple[str, ...], options: list[tuple[Any, str]]) -> None:
        argv = [command]
        for action, value in zip(positionals, args, strict=True):
            argv += [value] if action.nargs in (None, "+") else []
        argv += [x for a, v in zip(required, required_values, strict=True) for x in (a.option_strings[-1], v)]
        argv += [x for a, v in options for x in (a.option_strings[-1], v)]
        if command == "list" and argv[1:2] in (["methods"], ["metrics"], ["datasets"], ["backbones"]):
            return  # a valid listing (random text cannot hit these, but sampled values might)
        before = sorted(p.name for p in root.iterdir())
        with _sandbox(root):
            code, err = _run(argv)
        _assert_one_line(code, err, argv)
        assert sorted(p.name for p in root.iterdir()) == before, argv

    case()
