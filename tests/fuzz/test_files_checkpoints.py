"""Fuzzed checkpoint, reference and cache files through ``xbench run`` (issue 26).

The weight files of ``test_files_weights.py`` (wrong shapes and dtypes, missing and extra
entries, non-tensors, pickled code, truncated and flipped bytes, zip bombs, lying safetensors
headers), made from a tiny suite's own trained model, go through whole runs in-process:

* a method row's ``checkpoint: FILE``: exit 2, one line naming the file and
  ``methods[1].checkpoint``, nothing written; or accepted by ``Plan.check_weights`` (the test
  stops the run there);
* ``--reference DIR`` with a damaged manifest (bytes, values of the wrong type, deleted keys,
  file names that leave the folder) or checkpoint (with the manifest's sha256 made to match, so
  that the contents are what is checked): exit 2 before anything is written, naming the file;
  or, for weights that load but do not fit a cell's model, that cell's recorded failure naming
  the file while the other cell finishes (exit 1); or a normal run;
* the cache: a damaged entry (payload or ``.json`` sidecar) is a miss, never an error; a run
  over a damaged cache recomputes and records the same values.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import pickle
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kinds import FUZZ, SLOW_FACTOR, fuzz_kinds
from test_files_weights import (
    GOOD,
    JSON_VALUES,
    WEIGHT_KINDS,
    Marker,
    WeightsCase,
    damage,
    weights_case,
    write_case,
)

from xbench.cli import main
from xbench.engine.cache import Cache, sha256_file
from xbench.engine.plan import Plan
from xbench.report.records import read_records

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
]


# -- a tiny suite's run -------------------------------------------------
TINY_SUITE: dict[str, Any] = {
    "name": "fuzz",
    "datasets": [{"name": "synthetic_shapes", "params": {"n_train": 32, "n_test": 16, "image_size": 16, "seed": 0}}],
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
    "methods": ["baseline", "egt"],
    "metrics": ["top1"],
    "explainers": [],
    "seeds": [0],
    "training": {"epochs": 1, "batch_size": 16},
    "resources": {"cpus": 1},
    "device": "cpu",
}
BASELINE_CELL = "synthetic_shapes/baseline/seed0"


class Accepted(Exception):
    """``Plan.check_weights`` passed: the file is accepted, and the test stops the run there."""


@pytest.fixture
def stop_after_check_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    check = Plan.check_weights

    def checked_then_stop(self: Plan, *args: Any, **kwargs: Any) -> None:
        check(self, *args, **kwargs)
        raise Accepted

    monkeypatch.setattr(Plan, "check_weights", checked_then_stop)


@dataclass(frozen=True)
class TinyRun:
    """A run of :data:`TINY_SUITE`: its suite file, records, cache and exported reference folder."""

    suite: Path
    records: list[Any]
    cache: Path
    reference: Path

    def state(self, cell: str) -> dict[str, torch.Tensor]:
        entry = json.loads((self.reference / "manifest.json").read_text())["cells"][cell]
        return dict(torch.load(self.reference / entry["file"], weights_only=True))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    tmp = tmp_path_factory.mktemp("tiny")
    suite = write_suite(tmp / "s.yaml")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([*run_args(suite, tmp), "--export-reference", str(tmp / "reference")])
    assert code == 0, out.getvalue()
    return TinyRun(suite, read_records(tmp / "out" / "records.jsonl"), tmp / "cache", tmp / "reference")


def write_suite(path: Path, **changes: Any) -> Path:
    path.write_text(yaml.safe_dump({**TINY_SUITE, **changes}, sort_keys=False), encoding="utf-8")
    return path


def run_args(suite: Path, root: Path, *extra: str) -> list[str]:
    out, cache = root / "out", root / "cache"
    return ["run", str(suite), "--output", str(out), "--cache-dir", str(cache), "--no-progress", *extra]


def test_fuzzed_checkpoints_through_run(
    cli: Any, tmp_path: Path, tiny_run: TinyRun, stop_after_check_weights: None
) -> None:
    """A method row's ``checkpoint:``: exit 2 naming the file and the key with nothing written, or accepted."""
    tally: Counter[str] = Counter()
    good = tiny_run.state(BASELINE_CELL)
    for kind in WEIGHT_KINDS:

        @settings(FUZZ, max_examples=2)
        @given(case=weights_case(kind, good))
        def one(case: WeightsCase) -> None:
            root = Path(tempfile.mkdtemp(dir=tmp_path))
            path, marker = root / f"ckpt{case.suffix}", root / "pwned"
            if not write_case(case, path, marker, tally):
                return
            row = {"name": "baseline", "label": "b2", "checkpoint": str(path)}
            suite = write_suite(root / "s.yaml", methods=["baseline", row])
            before = cli.snapshot(root)
            try:
                code, stdout, stderr = cli.run(run_args(suite, root))
            except Accepted:
                assert case.must != "refuse", f"{case.kind} must be refused"
                tally[f"{case.kind} accepted"] += 1
            else:
                line = cli.error_line(code, stdout, stderr, str(path))
                assert f"{suite}: methods[1].checkpoint" in line, line
                assert case.must != "accept", stderr
                assert cli.snapshot(root) == before, "files were written"
                tally[f"{case.kind} refused"] += 1
            assert not marker.exists(), "the pickled code ran"

        one()
    print(f"\ncheckpoints through run: {dict(sorted(tally.items()))}")
    assert tally["good accepted"] and tally["shape refused"], tally


