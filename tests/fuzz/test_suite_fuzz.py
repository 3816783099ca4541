"""Generated hostile suites through ``python -m xbench validate`` and ``run`` (issue 26).

The cases are derived from the schema (``tests/fuzz/suite_schema.py``): every field of ``Suite``
and of every registered plugin's ``Params`` gets boundary and huge values, other types, NaN and
infinities, empty and very long strings and lists, in the file and as ``--set`` overrides; every
mapping gets unknown keys. Structures come on top: nesting thousands of levels deep, alias bombs
("billion laughs") and recursive aliases, ``!!python/object`` and other tags, integers of thousands
of digits, files over the size limit, long ``extends:`` chains, and random byte edits of
``suites/smoke.yaml`` (bytes that are not UTF-8 among them).

The contract for every case (``suite_cli.Checker``): exit 0, or exit 2 with exactly one line on
stderr that names the file (and, for a field the schema refuses, the key), no traceback, nothing on
stdout, nothing written anywhere, no data loaded, under a few seconds. A refused case goes through
``run`` as well, which must print the same line. The default run tries ``BUDGETS["default"]``
examples per test, ``-m slow`` ``BUDGETS["slow"]``.
"""

from __future__ import annotations

import math
import os
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.suite_cli import Case, Checker, budgets, fuzz_settings
from tests.fuzz.suite_schema import (
    BASE,
    Leaf,
    all_leaves,
    constraints,
    dotted,
    hostile_values,
    is_number_field,
    list_item,
    members,
    owner_error,
    put,
    sections,
)
from xbench.suite import format_validation_error
from xbench.suite.loader import MAX_EXTENDS
from xbench.suite.strict_yaml import MAX_BYTES, MAX_DEPTH, MAX_DIGITS, MAX_EXPANDED

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "suites" / "smoke.yaml").read_bytes()
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=10**9).encode("utf-8")


def flow(value: Any) -> str:
    """``value`` as the one-line YAML a ``--set key=VALUE`` flag takes."""
    text = yaml.dump(value, Dumper=DUMPER, default_flow_style=True, allow_unicode=True, width=10**9)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def splice(data: dict[str, Any], path: tuple[str | int, ...], text: str) -> bytes:
    """The YAML of ``data`` with the raw flow-style ``text`` as the value at ``path``."""
    marker = "XBENCH_FUZZ_MARKER"
    return dump(put(data, path, marker)).replace(marker.encode(), text.encode("utf-8"))


# -- the oracle: what the schema says about one value -------------------------------------------------
_KEY = re.compile(r"[\w\[\].]+")


def expectation(leaf: Leaf, value: Any) -> tuple[bool, str]:
    """``(must_fail, key)``: whether the field's own model refuses ``value`` (or it is a number that is
    not finite, or a boolean given for a number), and the key the one-line error must name."""
    err = owner_error(leaf, value)
    owner = dotted(leaf.owner_path)
    if err is not None:
        message = format_validation_error(err, leaf.owner)
        where = message.split(": ", 1)[0]
        key = where if _KEY.fullmatch(where) and not message.startswith(("key ", "[")) else ""
        return True, ".".join(p for p in (owner, key) if p).replace(".[", "[")
    non_finite = isinstance(value, float) and not math.isfinite(value)
    if is_number_field(leaf) and (non_finite or isinstance(value, bool)) and not _takes_bool(leaf):
        return True, dotted(leaf.path)
    return False, ""


def _takes_bool(leaf: Leaf) -> bool:
    return any(m is bool or "bool" in str(m) for m in members(leaf.annotation))


