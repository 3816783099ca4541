"""Weight files: read safely (never unpickling code), checked key by key, each problem one line naming the file."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from xbench.errors import CheckpointError
from xbench.models import weights as wts
from xbench.models.base import Backbone
from xbench.registry import BACKBONES


class Payload:
    """Unpickling it would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


class NotATensor:
    """A plain class: not on weights_only's allow list."""

    def __init__(self) -> None:
        self.value = 3


@pytest.fixture(autouse=True)
def _no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory, resnet18_state: dict[str, Tensor]) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18_state, path)
    return path


def fresh_resnet18() -> nn.Module:
    torch.manual_seed(1)
    return torchvision.models.resnet18().eval()


def build(name: str, weights: Path | str) -> Backbone:
    cls = BACKBONES.get(name)
    backbone: Backbone = cls(cls.Params(weights=str(weights)), 3, (0.5,) * 3, (0.5,) * 3)
    return backbone.eval()


def one_line(err: pytest.ExceptionInfo[BaseException], path: Path | str, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def assert_states_equal(got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


# -- bad files: read_state_dict and a backbone build name the file in one line ------------------------------
def missing(tmp: Path, real: Path) -> Path:
    return tmp / "absent.pth"


def empty(tmp: Path, real: Path) -> Path:
    path = tmp / "empty.pth"
    path.touch()
    return path


def truncated(tmp: Path, real: Path) -> Path:
    path = tmp / "truncated.pth"
    data = real.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbage(tmp: Path, real: Path) -> Path:
    path = tmp / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    return path


def a_list(tmp: Path, real: Path) -> Path:
    path = tmp / "list.pth"
    torch.save([torch.zeros(2)], path)
    return path


def non_tensor(tmp: Path, real: Path) -> Path:
    path = tmp / "non_tensor.pth"
    torch.save({"conv1.weight": torch.zeros(2), "epoch": 3}, path)
    return path


BAD_FILES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "missing": (missing, "no such file"),
    "empty": (empty, "empty file"),
    "truncated": (truncated, "not a readable state dict"),
    "garbage": (garbage, "not a readable state dict"),
    "list": (a_list, "holds list"),
    "non_tensor": (non_tensor, "'epoch' is int"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_read(tmp_path: Path, resnet18_file: Path, case: str) -> None:
    make, says = BAD_FILES[case]
    path = make(tmp_path, resnet18_file)
    with pytest.raises(CheckpointError) as err:
        wts.read_state_dict(path, "weights")
    one_line(err, path, says)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_through_a_backbone(tmp_path: Path, resnet18_file: Path, case: str) -> None:
    make, says = BAD_FILES[case]
    path = make(tmp_path, resnet18_file)
    with pytest.raises(CheckpointError) as err:
        build("resnet18", path)
    one_line(err, path, says, "resnet18")


# -- pickles that are more than tensors are refused, never run -------------------------------------------
def torch_saved_payload(path: Path, marker: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload(marker)}, path)


def raw_pickle_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def torch_saved_class(path: Path, marker: Path) -> None:
    torch.save({"a": NotATensor()}, path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("write", [torch_saved_payload, raw_pickle_payload, torch_saved_class])
def test_pickled_code_is_refused_and_not_run(tmp_path: Path, write: Callable[[Path, Path], None]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "payload.pth"
    write(path, marker)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        wts.read_state_dict(path, "weights")
    one_line(err, path, "weights_only")
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        build("resnet18", path)
    one_line(err, path, "weights_only")
    assert not marker.exists()


def test_the_payload_would_run(tmp_path: Path) -> None:
    """The marker test above is meaningful: plain unpickling does run the payload."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# -- good files ----------------------------------------------------------------------------------------
def test_read_state_dict_returns_the_saved_tensors(resnet18_file: Path, resnet18_state: dict[str, Tensor]) -> None:
    assert_states_equal(wts.read_state_dict(resnet18_file), resnet18_state)


@pytest.mark.parametrize("key", wts.WRAPPER_KEYS)
def test_wrapped_state_dict_is_unwrapped(tmp_path: Path, resnet18_state: dict[str, Tensor], key: str) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({key: resnet18_state, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    assert_states_equal(wts.read_state_dict(path), resnet18_state)


def test_wrapped_checkpoint_through_a_backbone(tmp_path: Path, resnet18_file: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": torch.load(resnet18_file, weights_only=True), "epoch": 3}, path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(build("resnet18", path)(x), build("resnet18", resnet18_file)(x), rtol=0, atol=0)


def test_safetensors_round_trip(tmp_path: Path, resnet18_file: Path, resnet18_state: dict[str, Tensor]) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(path))
    assert_states_equal(wts.read_state_dict(path), wts.read_state_dict(resnet18_file))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(build("resnet18", path)(x), build("resnet18", resnet18_file)(x), rtol=0, atol=0)
    cls = BACKBONES.get("resnet18")
    identity = cls.weights_identity(cls.Params(weights=str(path)))
    assert identity == {"name": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def safetensors_parts(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_safetensors(path: Path, header: dict[str, Any], body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def lying_offsets(path: Path) -> None:
    header, body = safetensors_parts(path)
    header["b"]["data_offsets"] = [header["b"]["data_offsets"][0], header["b"]["data_offsets"][1] + 4096]
    write_safetensors(path, header, body)


def overlapping_offsets(path: Path) -> None:
    header, body = safetensors_parts(path)
    header["b"]["data_offsets"] = header["a"]["data_offsets"]
    write_safetensors(path, header, body)


def truncated_body(path: Path) -> None:
    header, body = safetensors_parts(path)
    write_safetensors(path, header, body[: len(body) // 2])


def lying_header_size(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:])


def shape_too_big(path: Path) -> None:
    header, body = safetensors_parts(path)
    header["a"]["shape"] = [64, 64]
    write_safetensors(path, header, body)


@pytest.mark.parametrize(
    "corrupt", [lying_offsets, overlapping_offsets, truncated_body, lying_header_size, shape_too_big]
)
def test_lying_safetensors_is_a_one_line_error(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"a": torch.arange(16.0), "b": torch.ones(4, 4)}, str(path))
    assert sorted(wts.read_state_dict(path)) == ["a", "b"]  # valid before the edit
    corrupt(path)
    with pytest.raises(CheckpointError) as err:
        wts.read_state_dict(path, "weights")
    one_line(err, path, "not a valid safetensors file")


def test_lying_safetensors_through_a_backbone(tmp_path: Path, resnet18_state: dict[str, Tensor]) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet18_state, str(path))
    truncated_body(path)
    with pytest.raises(CheckpointError) as err:
        build("resnet18", path)
    one_line(err, path, "resnet18", "safetensors")


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"one")
    assert wts.file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"other content")
    assert wts.file_sha256(path) == hashlib.sha256(b"other content").hexdigest()
    with pytest.raises(CheckpointError) as err:
        wts.file_sha256(tmp_path / "absent.pth")
    one_line(err, tmp_path / "absent.pth")


@pytest.mark.parametrize(
    ("name", "is_file"),
    [("IMAGENET1K_V1", False), ("a1_in1k", False), ("w.pth", True), ("W.SAFETENSORS", True), ("dir/w", True)],
)
def test_is_file_reference(name: str, is_file: bool) -> None:
    assert wts.is_file_reference(name) is is_file


# -- load_checked: every mismatch named ---------------------------------------------------------------------
def test_load_checked_loads_everything(resnet18_state: dict[str, Tensor]) -> None:
    model = fresh_resnet18()
    wts.load_checked(model, resnet18_state, "w.pth")
    assert_states_equal(model.state_dict(), resnet18_state)


def test_load_checked_casts_float_precision(resnet18_state: dict[str, Tensor]) -> None:
    half = {k: v.half() if v.is_floating_point() else v for k, v in resnet18_state.items()}
    model = fresh_resnet18()
    wts.load_checked(model, half, "w.pth")
    assert model.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.conv1.weight, half["conv1.weight"].float(), rtol=0, atol=0)


def test_wrong_shape_names_the_first_bad_key(resnet18_state: dict[str, Tensor]) -> None:
    state = dict(resnet18_state)
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].reshape(64, 128, 3, 3)
    state["fc.weight"] = state["fc.weight"].reshape(500, 1024)
    before = {k: v.clone() for k, v in fresh_resnet18().state_dict().items()}
    model = fresh_resnet18()
    with pytest.raises(CheckpointError) as err:
        wts.load_checked(model, state, "bad.pth")
    msg = one_line(err, "bad.pth", "2 tensor(s) of the wrong shape", "layer2.0.conv1.weight", "(64, 128, 3, 3)")
    assert "(128, 64, 3, 3)" in msg
    assert "fc.weight" not in msg
    assert_states_equal(model.state_dict(), before)  # nothing half-loaded


def test_resnet34_file_into_resnet18(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet34().state_dict()
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    own = torchvision.models.resnet18().state_dict()
    extra = [k for k in state if k not in own]
    assert extra
    with pytest.raises(CheckpointError) as err:
        build("resnet18", path)
    one_line(err, path, f"{len(extra)} unexpected, e.g. {extra[0]}")


def test_missing_and_unexpected_keys(resnet18_state: dict[str, Tensor]) -> None:
    state = {k: v for k, v in resnet18_state.items() if k != "bn1.running_mean"}
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        wts.load_checked(fresh_resnet18(), state, "bad.pth")
    one_line(err, "bad.pth", "1 missing, e.g. bn1.running_mean", "1 unexpected, e.g. extra.weight")


def test_missing_keys_through_a_backbone(tmp_path: Path, resnet18_state: dict[str, Tensor]) -> None:
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}, path)
    with pytest.raises(CheckpointError) as err:
        build("resnet18", path)
    one_line(err, path, "2 missing, e.g. fc.weight")


def test_wrong_dtype(resnet18_state: dict[str, Tensor]) -> None:
    state = dict(resnet18_state)
    state["bn1.num_batches_tracked"] = torch.tensor(0.5)
    with pytest.raises(CheckpointError) as err:
        wts.load_checked(fresh_resnet18(), state, "bad.pth")
    one_line(err, "bad.pth", "wrong dtype", "bn1.num_batches_tracked")


def test_skip_leaves_a_replaced_layer_as_initialised(resnet18_state: dict[str, Tensor]) -> None:
    model = fresh_resnet18()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    conv1 = model.conv1.weight.clone()
    wts.load_checked(model, resnet18_state, "w.pth", skip=("conv1.",))
    torch.testing.assert_close(model.conv1.weight, conv1, rtol=0, atol=0)
    got = model.state_dict()
    for key, value in resnet18_state.items():
        if not key.startswith("conv1."):
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(CheckpointError) as err:
        wts.load_checked(model, resnet18_state, "w.pth")
    one_line(err, "w.pth", "conv1.weight")