# -- reference folders ---------------------------------------------------------------------------------
MANIFEST_NAMES = ["../escape.pt", "/etc/passwd", "", ".", "..", "sub/x.pt", "missing.pt", "manifest.json", 7, None]


@st.composite
def reference_case(draw: st.DrawFn, kind: str, run: TinyRun) -> tuple[str, Callable[[Path], None], str]:
    """``(kind, damage to a copy of the reference folder, expected outcome)``; outcomes: "refuse" (exit 2),
    "cell" (the baseline cell fails naming its file, the other cell finishes: exit 1), "either"."""
    manifest = json.loads((run.reference / "manifest.json").read_text())
    cells = sorted(manifest["cells"])

    def write(folder: Path, data: Any) -> None:
        (folder / "manifest.json").write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    if kind == "manifest_bytes":
        how, damage_bytes = draw(damage())
        text = json.dumps(manifest).encode()
        return f"manifest_{how}", lambda f: write(f, damage_bytes(text)), "either"
    if kind == "manifest_value":
        paths = [
            (),
            ("cells",),
            *(("cells", c) for c in cells),
            *(("cells", c, k) for c in cells for k in ("file", "sha256")),
        ]
        path = draw(st.sampled_from([*paths, ("format",), ("version",)]))
        value = draw(st.one_of(JSON_VALUES, st.just(DELETE_KEY)))
        changed = json.loads(json.dumps(manifest))
        node = changed
        for part in path[:-1]:
            node = node[part]
        if not path:
            changed = value
        elif value is DELETE_KEY:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
        return "manifest_value", lambda f: write(f, changed if changed is not DELETE_KEY else b""), "either"
    if kind == "file_name":
        name = draw(st.sampled_from(MANIFEST_NAMES))
        cell = draw(st.sampled_from(cells))
        changed = json.loads(json.dumps(manifest))
        changed["cells"][cell]["file"] = name
        return "file_name", lambda f: write(f, changed), "refuse"
    if kind == "swap":  # the egt cell's weights (a valid file) as the baseline's: they do not fit its model
        changed = json.loads(json.dumps(manifest))
        changed["cells"][BASELINE_CELL] = changed["cells"]["synthetic_shapes/egt/seed0"]
        return "swap", lambda f: write(f, changed), "cell"
    case = draw(weights_case(draw(st.sampled_from(WEIGHT_KINDS)), run.state(BASELINE_CELL)))
    rehash = draw(st.booleans())

    def replace(folder: Path) -> None:
        entry = manifest["cells"][BASELINE_CELL]
        path = folder / entry["file"]
        path.unlink()
        if not write_case(case, path, folder / "pwned", Counter()):
            return
        if rehash:  # the manifest agrees with the new file: its contents are what is checked
            changed = json.loads(json.dumps(manifest))
            changed["cells"][BASELINE_CELL]["sha256"] = sha256_file(path)
            write(folder, changed)

    # Under a .pt name torch.load reads some safetensors files (it sniffs the format), not others.
    loads = ("good", "wrapped", "deflated", "dtype", "damaged_append", "damaged_flip", "lying_header")
    if not rehash:  # the manifest's sha256 differs
        expected = "refuse"
    elif case.form == "safetensors" or case.kind in loads:
        expected = "either"
    elif case.kind in ("shape", "missing", "extra"):
        expected = "cell"
    else:
        expected = "refuse"
    return f"checkpoint_{case.kind}{'_rehashed' if rehash else ''}", replace, expected


