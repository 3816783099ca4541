"""Bad input through ``python -m xbench run`` (issue 8): suite files, ``--set`` flags and data folders.

Every case runs the real CLI entry point in-process and checks the contract: exit code 2, one
line on stderr naming the file and the key, value or data file at fault, no traceback, nothing on
stdout, and nothing written (no output folder, no staging folder next to it, no cache). Malformed
suites must be caught by validation: loading the (synthetic) data is an error in these tests.

Unit-level checks of single messages live in tests/test_suite.py, tests/test_cli.py and
tests/data/; this file generates malformed suites from suites/smoke.yaml with hypothesis.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import itertools
import math
import os
import re
import string
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import xbench.data.fashion_mnist as fashion_mnist
from xbench.cli import main
from xbench.data.synthetic import SyntheticShapes
from xbench.methods.coded_resnext import StageSpec
from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS, Registry
from xbench.suite import DataConfig, EvaluationConfig, PluginSpec, Suite, TrainingConfig, load_suite

ROOT = Path(__file__).resolve().parent.parent
BASE: dict[str, Any] = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text(encoding="utf-8"))
REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS, "methods": METHODS, "metrics": METRICS, "explainers": EXPLAINERS, "backbone": BACKBONES,
}  # fmt: skip

Path_ = tuple[str | int, ...]
DELETE = object()
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's is ~10x faster


# -- helpers ---------------------------------------------------------------------------------------
def dump(data: Any) -> bytes:
    """YAML bytes, one line per scalar (so that inserted lines land between whole entries)."""
    text = yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=10**6)
    return text.encode("utf-8")


def dotted(path: Path_) -> str:
    """``("methods", 1, "params", "lam")`` -> ``methods[1].params.lam``, as messages spell keys."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def put(data: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path`` (or the key deleted for ``DELETE``).

    Plugin shorthands (``- lap``) on the way become mappings, and missing mappings are created.
    """
    data = copy.deepcopy(data)
    node: Any = data
    for part, after in itertools.pairwise(path):
        if isinstance(node, list) and isinstance(part, int):
            node.extend([None] * (part + 1 - len(node)))
        child = node.get(part) if isinstance(node, dict) else node[part]
        if child is None:
            child = node[part] = [] if isinstance(after, int) else {}
        elif isinstance(child, str):
            child = node[part] = {"name": child}
        node = child
    last = path[-1]
    if value is DELETE:
        del node[last]
        return data
    if isinstance(node, list) and isinstance(last, int):
        node.extend([None] * (last + 1 - len(node)))
    node[last] = value
    return data


def exists(data: Any, path: Path_) -> bool:
    for part in path:
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_list or (isinstance(data, dict) and part in data)):
            return False
        data = data[part]
    return True


def row(kind: str, name: str, label: str | None = None) -> int:
    """Index of the first ``kind`` row of the base suite with that plugin name (and label)."""
    for i, spec in enumerate(BASE[kind]):
        spec = {"name": spec} if isinstance(spec, str) else spec
        if spec["name"] == name and (label is None or spec.get("label") == label):
            return i
    raise LookupError(f"suites/smoke.yaml has no {kind} row {name!r}; update this test")


def params_fields(kind: str, index: int | None = None) -> set[str]:
    """The parameter names of the plugin in the base suite's row ``kind[index]`` (or ``backbone``)."""
    spec = BASE[kind] if index is None else BASE[kind][index]
    name = spec if isinstance(spec, str) else spec["name"]
    return set(REGISTRIES[kind].get(name).Params.model_fields)


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@dataclass
class Env:
    """The folders a rejected run must leave alone."""

    home: Path
    env_cache: Path
    cwd: Path

    def untouched(self) -> None:
        assert not any(self.home.iterdir()), f"wrote into $HOME: {snapshot(self.home)}"
        assert not any(self.cwd.iterdir()), f"wrote into the working directory: {snapshot(self.cwd)}"
        assert not self.env_cache.exists(), "created $XBENCH_CACHE"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env-data"))
    monkeypatch.chdir(cwd)
    return Env(home, tmp_path / "env-cache", cwd)


