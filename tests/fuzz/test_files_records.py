"""Fuzzed input files of ``xbench report`` and ``xbench check``: records, baselines, saliency samples (issue 26).

A valid results folder (records of two methods over three seeds, a failed seed, an early exit, an
explainer; a saliency file) and a baseline made from it are mutated by hypothesis: truncated at a
random offset, bytes flipped, keys set to JSON values of the wrong type, NaN and infinities,
deleted and extra keys, huge lines, deep nesting, numbers of thousands of digits, escapes that are
half a surrogate pair, bytes that are not UTF-8, records of one row from different settings. Each
mutated folder goes through the CLI in-process (``report``, ``report -o``, ``check``, ``check
--output``, ``baseline`` refreshing the file). The outcome is either

* **refused**: exit 2, one line ``xbench: error: FILE...`` naming the mutated file (and, for a
  key-level mutation reported at a line, the key), no traceback, and no file written or changed; or
* **accepted**: the mutation left valid input, and the command did its job (exit 0; ``check``:
  0 or 1, a regression or a missing row, with its summary on stdout).

No example may raise. Mutations that can only be invalid (NaN, deep nesting, ...) must be refused,
and benign ones (CRLF line ends, blank lines, U+2028 inside a string, ...) must be accepted.
The default run tries a bounded number of examples per surface; ``-m slow`` many more, with larger
huge lines and deeper nesting. A few cases also run as a subprocess, to see stderr as a user does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import make_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xbench.report.check import dump_baseline, make_baseline
from xbench.report.plots.saliency_files import write_saliency
from xbench.report.records import DISPLAY_DEFAULTS, Record

ROOT = Path(__file__).resolve().parents[2]
# Accepted labels with U+0085 and friends are drawn by matplotlib, which warns that the font lacks them.
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font:UserWarning")
RUN: dict[str, Any] = {"git": "0123abc", "config": {"training": {"epochs": 2}}, "setup": "abc123"}


def base_records() -> list[Record]:
    out = []
    for seed in range(3):
        out.append(make_record("egt", seed, "top1", 0.80 + 0.02 * seed, **RUN))
        out.append(make_record("egt", seed, "top1", 0.50 + 0.01 * seed, exit=0, **RUN))
        out.append(make_record("egt", seed, "time", 1.0 + seed, **RUN))
        out.append(make_record("baseline", seed, "top1", 0.70 + 0.01 * seed, **RUN))
        out.append(make_record("baseline", seed, "pointing_game", 0.6 + 0.05 * seed, explainer="gradcam", **RUN))
    out.append(make_record("baseline", 3, "top1", None, **RUN))  # a failed seed
    return out


RECORDS = base_records()
LINES: list[dict[str, Any]] = [r.model_dump() for r in RECORDS]
BASELINE: dict[str, Any] = make_baseline(RECORDS, created="2025-01-01T00:00:00+00:00")
REQUIRED = {name for name, f in Record.model_fields.items() if f.is_required()}
STRING_KEYS = ["suite", "dataset", "method", "metric", "category", "device", "method_name", "cell", "git"]
NUMBER_PATHS: list[tuple[str, ...]] = [
    ("value",), ("seed",), ("n",), ("time_s",), ("exit",), ("display", "scale"), ("display", "decimals"),
    ("params", "k"), ("config", "training", "epochs"),
]  # fmt: skip
KEY_PATHS: list[tuple[str, ...]] = [
    *((k,) for k in Record.model_fields), *(("display", k) for k in DISPLAY_DEFAULTS), *NUMBER_PATHS[-2:],
    ("versions", "xbench"),
]  # fmt: skip

JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)
IDENTIFIERS = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True)
NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]
NOT_UTF8 = [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


@dataclass
class Case:
    """A mutated file: its bytes, what was done, and what the outcome must be.

    ``line`` (1-based) and ``key`` are set for a key-level mutation of one line or entry: a
    refusal reported at that line must name the key. ``must`` is "refuse", "accept" or "either".
    """

    kind: str
    data: bytes
    line: int | None = None
    key: str | None = None
    must: str = "either"

    def __repr__(self) -> str:  # a failing example prints this: the start of the bytes, not megabytes of them
        start = self.data[:300] + (b"..." if len(self.data) > 300 else b"")
        return (
            f"Case({self.kind!r}, {len(self.data)} bytes: {start!r}, line={self.line}, key={self.key!r}, {self.must})"
        )


@dataclass(frozen=True)
class Sizes:
    """How large the hostile inputs get: the default run's and the slow run's."""

    huge: int
    depth: int
    digits: int


DEFAULT_SIZES = Sizes(huge=1 << 20, depth=20_000, digits=20_000)
SLOW_SIZES = Sizes(huge=16 << 20, depth=1_000_000, digits=200_000)


def dumps(obj: Any) -> bytes:
    """JSON as a user or a broken writer might leave it: NaN allowed, non-ASCII raw."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=True).encode("utf-8")


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else dumps(line)) + b"\n" for line in lines)