DELETE_KEY = object()
REFERENCE_KINDS = ["manifest_bytes", "manifest_value", "file_name", "swap", "checkpoint"]


def check_reference(
    cli: Any, tmp: Path, run: TinyRun, case: tuple[str, Callable[[Path], None], str], tally: Counter[str]
) -> None:
    kind, change, expected = case
    root = Path(tempfile.mkdtemp(dir=tmp))
    reference = root / "reference"
    shutil.copytree(run.reference, reference)
    change(reference)
    before = cli.snapshot(root)
    code, stdout, stderr = cli.run(run_args(run.suite, root, "--reference", str(reference)))
    assert "Traceback" not in stderr, stderr[:3000]
    if code == 2:
        cli.error_line(code, stdout, stderr, str(reference))
        assert expected in ("refuse", "either"), f"{kind}: expected {expected}, got {stderr}"
        assert cli.snapshot(root) == before, f"{kind}: files were written"
        tally[f"{kind} refused (exit 2)"] += 1
    else:
        records = read_records(root / "out" / "records.jsonl")
        failed = [r for r in records if r.status == "failed"]
        if code == 1:
            assert failed and all(str(reference) in (r.error or "") for r in failed), [r.error for r in failed]
            assert any(r.status == "ok" for r in records), "no other cell finished"
            assert expected in ("cell", "either"), f"{kind}: expected {expected}, got a failed cell"
            tally[f"{kind} failed its cell (exit 1)"] += 1
        else:
            assert code == 0 and not failed, (code, stderr[:2000])
            assert expected == "either", f"{kind}: expected {expected}, got a clean run"
            tally[f"{kind} accepted (exit 0)"] += 1
    assert not (reference / "pwned").exists(), "the pickled code ran"
    shutil.rmtree(root, ignore_errors=True)


def fuzz_references(cli: Any, tmp: Path, run: TinyRun, per_kind: int, derandomize: bool) -> Counter[str]:
    check = functools.partial(check_reference, cli, tmp, run)
    strategy = functools.partial(reference_case, run=run)
    return fuzz_kinds("reference folders", REFERENCE_KINDS, strategy, check, per_kind, derandomize)


def test_fuzzed_reference_folders(cli: Any, tmp_path: Path, tiny_run: TinyRun) -> None:
    tally = fuzz_references(cli, tmp_path, tiny_run, 2, derandomize=True)
    assert tally["swap failed its cell (exit 1)"] and tally["file_name refused (exit 2)"], tally


@pytest.mark.slow
def test_fuzzed_reference_folders_many_examples(cli: Any, tmp_path: Path, tiny_run: TinyRun) -> None:
    fuzz_references(cli, tmp_path, tiny_run, 2 * SLOW_FACTOR, derandomize=False)