@pytest.fixture
def no_data_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed suite must be refused before any data is loaded (let alone trained on)."""

    def refuse(self: Any, split: str) -> Any:
        raise AssertionError(f"a malformed suite reached data loading ({split} split)")

    monkeypatch.setattr(SyntheticShapes, "load", refuse)


def assert_rejected(
    workdir: Path, suite: Path, extra_args: list[str], expected: list[str], before: set[str] | None = None
) -> str:
    """Run ``xbench run suite`` into ``workdir`` and check the bad-input contract; return the error line."""
    out, cache = workdir / "results" / "run", workdir / "cache"
    before = snapshot(workdir) if before is None else before
    args = ["run", str(suite), "--output", str(out), "--cache-dir", str(cache), "--no-progress", *extra_args]
    code, stdout, stderr = run_cli(args)
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {stderr!r}"
    line = lines[0]
    assert code == 2, f"exit code {code}: {line}"
    assert line.startswith("xbench: error: ") and "Traceback" not in stderr, line
    assert stdout == "", stdout
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    assert not out.exists(), f"{out} was created"
    if out.parent.exists():
        assert not list(out.parent.glob(f".{out.name}.partial-*")), "a staging folder was left behind"
    assert not cache.exists(), f"{cache} was created"
    assert snapshot(workdir) == before, f"files appeared: {snapshot(workdir) - before}"
    return line


# -- strategies: malformed suites --------------------------------------------------------------------
@dataclass
class Case:
    """A malformed suite: the files to write (the first one is run), ``--set`` flags, expected fragments."""

    kind: str
    files: dict[str, bytes]
    expected: list[str]
    overrides: list[str] = field(default_factory=list)


def suite_case(kind: str, data: dict[str, Any], expected: list[str], overrides: list[str] | None = None) -> Case:
    return Case(kind, {"suite.yaml": dump(data)}, expected, overrides or [])


NUMBER_WORDS = {"inf", "infinity", "nan"}  # pydantic reads these strings as floats
words = st.text(string.ascii_letters, min_size=1, max_size=8).filter(lambda s: s.lower() not in NUMBER_WORDS)
identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
small_lists = st.lists(st.integers(-5, 5), min_size=1, max_size=3)
small_dicts = st.dictionaries(identifiers, st.integers(0, 5), min_size=1, max_size=2)
fractions = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer())

WRONG: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(words, small_lists, small_dicts, st.booleans(), fractions),
    "float": st.one_of(words, small_lists, small_dicts, st.booleans()),
    "str": st.one_of(st.integers(), st.floats(allow_nan=False), small_lists, small_dicts, st.booleans()),
    "list": st.one_of(st.integers(), words, small_dicts, st.booleans()),
    "dict": st.one_of(st.integers(), words, small_lists, st.booleans()),
    "bool": st.one_of(small_lists, small_dicts, st.integers(2, 10**6), st.floats(1.5, 10.0)),
}
BASE_TEXT = dump(BASE).decode("utf-8")
CODED, ECR, EGT0 = row("methods", "coded_resnext"), row("methods", "ecr"), row("methods", "egt", "egt (λ=0)")
AD100, ROAD = row("metrics", "average_drop", "AD 100%"), row("metrics", "road")
TYPED_FIELDS: list[tuple[Path_, str]] = [
    *((("training", k), "int") for k in ("epochs", "batch_size", "holdout", "limit")),
    *((("evaluation", k), "int") for k in ("batch_size", "limit", "explain_limit")),
    (("seeds", 0), "int"),
    *((("datasets", 0, "params", k), "int") for k in ("n_train", "n_test", "image_size", "seed")),
    *((("backbone", "params", k), "int") for k in ("depth", "width")),
    (("methods", ECR, "params", "steps"), "int"),
    (("methods", CODED, "params", "stages", 1, "out_channels"), "int"),
    *((("training", k), "float") for k in ("lr", "momentum", "weight_decay", "warmup_epochs")),
    (("datasets", 0, "params", "noise"), "float"),
    (("methods", EGT0, "params", "lam"), "float"),
    (("metrics", AD100, "params", "keep"), "float"),
    *(((k,), "str") for k in ("name", "description", "device")),
    *(((k, 1, "name"), "str") for k in ("methods", "metrics", "explainers")),
    (("methods", EGT0, "label"), "str"),
    (("backbone", "name"), "str"),
    *(((k,), "list") for k in ("datasets", "methods", "metrics", "explainers", "seeds")),
    *((("training", k), "list") for k in ("augment", "step_epochs")),
    *(((k,), "dict") for k in ("training", "evaluation", "data")),
    *(((k, 1, "params"), "dict") for k in ("methods", "metrics")),
    (("backbone", "params"), "dict"),
    (("training", "nesterov"), "bool"),
    (("data", "download"), "bool"),
    (("methods", EGT0, "params", "head_conv"), "bool"),
]
SIZE_FIELDS: list[Path_] = [
    *(("datasets", 0, "params", k) for k in ("n_train", "n_test", "image_size", "distractors")),
    *(("training", k) for k in ("epochs", "batch_size", "holdout", "limit")),
    ("training", "step_epochs", 0),
    *(("evaluation", k) for k in ("batch_size", "limit", "explain_limit")),
    ("backbone", "params", "width"),
    ("methods", ECR, "params", "steps"),
    ("methods", CODED, "params", "stages", 0, "blocks"),
    ("metrics", AD100, "params", "n"),
    ("seeds", 0),
]
SECTIONS: dict[Path_, set[str]] = {
    (): set(Suite.model_fields) | {"extends"},
    ("training",): set(TrainingConfig.model_fields),
    ("evaluation",): set(EvaluationConfig.model_fields),
    ("data",): set(DataConfig.model_fields),
    ("datasets", 0): set(PluginSpec.model_fields),
    ("methods", CODED): set(PluginSpec.model_fields),
    ("backbone",): set(PluginSpec.model_fields),
    ("datasets", 0, "params"): params_fields("datasets", 0),
    ("backbone", "params"): params_fields("backbone"),
    ("methods", CODED, "params", "stages", 0): set(StageSpec.model_fields),
    **{
        (k, i, "params"): params_fields(k, i) for k in ("methods", "metrics", "explainers") for i in range(len(BASE[k]))
    },
}


@st.composite
def wrong_type(draw: st.DrawFn) -> Case:
    path, kind = draw(st.sampled_from(TYPED_FIELDS))
    return suite_case("wrong_type", put(BASE, path, draw(WRONG[kind])), [f"{dotted(path)}:"])


@st.composite
def unknown_key(draw: st.DrawFn) -> Case:
    section = draw(st.sampled_from(sorted(SECTIONS, key=str)))
    key = draw(identifiers.filter(lambda k: k not in SECTIONS[section]) | st.integers(0, 99))
    data = BASE if exists(BASE, section) else put(BASE, section, {})  # so that an int key is a key, not an index
    data = put(data, (*section, key), 1)
    where = dotted(section)
    if isinstance(key, int):
        expected = [f"{where}: key {key}:" if where else f"key {key}:", "must be strings"]
    else:
        expected = [f"{dotted((*section, key))}: unknown key"]
    return suite_case("unknown_key", data, expected)


@st.composite
def unknown_plugin(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(sorted(REGISTRIES)))
    name = draw(identifiers.filter(lambda n: n not in REGISTRIES[kind]))
    path: Path_ = ("backbone",) if kind == "backbone" else (kind, draw(st.integers(0, len(BASE[kind]) - 1)))
    data = put(BASE, (*path, "name"), name)
    return suite_case("unknown_plugin", data, [f"{dotted(path)}.name:", f"unknown {REGISTRIES[kind].kind} {name!r}"])


@st.composite
def negative_size(draw: st.DrawFn) -> Case:
    path, value = draw(st.sampled_from(SIZE_FIELDS)), draw(st.integers(-(10**9), -1))
    return suite_case("negative_size", put(BASE, path, value), [f"{dotted(path)}:", str(value)])


@st.composite
def empty_list(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from([("methods",), ("datasets",), ("metrics",), ("seeds",), ("metrics", ROAD)]))
    if path == ("metrics", ROAD):
        path = (*path, "params", "percentages")
    return suite_case("empty_list", put(BASE, path, []), [f"{dotted(path)}:", "at least 1 item"])


@st.composite
def missing_key(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from([("datasets",), ("methods",), ("datasets", 0, "name"), ("methods", CODED, "name")]))
    return suite_case("missing_key", put(BASE, path, DELETE), [f"{dotted(path)}: Field required"])


BAD_VALUES: list[tuple[Path_, st.SearchStrategy[Any]]] = [
    (("device",), st.sampled_from(["gpu", "cuda:", "cuda:x", "CPU", "tpu", "cuda:-1", ""])),
    (("name",), st.sampled_from(["", " ", ".", "..", "a/b", "../up", "x\\y"])),
    (
        ("training", "optimizer"),
        words.filter(lambda w: w not in get_args(TrainingConfig.model_fields["optimizer"].annotation)),
    ),
    (
        ("training", "schedule"),
        words.filter(lambda w: w not in get_args(TrainingConfig.model_fields["schedule"].annotation)),
    ),
    (("training", "augment", 0), words.filter(lambda w: w not in ("flip", "crop"))),
    (("training", "lr"), st.floats(max_value=0.0, allow_nan=False)),
    (("training", "momentum"), st.floats(min_value=1.0)),
    (("evaluation", "explain_datasets", 0), identifiers.filter(lambda n: n != "synthetic_shapes")),
    (("backbone", "params", "depth"), st.integers(-50, 200).filter(lambda d: d < 8 or (d - 2) % 6 != 0)),
    (("datasets", 0, "params", "channels"), st.integers(-5, 10).filter(lambda c: c not in (1, 3))),
    (("metrics", AD100, "params", "keep"), st.floats(1.0, 1e9, exclude_min=True) | st.floats(-1e9, 0.0)),
]


@st.composite
def bad_value(draw: st.DrawFn) -> Case:
    path, values = draw(st.sampled_from(BAD_VALUES))
    data = put(BASE, path[:-1], []) if isinstance(path[-1], int) else BASE  # a list of just the bad value
    return suite_case("bad_value", put(data, path, draw(values)), [f"{dotted(path)}:"])


@st.composite
def non_finite(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from([path for path, kind in TYPED_FIELDS if kind == "float"]))
    value = draw(st.sampled_from([math.inf, -math.inf, math.nan, "inf", "-Infinity", "nan"]))
    return suite_case("non_finite", put(BASE, path, value), [f"{dotted(path)}:"])


@st.composite
def bool_as_number(draw: st.DrawFn) -> Case:
    """``epochs: yes`` is a YAML boolean, which pydantic would read as 1."""
    path = draw(st.sampled_from([path for path, kind in TYPED_FIELDS if kind in ("int", "float")]))
    return suite_case("bool_as_number", put(BASE, path, draw(st.booleans())), [f"{dotted(path)}:"])


@st.composite
def duplicate_rows(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["methods", "explainers", "seeds"]))
    i = draw(st.integers(0, len(BASE[kind]) - 1))
    data = put(BASE, (kind,), [*BASE[kind], BASE[kind][i]])
    return suite_case("duplicate_rows", data, [f"{kind}: duplicate"])


@st.composite
def circular_extends(draw: st.DrawFn) -> Case:
    """suite.yaml -> f1 -> ... -> fn -> fj (j <= n), files in the root or a sub-folder."""
    names = draw(st.lists(identifiers, max_size=4, unique=True))
    rel = ["suite.yaml", *(f"{draw(st.sampled_from(['', 'sub/', 'sub/deeper/']))}{n}.yaml" for n in names)]
    back = draw(st.integers(0, len(rel) - 1))
    targets = [*rel[1:], rel[back]]
    files = {}
    for i, (path, target) in enumerate(zip(rel, targets, strict=True)):
        content = BASE if i == 0 else {"seeds": [i]}
        files[path] = dump({**content, "extends": os.path.relpath(target, os.path.dirname(path) or ".")})
    expected = ["extends: circular", *(Path(p).name for p in rel[back:])]
    return Case("circular_extends", files, expected)


LOCAL_SYNTAX_ERRORS = ["\tfoo: 1", "foo: bar: baz", "@foo: 1", "]", "`x", 'foo: "bad \\q escape"', "foo: *nosuch"]
UNCLOSED = ["foo: [unclosed", "foo: {a: 1", "foo: 'unterminated"]


@st.composite
def yaml_syntax(draw: st.DrawFn) -> Case:
    lines = BASE_TEXT.splitlines()
    at = draw(st.integers(0, len(lines)))
    broken = draw(st.sampled_from(LOCAL_SYNTAX_ERRORS + UNCLOSED))
    text = "\n".join([*lines[:at], broken, *lines[at:]]) + "\n"
    # A local error is reported on its own line; an unclosed bracket or quote somewhere after it.
    expected = ["YAML syntax error", f"line {at + 1}:" if broken in LOCAL_SYNTAX_ERRORS else "line "]
    return Case("yaml_syntax", {"suite.yaml": text.encode("utf-8")}, expected)


@st.composite
def duplicate_key(draw: st.DrawFn) -> Case:
    key = draw(st.sampled_from(list(BASE)))
    lines = BASE_TEXT.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.startswith(f"{key}:"))
    expected = [f"line {len(lines) + 1}:", f"duplicate key {key!r} (first on line {first})"]
    return Case("duplicate_key", {"suite.yaml": (BASE_TEXT + dump({key: BASE[key]}).decode()).encode()}, expected)


@st.composite
def non_utf8(draw: st.DrawFn) -> Case:
    text = BASE_TEXT
    at = draw(st.integers(0, len(text)))  # a character boundary, so the bad bytes are the first bad ones
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
    prefix = text[:at].encode("utf-8")
    content = prefix + bad + text[at:].encode("utf-8")
    return Case("non_utf8", {"suite.yaml": content}, ["not UTF-8", f"byte {len(prefix)})"])


@st.composite
def bad_override(draw: st.DrawFn) -> Case:
    section = draw(st.sampled_from(["", "training.", "evaluation.", "data.", f"methods[{EGT0}].params."]))
    valid = SECTIONS[tuple(int(p) if p.isdigit() else p for p in re.findall(r"\w+", section))]
    key = draw(identifiers.filter(lambda k: k not in valid))
    options = [
        (f"{section}{key}", ["unknown key"]),
        (f"methods[{len(BASE['methods']) + draw(st.integers(0, 99))}].params.lam", ["out of range"]),
        (f"methods.{key}.params.lam", ["is not an index"]),
        (f"training.epochs.{key}", ["cannot set a key inside int"]),
    ]
    flag, what = draw(st.sampled_from(options))
    value = draw(st.sampled_from(["1", "x", "[1, 2]", "{a: 1}"]))
    return Case("bad_override", {"suite.yaml": BASE_TEXT.encode()}, [f"--set {flag}:", *what], [f"{flag}={value}"])


MUTATIONS: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "wrong_type": wrong_type,
    "unknown_key": unknown_key,
    "unknown_plugin": unknown_plugin,
    "negative_size": negative_size,
    "empty_list": empty_list,
    "missing_key": missing_key,
    "bad_value": bad_value,
    "non_finite": non_finite,
    "bool_as_number": bool_as_number,
    "duplicate_rows": duplicate_rows,
    "circular_extends": circular_extends,
    "yaml_syntax": yaml_syntax,
    "duplicate_key": duplicate_key,
    "non_utf8": non_utf8,
    "bad_override": bad_override,
}
malformed_suites = st.sampled_from(sorted(MUTATIONS)).flatmap(lambda kind: MUTATIONS[kind]())


# -- suites ------------------------------------------------------------------------------------------------
def test_base_suite_is_valid(tmp_path: Path) -> None:
    """The mutations start from a valid suite, so each case's mutation is what makes it fail."""
    path = tmp_path / "suite.yaml"
    path.write_bytes(dump(BASE))
    suite = load_suite(path)
    assert len(suite.methods) == len(BASE["methods"]) and len(suite.metrics) == len(BASE["metrics"])


