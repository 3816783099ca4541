"""Fuzzed weight, checkpoint, reference and cache files (issue 26).

Hypothesis writes state-dict files (``.pth`` in torch's zip and legacy formats, ``.safetensors``)
from a small model's state dict with entries of the wrong shape or dtype, deleted and extra
entries, values that are no tensors (or sparse, meta, quantized ones), keys that are no strings,
wrappers, pickled code (which must be refused and never run), and then damages some of them:
truncated at a random offset, bytes flipped, a zip re-packed with compressed entries (a zip bomb
for torch), a safetensors header that lies about dtypes, shapes, offsets or its own length.

* ``read_state_dict`` + ``load_checked`` (what ``backbone: {weights: FILE}`` and a method row's
  ``checkpoint: FILE`` go through): loaded exactly, or one :class:`CheckpointError` line naming
  the file; nothing else may escape, and the pickled code never runs.
* ``xbench run`` with such a ``checkpoint:``: exit 2, one line naming the file and
  ``methods[1].checkpoint``, nothing written; or accepted by ``Plan.check_weights``.
* ``xbench run --reference DIR`` with a damaged manifest or checkpoint: exit 2 before anything
  is written, naming the file; or, for weights that load but do not fit a cell's model, that
  cell's failure naming the file while the other cell finishes (exit 1); or a normal run.
* the cache: a damaged entry (payload or sidecar, with or without a matching hash) is a miss,
  never an error; a run over a damaged cache recomputes and records the same values.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import struct
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from xbench.cli import main
from xbench.engine.cache import Cache, sha256_file
from xbench.engine.plan import Plan
from xbench.errors import CheckpointError
from xbench.models.weights import WRAPPER_KEYS, load_checked, read_state_dict
from xbench.report.records import read_records

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW_FACTOR = 8
# Building the odd tensors (quantized, nested) warns that those APIs are deprecated or prototypes.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
]


class Marker:
    """Pickled code: unpickling it (unsafely) creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


GOOD = {k: v.clone() for k, v in tiny_model().state_dict().items()}
DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8, torch.uint8,
    torch.bool, torch.complex64, torch.float8_e4m3fn, torch.uint16,
]  # fmt: skip
SAFE_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "C64", "U16", "XX"]
SHAPES = st.lists(st.integers(0, 5), max_size=4).map(tuple)
NON_TENSORS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.binary(max_size=5),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers(), st.text(max_size=3)),
)  # fmt: skip

JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


@dataclass
class WeightsCase:
    """A weights file to write: ``state`` saved as ``form``, then ``damage`` applied to its bytes.

    ``must``: "refuse", "accept" or "either"; ``payload``: the file holds pickled code.
    """

    kind: str
    state: Any
    form: str = "zip"
    damage: Callable[[bytes], bytes] | None = None
    must: str = "either"
    payload: bool = False

    @property
    def suffix(self) -> str:
        return ".safetensors" if self.form == "safetensors" else ".pth"

    def write(self, path: Path, marker: Path) -> None:
        if self.form == "safetensors":
            save_file(self.state, str(path))
        elif self.form == "pickle":
            path.write_bytes(pickle.dumps(self.state))
        else:
            torch.save(self.state, path, _use_new_zipfile_serialization=self.form == "zip")
        if self.damage is not None:
            path.write_bytes(self.damage(path.read_bytes()))


def replace_markers(obj: Any, marker: Path) -> Any:
    """``state`` with every ``"<marker>"`` string turned into a :class:`Marker` that would create ``marker``."""
    if obj == "<marker>":
        return Marker(str(marker))
    if isinstance(obj, dict):
        return {k: replace_markers(v, marker) for k, v in obj.items()}
    return obj


# -- damage to the bytes ----------------------------------------------------------------------------------
@st.composite
def damage(draw: st.DrawFn) -> tuple[str, Callable[[bytes], bytes]]:
    how = draw(st.sampled_from(["truncate", "flip", "append"]))
    if how == "truncate":
        fraction = draw(st.floats(0.0, 1.0, exclude_max=True))
        return how, lambda b: b[: int(len(b) * fraction)]
    if how == "flip":
        flips = draw(
            st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8)
        )

        def flip(b: bytes) -> bytes:
            out = bytearray(b)
            for where, xor in flips:
                out[int(where * len(out))] ^= xor
            return bytes(out)

        return how, flip
    tail = draw(st.binary(min_size=1, max_size=64))
    return how, lambda b: b + tail


