"""Fuzzed weight, checkpoint, reference and cache files (issue 26).

Hypothesis writes state-dict files (``.pth`` in torch's zip and legacy formats, ``.safetensors``)
from a small model's state dict with entries of the wrong shape or dtype, deleted and extra
entries, values that are no tensors (or sparse, meta, quantized ones), keys that are no strings,
wrappers, pickled code (which must be refused and never run), and then damages some of them:
truncated at a random offset, bytes flipped, a zip re-packed with compressed entries (a zip bomb
for torch), a safetensors header that lies about dtypes, shapes, offsets or its own length.

``read_state_dict`` + ``load_checked`` (what ``backbone: {weights: FILE}`` and a method row's
``checkpoint: FILE`` go through) must load such a file exactly, or raise one
:class:`CheckpointError` line naming it; nothing else may escape, and the pickled code never runs.
The same files through ``xbench run``, as checkpoints and reference models, and damaged cache
entries are in ``test_files_checkpoints.py``, which builds its cases with this module's strategies.
"""

from __future__ import annotations

import functools
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
from hypothesis import strategies as st
from kinds import SLOW_FACTOR, fuzz_kinds
from safetensors.torch import save_file
from torch import nn

from xbench.errors import CheckpointError
from xbench.models.weights import WRAPPER_KEYS, load_checked, read_state_dict

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
    check = functools.partial(check_weights_file, tmp)
    return fuzz_kinds("weights files", WEIGHT_KINDS, weights_case, check, per_kind, derandomize)


def test_fuzzed_weight_files_load_exactly_or_are_refused_in_one_line(tmp_path: Path) -> None:
    tally = fuzz_weights(tmp_path, 12, derandomize=True)
    assert tally["good accepted"] and tally["payload_value refused"] and tally["zip_bomb refused"], tally


@pytest.mark.slow
def test_fuzzed_weight_files_many_examples(tmp_path: Path) -> None:
    fuzz_weights(tmp_path, 12 * SLOW_FACTOR, derandomize=False)