def test_malformed_suites_fail_cleanly(tmp_path: Path, env: Env, no_data_loading: None) -> None:
    seen: set[str] = set()

    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=malformed_suites)
    def check(case: Case) -> None:
        seen.add(case.kind)
        workdir = Path(tempfile.mkdtemp(dir=tmp_path)).resolve()
        for rel, content in case.files.items():
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (workdir / rel).write_bytes(content)
        suite = workdir / next(iter(case.files))
        extra = [arg for flag in case.overrides for arg in ("--set", flag)]
        assert_rejected(workdir, suite, extra, [f"{suite}: ", *case.expected])
        env.untouched()

    check()
    assert seen == set(MUTATIONS), f"never generated: {set(MUTATIONS) - seen}"


# -- CLI flags ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("training.nosuchkey=1", ["--set training.nosuchkey: unknown key", "valid keys:", "epochs"]),
        ("methods[9].params.lam=1", ["--set methods[9].params.lam: index 9", f"(list of {len(BASE['methods'])})"]),
        (f"methods[{EGT0}].params.nosuch=1", [f"--set methods[{EGT0}].params.nosuch: unknown key", "lam"]),
        ("nosuchkey.sub=1", ["--set nosuchkey: unknown key"]),
        ("training.epochs.x.y=1", ["--set training.epochs.x.y: cannot set a key inside int"]),
        ("methods.first.label=x", ["--set methods.first.label: 'first' is not an index"]),
    ],
)
def test_unknown_set_path(tmp_path: Path, env: Env, no_data_loading: None, flag: str, expected: list[str]) -> None:
    suite = tmp_path / "smoke.yaml"
    suite.write_bytes(dump(BASE))
    assert_rejected(tmp_path, suite, ["--set", flag], [f"{suite}: ", *expected])
    env.untouched()