def deflated(data: bytes, zeros: int = 0) -> bytes:
    """The zip re-packed with deflated entries, and ``zeros`` more bytes of zeros in an entry of their own:
    with them, a zip bomb (a small file that unpacks to much more; torch would allocate all of it)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
        if zeros:
            target.writestr(f"{source.namelist()[0].split('/')[0]}/data/999", b"\0" * zeros)
    return out.getvalue()


@st.composite
def lying_header(draw: st.DrawFn) -> Callable[[bytes], bytes]:
    """A safetensors header whose dtypes, shapes, offsets, metadata or length field lie."""
    lies = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["dtype", "shape", "data_offsets", "entry", "metadata", "length"]),
                st.integers(0, 7),
                st.one_of(
                    st.sampled_from(SAFE_DTYPES),
                    st.lists(st.integers(-(2**64), 2**64), max_size=4),
                    st.integers(-(2**64), 2**65),
                    JSON_VALUES,
                ),
            ),
            min_size=1,
            max_size=3,
        )
    )

    def lie(data: bytes) -> bytes:
        (size,) = struct.unpack("<Q", data[:8])
        header, body = json.loads(data[8 : 8 + size]), data[8 + size :]
        names = sorted(k for k in header if k != "__metadata__")
        length = None
        for what, index, value in lies:
            name = names[index % len(names)]
            if what == "entry":
                header[name] = value
            elif what == "metadata":
                header["__metadata__"] = value
            elif what == "length":
                length = value
            elif isinstance(header[name], dict):
                header[name][what] = value
        text = json.dumps(header).encode()
        length = len(text) if not isinstance(length, int) else length % 2**64
        return struct.pack("<Q", length) + text + body

    return lie


# -- states -----------------------------------------------------------------------------------------------
@st.composite
def weights_case(draw: st.DrawFn, kind: str, good: dict[str, torch.Tensor] = GOOD) -> WeightsCase:
    """A file of ``kind`` (one of :data:`WEIGHT_KINDS`) made from the state dict ``good``."""
    state: Any = {k: v.clone().contiguous() for k, v in good.items()}  # safetensors wants contiguous
    key = draw(st.sampled_from(sorted(good)))
    form = draw(st.sampled_from(["zip", "legacy", "safetensors"]))
    must = "refuse"
    if kind == "good":
        must = "accept"
    elif kind == "shape":
        shape = draw(SHAPES.filter(lambda s: s != tuple(good[key].shape)))
        state[key] = torch.zeros(shape, dtype=good[key].dtype)
    elif kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        state[key] = good[key].to(dtype)
        same_kind = dtype.is_floating_point == good[key].dtype.is_floating_point and not dtype.is_complex
        must = "either" if same_kind else "refuse"  # float32 -> float16 loads (cast); int -> float does not
    elif kind == "missing":
        del state[key]
    elif kind == "extra":
        state[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in good))] = torch.zeros(2)
    elif kind == "wrapped":
        state = {draw(st.sampled_from(WRAPPER_KEYS)): state, "epoch": draw(st.integers(0, 9))}
        form, must = draw(st.sampled_from(["zip", "legacy"])), "accept"
    elif kind == "not_a_tensor":
        state[key] = draw(NON_TENSORS)
        form = draw(st.sampled_from(["zip", "legacy"]))
    elif kind == "odd_tensor":
        odd = draw(st.sampled_from(["sparse", "meta", "quantized", "nested"]))
        base = good[key].float()
        state[key] = {
            "sparse": lambda: base.to_sparse(),
            "meta": lambda: torch.empty(base.shape, device="meta"),
            "quantized": lambda: torch.quantize_per_tensor(base, 0.1, 0, torch.qint8),
            "nested": lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
        }[odd]()
        form = draw(st.sampled_from(["zip", "legacy"]))
    elif kind == "bad_keys":
        state[draw(st.one_of(st.integers(), st.none(), st.tuples(st.integers())))] = torch.zeros(1)
        form = draw(st.sampled_from(["zip", "legacy"]))
    elif kind == "not_a_dict":
        state = draw(st.one_of(NON_TENSORS, st.just(torch.zeros(3)), st.just({}), st.just([good[key]])))
        form = draw(st.sampled_from(["zip", "legacy"]))
    elif kind == "payload":
        where = draw(st.sampled_from(["value", "top", "wrapped", "pickle"]))
        form = "pickle" if where == "pickle" else draw(st.sampled_from(["zip", "legacy"]))
        state = {"value": {**state, key: "<marker>"}, "top": "<marker>", "wrapped": {"state_dict": "<marker>"}}.get(
            where, "<marker>"
        )
        return WeightsCase(f"payload_{where}", state, form, must="refuse", payload=True)
    elif kind == "damaged":
        how, damage_bytes = draw(damage())
        return WeightsCase(f"damaged_{how}", state, form, damage_bytes, must="either")
    elif kind == "deflated":
        return WeightsCase(kind, state, "zip", deflated, must="either")
    elif kind == "zip_bomb":
        zeros = draw(st.integers(1 << 16, 1 << 23))
        return WeightsCase(kind, state, "zip", lambda b: deflated(b, zeros), must="refuse")
    elif kind == "lying_header":
        return WeightsCase(kind, state, "safetensors", draw(lying_header()), must="either")
    return WeightsCase(kind, state, form, must=must)


WEIGHT_KINDS = [
    "good", "shape", "dtype", "missing", "extra", "wrapped", "not_a_tensor", "odd_tensor", "bad_keys", "not_a_dict",
    "payload", "damaged", "deflated", "zip_bomb", "lying_header",
]  # fmt: skip


def unwrap(state: Any) -> Any:
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def write_case(case: WeightsCase, path: Path, marker: Path, tally: Counter[str]) -> bool:
    """Write the file; False (counted) for a state the writer itself refuses (safetensors: sparse, shared, ...)."""
    try:
        if case.payload:
            WeightsCase(case.kind, replace_markers(case.state, marker), case.form).write(path, marker)
        else:
            case.write(path, marker)
    except Exception as err:
        tally[f"{case.kind}: not writable as {case.form} ({type(err).__name__})"] += 1
        return False
    return True


def check_weights_file(tmp: Path, case: WeightsCase, tally: Counter[str]) -> None:
    """``read_state_dict`` + ``load_checked``: the file's tensors, loaded exactly, or one CheckpointError line."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    path, marker = folder / f"w{case.suffix}", folder / "pwned"
    if not write_case(case, path, marker, tally):
        shutil.rmtree(folder)
        return
    model = tiny_model()
    try:
        load_checked(model, read_state_dict(path, "weights"), f"weights {path}")
    except CheckpointError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        assert case.must != "accept", f"{case.kind} must load: {message}"
        tally[f"{case.kind} refused"] += 1
    else:
        assert case.must != "refuse", f"{case.kind} must be refused: {case}"
        written = unwrap(case.state) if case.damage is None else read_state_dict(path)
        loaded = model.state_dict()
        for key, value in written.items():
            assert torch.equal(loaded[key], value.to(loaded[key].dtype)) or value.to(loaded[key].dtype).isnan().any()
        tally[f"{case.kind} accepted"] += 1
    finally:
        assert not marker.exists(), "the pickled code ran"
        shutil.rmtree(folder, ignore_errors=True)