@st.composite
def field_value(draw: st.DrawFn) -> Case:
    """A hostile value for one field of the schema, in the file or as a ``--set`` override."""
    leaf = draw(st.sampled_from(all_leaves()))
    value = draw(hostile_values(leaf))
    must_fail, key = expectation(leaf, value)
    if draw(st.booleans()):
        flag = f"{dotted(leaf.path)}={flow(value)}"
        return Case(f"field --set {leaf.owner.__name__}", {"suite.yaml": dump(leaf.base)}, [flag], must_fail,
                    ["--set", key] if must_fail else [])  # fmt: skip
    data = put(leaf.base, leaf.path, value)
    return Case(f"field {leaf.owner.__name__}", {"suite.yaml": dump(data)}, [], must_fail, [key] if must_fail else [])


identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


@st.composite
def unknown_key(draw: st.DrawFn) -> Case:
    """A key that no model declares, in any mapping of the schema (a plugin's params included)."""
    base_id, path, valid = draw(st.sampled_from(sections()))
    from tests.fuzz.suite_schema import BASES

    key = draw(identifiers.filter(lambda k: k not in valid and k != "extends"))
    full = dotted((*path, key))
    if draw(st.booleans()):
        return Case("unknown key --set", {"suite.yaml": dump(BASES[base_id])}, [f"{full}=1"], True,
                    [f"--set {full}: unknown key"])  # fmt: skip
    return Case("unknown key", {"suite.yaml": dump(put(BASES[base_id], (*path, key), 1))}, [], True,
                [f"{full}: unknown key"])  # fmt: skip


# -- structures -----------------------------------------------------------------------------------------
PYTHON_TAGS = [
    "!!python/object/apply:os.system ['true']",
    "!!python/object/new:builtins.dict {}",
    "!!python/object:builtins.object {}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/tuple [1, 2]",
    "!!python/bytes aGk=",
    "!<tag:yaml.org,2002:python/object/apply:subprocess.call> [['true']]",
]
OTHER_TAGS = [
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!timestamp 2001-12-14",
    "2001-12-14", "!!str 3", "!!int '3'", "!!float '1.5'", "!!null ''", "!!bool 'yes'", "!!seq [1]",
    "!!map {a: 1}", "!custom x", "!!merge x", "!!str '\\ud800'", '"\\ud83d"',
]  # fmt: skip
paths = st.sampled_from([leaf.path for leaf in all_leaves() if leaf.base_id == "smoke"])


def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return "{a: " * depth + "1" + "}" * depth
    return "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2)