# -- data folders ------------------------------------------------------------------------------------------
TINY = {
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
    "methods": ["baseline"],
    "metrics": ["top1"],
    "explainers": [],
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"batch_size": 8},
    "device": "cpu",
    "data": {"download": False},
}


def folder_tree(root: Path) -> None:
    """ROOT/{train,test}/{cat,dog}/{a,b}.png, 12x10, with 0/255 masks under ROOT/masks/."""
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for stem in ("a", "b"):
                image = root / split / cls / f"{stem}.png"
                mask = root / "masks" / split / cls / f"{stem}.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                mask.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 10), (200, 30 * len(stem), 40)).save(image)
                Image.new("L", (12, 10), 255).save(mask)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


FOLDER_DEFECTS: dict[str, tuple[Callable[[Path], object], str, str]] = {
    # defect, the file the message must name, and a word of the problem
    "missing_mask": (lambda r: (r / "masks/test/dog/b.png").unlink(), "masks/test/dog/b.png", "missing"),
    "missing_split": (lambda r: os.rename(r / "test", r / "tset"), "test", "not a folder"),
    "corrupt_image": (lambda r: truncate(r / "train/dog/a.png"), "train/dog/a.png", "cannot read image"),
    "corrupt_mask": (lambda r: (r / "masks/train/cat/b.png").write_bytes(b"GIF"), "masks/train/cat/b.png", "read mask"),
    "unknown_class": (lambda r: (r / "test/bird").mkdir(), "test/bird", "is not a class"),
    "mask_size": (lambda r: Image.new("L", (12, 11)).save(r / "masks/test/cat/a.png"), "masks/test/cat/a.png", "12x11"),
    "broken_link": (lambda r: (r / "train/cat/c.png").symlink_to(r / "gone.png"), "train/cat/c.png", "missing"),
}