def fuzz_weights(tmp: Path, per_kind: int, derandomize: bool) -> Counter[str]:
    tally: Counter[str] = Counter()
    for kind in WEIGHT_KINDS:

        @settings(FUZZ, max_examples=per_kind, derandomize=derandomize)
        @given(case=weights_case(kind))
        def one(case: WeightsCase) -> None:
            tally["examples"] += 1
            check_weights_file(tmp, case, tally)

        one()
    print(f"\nweights files: {dict(sorted(tally.items()))}")
    return tally


def test_fuzzed_weight_files_load_exactly_or_are_refused_in_one_line(tmp_path: Path) -> None:
    tally = fuzz_weights(tmp_path, 12, derandomize=True)
    assert tally["good accepted"] and tally["payload_value refused"] and tally["zip_bomb refused"], tally


@pytest.mark.slow
def test_fuzzed_weight_files_many_examples(tmp_path: Path) -> None:
    fuzz_weights(tmp_path, 12 * SLOW_FACTOR, derandomize=False)


# -- through xbench run: checkpoint and reference files -------------------------------------------------
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

    if not rehash:  # the manifest's sha256 differs
        expected = "refuse"
    elif case.form == "safetensors":  # under a .pt name: torch.load reads some (it sniffs the format), not others
        expected = "either"
    elif case.kind in ("good", "wrapped", "deflated", "dtype") or case.kind.startswith("damaged_append"):
        expected = "either"
    elif case.kind in ("shape", "missing", "extra"):
        expected = "cell"
    else:
        expected = "either" if case.kind in ("damaged_flip", "lying_header") else "refuse"
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
    tally: Counter[str] = Counter()
    for kind in REFERENCE_KINDS:

        @settings(FUZZ, max_examples=per_kind, derandomize=derandomize)
        @given(case=reference_case(kind, run))
        def one(case: tuple[str, Callable[[Path], None], str]) -> None:
            tally["examples"] += 1
            check_reference(cli, tmp, run, case, tally)

        one()
    print(f"\nreference folders: {dict(sorted(tally.items()))}")
    return tally


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