def laughs(width: int, levels: int) -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: width**levels strings."""
    lines = ["l0: &l0 lol"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


@st.composite
def structure(draw: st.DrawFn) -> Case:
    """Deep nesting, alias bombs, tags, huge integers, oversized files and long extends chains."""
    kind = draw(st.sampled_from(["deep", "shallow", "laughs", "recursive", "python tag", "other tag", "digits",
                                 "size", "extends", "deep --set", "long --set path"]))  # fmt: skip
    path = draw(paths)
    if kind in ("deep", "shallow", "deep --set"):
        depth = draw(st.integers(MAX_DEPTH + 1, 20_000) if kind != "shallow" else st.integers(1, MAX_DEPTH - 8))
        text = nested(depth, draw(st.sampled_from(["list", "dict", "mixed"])))
        expected = ["nested deeper than"] if kind != "shallow" and depth > MAX_DEPTH + 8 else []
        if kind == "deep --set":
            return Case(kind, {"suite.yaml": dump(BASE)}, [f"{dotted(path)}={text}"], bool(expected), expected)
        return Case(kind, {"suite.yaml": splice(BASE, path, text)}, [], bool(expected), expected)
    if kind == "laughs":
        width, levels = draw(st.integers(2, 12)), draw(st.integers(1, 12))
        too_big = width**levels + 1 > MAX_EXPANDED
        text = dump(BASE) + laughs(width, levels).encode() + b"\n"
        return Case(kind, {"suite.yaml": text}, [], True, ["aliases expand"] if too_big else [])
    if kind == "recursive":
        text = dump(BASE) + b"x: &r [1, {a: *r}]\n"
        return Case(kind, {"suite.yaml": text}, [], True, ["an alias refers to a value that contains it"])
    if kind in ("python tag", "other tag"):
        tag = draw(st.sampled_from(PYTHON_TAGS if kind == "python tag" else OTHER_TAGS))
        expected = ["is not allowed in a suite"] if kind == "python tag" else []
        return Case(kind, {"suite.yaml": splice(BASE, path, tag)}, [], kind == "python tag", expected)
    if kind == "digits":
        digits = draw(st.integers(MAX_DIGITS + 1, 100_000))
        text = draw(st.sampled_from(["1", "-9", "0x"])) + "7" * digits
        return Case(kind, {"suite.yaml": splice(BASE, path, text)}, [], True, ["digits"])
    if kind == "size":
        padding = b"# " + b"x" * (MAX_BYTES + draw(st.integers(0, 10_000))) + b"\n"
        return Case(kind, {"suite.yaml": dump(BASE) + padding}, [], True, ["larger than"])
    if kind == "extends":
        n = draw(st.integers(1, 3 * MAX_EXTENDS))
        files = {"suite.yaml": dump({**BASE, "extends": "s1.yaml"})}
        files |= {f"s{i}.yaml": dump({"extends": f"s{i + 1}.yaml"}) for i in range(1, n)}
        files[f"s{n}.yaml"] = dump({"description": "the root"})
        must_fail = n > MAX_EXTENDS
        return Case(kind, files, [], must_fail, ["extends: a chain of more than"] if must_fail else [])
    depth = draw(st.integers(MAX_DEPTH + 1, 5_000))  # a --set key path of thousands of levels
    key = ".".join(draw(st.lists(identifiers, min_size=depth, max_size=depth)))
    return Case(kind, {"suite.yaml": dump(BASE)}, [f"{key}=1"], True, ["a key path of"])


@st.composite
def byte_edit(draw: st.DrawFn) -> Case:
    """``suites/smoke.yaml`` with a few random bytes inserted, deleted, replaced or duplicated."""
    data = bytearray(SMOKE)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if op == "insert":
            data[at:at] = chunk
        elif op == "delete":
            del data[at : at + len(chunk)]
        elif op == "replace":
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
    return Case("byte edit", {"suite.yaml": bytes(data)})


set_keys = st.one_of(
    st.sampled_from([dotted(leaf.path) for leaf in all_leaves() if leaf.base_id == "smoke"]),
    st.text(string.printable, max_size=30),
    st.text(max_size=20),
    st.lists(identifiers | st.integers(-3, 99).map(lambda i: f"[{i}]"), min_size=1, max_size=8).map(".".join),
)


@st.composite
def set_flag(draw: st.DrawFn) -> Case:
    """``--set KEY=VALUE`` with keys of the schema or arbitrary text, and values of any YAML."""
    odd = ["[", "{a", "*x", "&a", "!!python/name:os.system", "'", '"', "- - -", "a: b: c", "\x00", "\ud800"]
    value = draw(st.one_of(st.text(max_size=30), st.sampled_from(odd)))
    return Case("--set flag", {"suite.yaml": SMOKE}, [f"{draw(set_keys)}={value}"])


# -- the tests ------------------------------------------------------------------------------------------
def _fuzz(check: Checker, strategy: st.SearchStrategy[Case], budget: str) -> dict[str, int]:
    @fuzz_settings(budget)
    @given(case=strategy)
    def one(case: Case) -> None:
        check(case)

    one()
    return check.counts


@budgets
def test_every_field_refuses_hostile_values_in_one_line(suite_check: Checker, budget: str) -> None:
    counts = _fuzz(suite_check, field_value(), budget)
    assert any(k.endswith(":refused") for k in counts) and any(k.endswith(":valid") for k in counts), counts


@budgets
def test_unknown_keys_anywhere_are_refused_in_one_line(suite_check: Checker, budget: str) -> None:
    _fuzz(suite_check, unknown_key(), budget)


@budgets
def test_hostile_structures_are_refused_in_one_line(suite_check: Checker, budget: str) -> None:
    _fuzz(suite_check, structure(), budget)


@budgets
def test_random_byte_edits_fail_cleanly(suite_check: Checker, budget: str) -> None:
    _fuzz(suite_check, byte_edit(), budget)


@budgets
def test_random_set_flags_fail_cleanly(suite_check: Checker, budget: str) -> None:
    _fuzz(suite_check, set_flag(), budget)


def test_every_count_and_width_has_an_upper_bound() -> None:
    """Every integer of the schema (counts, widths, sizes, seeds, indices) and every list has a bound, so
    a value off by a few zeros fails validation (the fuzzing above tries 10**12 on each)."""
    unbounded = []
    for leaf in all_leaves():
        for member in members(leaf.annotation):
            bounds = constraints(member, leaf.field if len(members(leaf.annotation)) == 1 else None)
            bounds |= constraints(leaf.annotation, leaf.field) if leaf.field is not None else {}
            inner = member
            while hasattr(inner, "__metadata__"):
                inner = inner.__origin__
            if inner is int and not {"le", "lt"} & set(bounds):
                unbounded.append(f"{leaf}: an integer without le/lt")
            if list_item(member) is not None and "max_length" not in bounds:
                unbounded.append(f"{leaf}: a list without max_length")
    assert not unbounded, "\n".join(unbounded)


def test_the_fuzzing_reaches_every_plugin() -> None:
    """The schema walk covers every registry's plugins (one per distinct Params) and their nested models."""
    owners = {leaf.owner.__name__ for leaf in all_leaves()}
    for name in ("Suite", "TrainingConfig", "RandAugmentConfig", "PluginSpec", "StageSpec", "SyntheticShapesParams",
                 "ResNetCifarParams", "CodedResNeXtParams", "ZooParams", "RiseParams"):  # fmt: skip
        assert name in owners, f"{name} is not fuzzed"