# -- the cache ----------------------------------------------------------------------------------------------
@st.composite
def cache_damage(draw: st.DrawFn) -> tuple[str, Callable[[Path], None]]:
    """Damage to one cache entry (its payload or its ``.json`` sidecar), maybe with the hash made to match."""
    part = draw(st.sampled_from(["payload", "sidecar"]))
    how = draw(st.sampled_from(["truncate", "flip", "append", "empty", "delete", "json", "payload_pickle"]))
    rehash = part == "payload" and draw(st.booleans())
    value = draw(JSON_VALUES)
    cut = draw(st.floats(0, 1, exclude_max=True))
    flips = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4))

    def apply(payload: Path) -> None:
        target = payload if part == "payload" else payload.with_name(payload.name + ".json")
        data = target.read_bytes()
        if how == "truncate":
            target.write_bytes(data[: int(len(data) * cut)])
        elif how == "flip" and data:
            out = bytearray(data)
            for where, xor in flips:
                out[int(where * len(out))] ^= xor
            target.write_bytes(bytes(out))
        elif how == "append":
            target.write_bytes(data + b"\x00garbage")
        elif how == "empty":
            target.write_bytes(b"")
        elif how == "delete":
            target.unlink()
        elif how == "json":
            target.write_text(json.dumps(value if part == "payload" else {"sha256": value}))
        else:
            target.write_bytes(pickle.dumps(Marker(str(payload.parent / "pwned"))))
        if rehash and target.exists():
            meta = payload.with_name(payload.name + ".json")
            meta.write_text(json.dumps({"sha256": sha256_file(payload)}))

    return f"{part}_{how}{'_rehashed' if rehash else ''}", apply


def test_fuzzed_cache_entries_are_misses(tmp_path: Path) -> None:
    """A damaged entry loads as None (recomputed), or, rehashed to match, as what it now holds; never raises."""
    tally: Counter[str] = Counter()

    @settings(FUZZ, max_examples=60)
    @given(damage=cache_damage(), entry=st.sampled_from(["model", "json", "bytes"]))
    def one(damage: tuple[str, Callable[[Path], None]], entry: str) -> None:
        name, apply = damage
        cache = Cache(Path(tempfile.mkdtemp(dir=tmp_path)))
        key = "ab" * 32
        saved = {
            "model": lambda: cache.save_model(key, GOOD, {}),
            "json": lambda: cache.save_json("metrics", key, {"results": [1, 2]}),
            "bytes": lambda: cache.save_bytes("reports", key, b"tar bytes", {}),
        }[entry]()
        apply(saved)
        loaded = {
            "model": lambda: cache.load_model(key),
            "json": lambda: cache.load_json("metrics", key),
            "bytes": lambda: cache.load_bytes("reports", key),
        }[entry]()
        assert not (saved.parent / "pwned").exists(), "the pickled code ran"
        if not name.endswith("_rehashed"):
            assert loaded is None, f"{name}: a damaged {entry} entry was used"
        tally[f"{entry} {name}: {'miss' if loaded is None else 'loaded'}"] += 1

    one()
    print(f"\ncache entries: {dict(sorted(tally.items()))}")


def test_a_run_over_a_damaged_cache_recomputes_the_same_values(cli: Any, tmp_path: Path, tiny_run: TinyRun) -> None:
    """Every entry of a filled cache damaged (payloads and sidecars): the run recomputes, exit 0, same values."""
    expected = {(r.method, r.metric): r.value for r in tiny_run.records}

    @settings(FUZZ, max_examples=3)
    @given(damages=st.lists(cache_damage(), min_size=12, max_size=12))
    def one(damages: list[tuple[str, Callable[[Path], None]]]) -> None:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        shutil.copytree(tiny_run.cache, root / "cache")
        entries = sorted(p for p in (root / "cache").rglob("*") if p.is_file() and not p.name.endswith(".json"))
        entries += sorted(p for p in (root / "cache" / "metrics").rglob("*.json") if not p.name.endswith(".json.json"))
        assert len(entries) >= 3, entries
        for entry, (name, apply) in zip(entries, damages, strict=False):
            if name.endswith("_rehashed") and "json" not in name and "pickle" not in name and "truncate" not in name:
                continue  # a readable file that matches its hash is, to the cache, a valid entry
            apply(entry)
        code, _, stderr = cli.run(run_args(tiny_run.suite, root))
        assert code == 0 and "Traceback" not in stderr, stderr[:3000]
        again = read_records(root / "out" / "records.jsonl")
        assert {(r.method, r.metric): r.value for r in again} == expected

    one()