@pytest.mark.parametrize("defect", sorted(FOLDER_DEFECTS))
def test_broken_image_folder_through_run(tmp_path: Path, env: Env, defect: str) -> None:
    root = tmp_path / "data"
    folder_tree(root)
    damage, culprit, problem = FOLDER_DEFECTS[defect]
    damage(root)
    suite = tmp_path / "folder.yaml"
    suite.write_bytes(dump({**TINY, "datasets": [{"name": "folder", "params": {"root": str(root)}}]}))
    assert_rejected(tmp_path, suite, [], [f"{suite}: ", "datasets[0] (folder)", str(root / culprit), problem])
    env.untouched()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def fashion_files(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Four valid gzip IDX files (5 train, 4 test images) and no other copy anywhere."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (directory.parent / "no-system-dir",))

    def no_download(root: Path) -> None:
        raise AssertionError("downloads are disabled")

    monkeypatch.setattr(fashion_mnist, "_fetch", no_download)
    directory.mkdir(parents=True)
    files = {}
    for split, n in (("train", 5), ("test", 4)):
        images, labels = fashion_mnist.FILES[split]
        files[f"{split}_images"] = directory / f"{images}.gz"
        files[f"{split}_labels"] = directory / f"{labels}.gz"
        write_idx(files[f"{split}_images"], np.full((n, 28, 28), 7, np.uint8))
        write_idx(files[f"{split}_labels"], np.arange(n) % 10)
    return files


FASHION_DEFECTS: dict[str, tuple[Callable[[dict[str, Path]], object], str, str]] = {
    "label_out_of_range": (lambda f: write_idx(f["train_labels"], np.arange(6, 11)), "train_labels", "has label 10"),
    "count_mismatch": (lambda f: write_idx(f["test_labels"], np.arange(3)), "test_labels", "3 labels"),
    "truncated": (
        lambda f: f["train_images"].write_bytes(f["train_images"].read_bytes()[:-9]),
        "train_images",
        "cannot read IDX file",
    ),
    "truncated_raw": (
        lambda f: f["test_images"].write_bytes(gzip.decompress(f["test_images"].read_bytes())[:-100]),
        "test_images",
        "truncated",
    ),
    "missing_labels": (lambda f: f["test_labels"].unlink(), "test_images", "t10k-labels-idx1-ubyte[.gz]"),
}


@pytest.mark.parametrize("defect", sorted(FASHION_DEFECTS))
def test_broken_fashion_mnist_through_run(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    data_dir = tmp_path / "fm"
    damage, culprit, problem = FASHION_DEFECTS[defect]
    files = fashion_files(data_dir, monkeypatch)
    damage(files)
    suite = tmp_path / "fm.yaml"
    suite.write_bytes(dump({**TINY, "datasets": ["fashion_mnist"]}))
    expected = [f"{suite}: ", "datasets[0] (fashion_mnist)", files[culprit].name, problem]
    line = assert_rejected(tmp_path, suite, ["--data-dir", str(data_dir)], expected)
    assert str(data_dir) in line
    env.untouched()