# -- as a user sees it: stderr of a real process ---------------------------------------------------------
SMOKE_DATA = yaml.safe_load(SMOKE)
CODED = next(i for i, m in enumerate(SMOKE_DATA["methods"]) if isinstance(m, dict) and m["name"] == "coded_resnext")
REAL_PROCESS = {  # name: (file bytes, --set flags, fragments of the line)
    "nested 5000 deep": (SMOKE + b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", [], ["nested deeper"]),
    "billion laughs": (SMOKE + laughs(10, 9).encode() + b"\n", [], ["aliases expand"]),
    "python object tag": (SMOKE + b"x: !!python/object/apply:os.system ['touch pwned']\n", [], ["python/object"]),
    "n_train 10^12": (SMOKE, ["datasets[0].params.n_train=1000000000000"], ["datasets[0].params.n_train"]),
    "n_branches 10^12": (SMOKE, [f"methods[{CODED}].params.stages[0].n_branches=1000000000000"], ["n_branches"]),
    "stem_channels 10^12": (SMOKE, [f"methods[{CODED}].params.stem_channels=1000000000000"], ["stem_channels"]),
    "not UTF-8": (SMOKE[:100] + b"\xff\xfe" + SMOKE[100:], [], ["not UTF-8"]),
}


@pytest.mark.parametrize("name", list(REAL_PROCESS))
def test_no_traceback_in_a_real_process(tmp_path: Path, name: str) -> None:
    content, flags, expected = REAL_PROCESS[name]
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(content)
    sets = [arg for flag in flags for arg in ("--set", flag)]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XBENCH_CACHE": str(tmp_path / "cache"), "XBENCH_DATA": str(home)}
    proc = subprocess.run(  # `run`: validate is what the in-process tests call
        [sys.executable, "-m", "xbench", "run", str(suite), "--output", str(tmp_path / "out"), *sets],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xbench: error: {suite}"), proc.stderr[-3000:]
    assert all(part in lines[0] for part in expected), lines[0]
    assert proc.stdout == "" and sorted(p.name for p in tmp_path.rglob("*")) == ["home", "suite.yaml"]