def put(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of ``obj`` with ``value`` at ``path`` (``DELETE``: the key removed); missing dicts created."""
    obj = json.loads(json.dumps(obj))
    node = obj
    for part in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(part), dict | list):
            node[part] = {}
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


DELETE = object()
RAW = "\x00raw\x00"  # a placeholder string replaced by raw bytes after dumping


def with_raw(obj: Any, path: tuple[Any, ...], raw: bytes) -> bytes:
    """``obj`` dumped with the bytes ``raw`` (not valid JSON by itself, maybe) as the value at ``path``."""
    return dumps(put(obj, path, RAW)).replace(dumps(RAW), raw)


# -- byte-level mutations, for any file ---------------------------------------------------------------
BINARY_KINDS = ["truncate", "flip"]
#: Bytes that no valid text file holds: not UTF-8, a huge run of garbage, deep nesting, a long number.
TEXT_KINDS = [*BINARY_KINDS, "not_utf8", "huge_garbage", "deep", "big_number"]


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes, sizes: Sizes, kind: str) -> Case:
    """One of :data:`TEXT_KINDS` applied to ``data``."""
    if kind == "truncate":
        return Case(kind, data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
        return Case(kind, bytes(out))
    at = draw(st.integers(0, len(data)))
    if kind == "not_utf8":
        return Case(kind, data[:at] + draw(st.sampled_from(NOT_UTF8)) + data[at:], must="refuse")
    if kind == "huge_garbage":
        garbage = b"\n" + b"x" * draw(st.integers(1, sizes.huge)) + b"\n"  # on a line of its own, or splitting one
        return Case(kind, data[:at] + garbage + data[at:], must="refuse")
    if kind == "deep":
        depth = draw(st.integers(2_000, sizes.depth))
        return Case(kind, b"[" * depth + b"]" * depth + b"\n" + data, must="refuse")
    digits = draw(st.integers(4_301, sizes.digits))
    return Case(kind, b"1" * digits + b"\n" + data, must="refuse")


# -- records ------------------------------------------------------------------------------------------
RECORD_KINDS = [
    *TEXT_KINDS, "wrong_type", "non_finite", "delete_key", "extra_key", "huge_line", "non_object", "deep_value",
    "big_number_value", "surrogate", "setup_mix", "benign",
]  # fmt: skip


@st.composite
def records_case(draw: st.DrawFn, sizes: Sizes, kind: str) -> Case:
    lines: list[Any] = [dict(line) for line in LINES]
    i = draw(st.integers(0, len(lines) - 1))
    n = i + 1
    if kind in TEXT_KINDS:
        return draw(byte_mutation(jsonl(lines), sizes, kind))
    if kind == "wrong_type":
        path = draw(st.sampled_from(KEY_PATHS))
        lines[i] = put(lines[i], path, draw(JSON_VALUES))
        return Case(kind, jsonl(lines), n, path[0])
    if kind == "non_finite":
        path = draw(st.sampled_from(NUMBER_PATHS))
        lines[i] = with_raw(lines[i], path, draw(st.sampled_from(NON_FINITE)))
        return Case(kind, jsonl(lines), n, path[0], must="refuse")
    if kind == "delete_key":
        path = draw(st.sampled_from([(k,) for k in Record.model_fields] + [("display", k) for k in DISPLAY_DEFAULTS]))
        lines[i] = put(lines[i], path, DELETE)
        must = "refuse" if path[0] in REQUIRED and len(path) == 1 else "accept" if len(path) == 2 else "either"
        return Case(kind, jsonl(lines), n, path[0], must=must)
    if kind == "extra_key":
        where = draw(st.sampled_from([(), ("display",), ("params",), ("config",)]))
        key = draw(IDENTIFIERS.filter(lambda k: k not in Record.model_fields and k not in DISPLAY_DEFAULTS))
        lines[i] = put(lines[i], (*where, key), draw(JSON_VALUES))
        must = "refuse" if where in ((), ("display",)) else "either"  # params and config are free-form
        return Case(kind, jsonl(lines), n, where[0] if where else key, must=must)
    if kind == "huge_line":
        size = draw(st.integers(1, sizes.huge))
        form = draw(st.sampled_from(["string", "whitespace", "field"]))
        if form == "field":  # a valid record with a huge string: accepted
            line: Any = put(LINES[i], ("params", "note"), "n" * size)
        else:
            line = b'"' + b"s" * size + b'"' if form == "string" else b" " * size
        lines.insert(i, line)
        return Case(f"huge_line_{form}", jsonl(lines), must="refuse" if form == "string" else "accept")
    if kind == "non_object":
        lines[i] = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
        return Case(kind, jsonl(lines), must="refuse")
    if kind == "deep_value":
        depth = draw(st.integers(2_000, sizes.depth))
        lines[i] = with_raw(lines[i], ("params", "deep"), b"[" * depth + b"]" * depth)
        return Case(kind, jsonl(lines), must="refuse")
    if kind == "big_number_value":
        path = draw(st.sampled_from(NUMBER_PATHS))
        lines[i] = with_raw(lines[i], path, b"9" * draw(st.integers(4_301, sizes.digits)))
        return Case(kind, jsonl(lines), must="refuse")
    if kind == "surrogate":
        key = draw(st.sampled_from(STRING_KEYS))
        escape = draw(st.sampled_from([b'"\\ud800"', b'"x\\udfff"', b'"\\ud83d end"', b'"\\uDC00\\uD800"']))
        lines[i] = with_raw(lines[i], (key,), escape)
        return Case(kind, jsonl(lines), n, key, must="refuse")
    if kind == "setup_mix":
        lines[i] = put(lines[i], ("setup",), "ffffff")
        return Case(kind, jsonl(lines), must="refuse")
    form = draw(st.sampled_from(["crlf", "blank_lines", "duplicate", "reversed", "separators"]))
    if form == "separators":  # U+2028, U+0085 and U+001E are no line ends in JSON lines
        label = "egt\u2028\u0085\u001e"
        lines = [put(line, ("method",), label) if line["method"] == "egt" else line for line in lines]
    data = jsonl(lines)
    if form == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif form == "blank_lines":
        data = b"\n \n" + data.replace(b"\n", b"\n\n\t\n")
    elif form == "duplicate":
        data = jsonl([*lines, lines[i]])
    elif form == "reversed":
        data = jsonl(lines[::-1])
    return Case(f"benign_{form}", data, must="accept")


# -- baselines ----------------------------------------------------------------------------------------
def json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in children:
        yield from json_paths(value, (*prefix, key))


def get(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


BASELINE_PATHS = list(json_paths(BASELINE))
DICT_PATHS = [path for path in [(), *BASELINE_PATHS] if isinstance(get(BASELINE, path), dict)]


BASELINE_KINDS = [*TEXT_KINDS, "wrong_type", "non_finite", "delete_key", "extra_key", "surrogate"]


@st.composite
def baseline_case(draw: st.DrawFn, sizes: Sizes, kind: str) -> Case:
    if kind in TEXT_KINDS:
        return draw(byte_mutation(dumps(BASELINE), sizes, kind))
    if kind == "extra_key":
        where = draw(st.sampled_from(DICT_PATHS))
        key = draw(IDENTIFIERS.filter(lambda k: k not in json.dumps(BASELINE)))
        return Case(kind, dumps(put(BASELINE, (*where, key), draw(JSON_VALUES))), key=(where or (key,))[0])
    path = draw(st.sampled_from(BASELINE_PATHS))
    if kind == "wrong_type":
        data = dumps(put(BASELINE, path, draw(JSON_VALUES)))
    elif kind == "non_finite":
        data = with_raw(BASELINE, path, draw(st.sampled_from(NON_FINITE)))
    elif kind == "delete_key":
        path = path if isinstance(path[-1], str) else path[:-1] or ("entries",)
        data = dumps(put(BASELINE, path, DELETE))
    else:
        data = with_raw(BASELINE, path, b'"\\ud800"')
        return Case(kind, data, key=str(path[0]), must="refuse")
    return Case(kind, data, key=str(path[0]))


# -- saliency files -----------------------------------------------------------------------------------
def saliency_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.random((2, 1, 8, 8), dtype=np.float32),
        "labels": np.array([0, 1]),
        "masks": rng.random((2, 1, 8, 8)) > 0.5,
        "maps/egt/gradcam": rng.random((2, 8, 8), dtype=np.float32),
    }


def saliency_bytes(arrays: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.npz"
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path.read_bytes()


def _valid_saliency() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        a = saliency_arrays()
        maps = {("egt", "gradcam"): a["maps/egt/gradcam"]}
        return write_saliency(Path(tmp) / "s.npz", a["images"], a["labels"], a["masks"], maps).read_bytes()


SALIENCY = _valid_saliency()


SALIENCY_KINDS = [*BINARY_KINDS, "delete", "nan", "dtype", "shape", "objects"]


@st.composite
def saliency_case(draw: st.DrawFn, sizes: Sizes, kind: str) -> Case:
    if kind in BINARY_KINDS:
        return draw(byte_mutation(SALIENCY, sizes, kind))
    arrays: dict[str, Any] = saliency_arrays()
    name = draw(st.sampled_from([*arrays, "extra", "maps/bad"]))
    change = kind
    if change == "delete":
        arrays.pop(name, None)
    elif change == "nan":
        arrays[name] = np.full((2, 1, 8, 8) if name in ("images", "masks") else (2, 8, 8), np.nan)
    elif change == "dtype":
        arrays[name] = np.asarray(arrays.get(name, np.zeros(2))).astype(draw(st.sampled_from(["U3", "c8", "f2", "?"])))
    elif change == "shape":
        arrays[name] = np.zeros(draw(st.lists(st.integers(0, 4), max_size=5)), dtype=np.float32)
    else:
        return Case("array_objects", saliency_bytes({**arrays, name: np.array([{"a": 1}, None], dtype=object)}))
    return Case(f"array_{change}", saliency_bytes(arrays))


# -- running the cases --------------------------------------------------------------------------------
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass
class Folder:
    """A results folder with a records file, a saliency file and a baseline next to it."""

    root: Path
    run: Path
    records: Path
    saliency: Path
    baseline: Path

    @classmethod
    def create(cls, root: Path) -> Folder:
        run = root / "results" / "run"
        (run / "saliency").mkdir(parents=True)
        folder = cls(root, run, run / "records.jsonl", run / "saliency" / "fmnist.npz", root / "baseline.json")
        folder.records.write_bytes(jsonl(LINES))
        folder.saliency.write_bytes(SALIENCY)
        folder.baseline.write_text(dump_baseline(BASELINE), encoding="utf-8")
        return folder


COMMANDS: dict[str, Callable[[Folder], list[str]]] = {
    "report": lambda f: ["report", str(f.run)],
    "report -o": lambda f: ["report", str(f.run), "-o", str(f.root / "tables")],
    "check": lambda f: ["check", str(f.run), "-b", str(f.baseline)],
    "check --output": lambda f: ["check", str(f.run), "-b", str(f.baseline), "--output", str(f.root / "check.md")],
    "baseline": lambda f: ["baseline", str(f.run), "-o", str(f.baseline)],
}


def check_outcome(cli: Any, tmp: Path, surface: str, case: Case, command: str, tally: Counter[str]) -> None:
    """Write ``case`` over one file of a fresh results folder, run ``command`` and check the outcome."""
    root = Path(tempfile.mkdtemp(dir=tmp))
    try:
        folder = Folder.create(root)
        target = {"records": folder.records, "baseline": folder.baseline, "saliency": folder.saliency}[surface]
        target.write_bytes(case.data)
        before = cli.snapshot(root)
        code, stdout, stderr = cli.run(COMMANDS[command](folder))
        if code == 2:
            line = cli.error_line(code, stdout, stderr, str(target))
            at_line = case.line is None or f"{target}:{case.line}:" in line
            if case.key is not None and at_line:
                assert case.key in line, f"{case.kind}: the message does not name {case.key!r}: {line}"
            assert cli.snapshot(root) == before, f"{case.kind}: files changed on exit 2"
            assert case.must != "accept", f"{case.kind} must be accepted: {line}"
            tally[f"{surface}: refused (exit 2)"] += 1
            tally[f"{case.kind} refused"] += 1
        else:
            assert case.must != "refuse", f"{case.kind} must be refused; {command} exited {code}: {stderr[:500]}"
            assert "Traceback" not in stderr and "xbench: error" not in stderr, stderr[:2000]
            assert code in ((0, 1) if command.startswith("check") else (0,)), (code, stderr[:2000])
            tally[f"{surface}: accepted (exit {code})"] += 1
            tally[f"{case.kind} accepted"] += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Surface:
    """A file to mutate: its mutation kinds, the commands that read it, examples per kind (default run)."""

    strategy: Callable[[Sizes, str], st.SearchStrategy[Case]]
    kinds: list[str]
    commands: list[str]
    per_kind: int


SURFACES = {
    "records": Surface(records_case, RECORD_KINDS, ["report", "report -o", "check", "check --output", "baseline"], 5),
    "baseline": Surface(baseline_case, BASELINE_KINDS, ["check", "check --output", "baseline"], 6),
    "saliency": Surface(saliency_case, SALIENCY_KINDS, ["report", "report -o"], 3),
}
SLOW_FACTOR = 8


def fuzz(cli: Any, tmp: Path, name: str, per_kind: int, sizes: Sizes) -> Counter[str]:
    """Run ``per_kind`` examples of every mutation kind of a surface; returns the outcomes counted."""
    surface = SURFACES[name]
    tally: Counter[str] = Counter()
    for kind in surface.kinds:

        @settings(FUZZ, max_examples=per_kind, derandomize=sizes is DEFAULT_SIZES)
        @given(case=surface.strategy(sizes, kind), command=st.sampled_from(surface.commands))
        def one(case: Case, command: str) -> None:
            tally["examples"] += 1
            check_outcome(cli, tmp, name, case, command, tally)

        one()
    print(f"\n{name}: {dict(sorted(tally.items()))}")
    assert tally[f"{name}: refused (exit 2)"] > 0 and any("accepted" in k for k in tally), tally
    return tally


@pytest.mark.parametrize("surface", list(SURFACES))
def test_fuzzed_files_are_refused_in_one_line_or_accepted(cli: Any, tmp_path: Path, surface: str) -> None:
    fuzz(cli, tmp_path, surface, SURFACES[surface].per_kind, DEFAULT_SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("surface", list(SURFACES))
def test_fuzzed_files_many_examples(cli: Any, tmp_path: Path, surface: str) -> None:
    fuzz(cli, tmp_path, surface, SLOW_FACTOR * SURFACES[surface].per_kind, SLOW_SIZES)


# -- as a user sees it: stderr of a real process ----------------------------------------------------------
SUBPROCESS_CASES = {
    "a lone surrogate in a method name": b'{"method": "\\ud800"}',
    "nesting 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "a number of 5000 digits": b"1" * 5000,
    "not UTF-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_no_traceback_in_a_real_process(tmp_path: Path, case: str) -> None:
    folder = Folder.create(tmp_path)
    lines = [*LINES[:3], SUBPROCESS_CASES[case], *LINES[3:]]
    folder.records.write_bytes(jsonl(lines))
    for args in (COMMANDS["report"](folder), COMMANDS["check"](folder)):
        proc = subprocess.run(
            [sys.executable, "-m", "xbench", *args], capture_output=True, cwd=ROOT, timeout=300, check=False
        )
        stderr = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2 and "Traceback" not in stderr, stderr
        assert stderr.count("\n") == 1 and stderr.startswith(f"xbench: error: {folder.records}:4: "), stderr
