from __future__ import annotations

import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from xbench.data import cifar
from xbench.data.base import ImageSplit, NoParams
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS


def py2_pickle(obj: Any) -> bytes:
    """Encode ``obj`` the way Python 2's cPickle (protocol 2) wrote CIFAR's files.

    The real files hold Python 2 ``str`` (read back as bytes) and numpy arrays
    rebuilt through ``numpy.core.multiarray._reconstruct``; Python 3 cannot
    write that format, so it is spelled out opcode by opcode here.
    """

    def enc(o: Any) -> bytes:
        if o is None:
            return b"N"
        if isinstance(o, bool):
            return b"\x88" if o else b"\x89"
        if isinstance(o, int):
            return b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o)
        if isinstance(o, bytes):
            return b"U" + bytes([len(o)]) + o if len(o) < 256 else b"T" + struct.pack("<I", len(o)) + o
        if isinstance(o, tuple):
            return b"(" + b"".join(enc(x) for x in o) + b"t"
        if isinstance(o, list):
            return b"]" + (b"(" + b"".join(enc(x) for x in o) + b"e" if o else b"")
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        if isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            new = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + enc((0,))[1:-1] + b"\x85"
            new += enc(b"b") + b"\x87R"
            dtype = b"cnumpy\ndtype\n" + enc(b"u1") + enc(0) + enc(1) + b"\x87R"
            dtype += enc((3, b"|", None, None, None, -1, -1, 0)) + b"b"
            state = b"(" + enc(1) + enc(o.shape) + dtype + enc(False) + enc(o.tobytes()) + b"t"
            return new + state + b"b"
        raise TypeError(type(o))

    return b"\x80\x02" + enc(obj) + b"."


def dump(path: Path, obj: Any, protocol: int | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle(obj) if protocol == "py2" else pickle.dumps(obj, protocol=int(protocol)))


def write_cifar10(root: Path, n: int, protocol: int | str = "py2") -> dict[str, np.ndarray]:
    """Write a tiny cifar-10-batches-py folder; returns the expected data and labels per split."""
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    expected: dict[str, list[np.ndarray]] = {
        "train_data": [],
        "train_labels": [],
        "test_data": [],
        "test_labels": [],
    }
    for name in [*cifar.Cifar10.train_files, "test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        dump(
            folder / name,
            {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * n},
            protocol,
        )
        split = "test" if name == "test_batch" else "train"
        expected[f"{split}_data"].append(data)
        expected[f"{split}_labels"].append(np.array(labels))
    names = [f"class{i}".encode() for i in range(10)]
    dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072},
        protocol,
    )
    return {k: np.concatenate(v) for k, v in expected.items()}


def load(name: str, split: str, data_dir: Path | None, download: bool = False) -> ImageSplit:
    cls = DATASETS.get(name)
    return cls(NoParams(), data_dir=data_dir, download=download).load(split)  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_round_trips_pixels_and_labels(tmp_path: Path, protocol: int | str) -> None:
    expected = write_cifar10(tmp_path, n=3, protocol=protocol)
    train, test = load("cifar10", "train", tmp_path), load("cifar10", "test", tmp_path)

    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.labels.tolist() == expected["train_labels"].tolist()
    assert test.labels.tolist() == expected["test_labels"].tolist()
    # A row is 1024 red, 1024 green, 1024 blue values, each plane row-major.
    c, r, col = 1, 5, 7
    for i in range(15):
        assert round(float(train.images[i, c, r, col]) * 255) == expected["train_data"][i, 1024 * c + 32 * r + col]
    pixels = (train.images * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels.reshape(15, 3072), expected["train_data"])
    assert train.classes == [f"class{i}" for i in range(10)]
    assert train.masks is None and train.source == str(tmp_path / "cifar-10-batches-py")
    assert train.mean == (0.4914, 0.4822, 0.4465)


def test_cifar10_channel_layout_single_pixel(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n=1)
    folder = tmp_path / "cifar-10-batches-py"
    data = np.zeros((1, 3072), np.uint8)
    data[0, 2 * 1024 + 3 * 32 + 30] = 200  # blue channel, row 3, column 30
    dump(folder / "test_batch", {b"labels": [4], b"data": data}, "py2")
    image = load("cifar10", "test", tmp_path).images[0]
    assert float(image[2, 3, 30]) == pytest.approx(200 / 255)
    assert int((image > 0).sum()) == 1


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar100" / "cifar-100-python"  # the <root>/cifar100/<folder> layout
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for name in ("train", "test"):
        dump(folder / name, {b"data": data, b"fine_labels": [99, 3], b"coarse_labels": [19, 1]}, "py2")
    fine = [f"fine{i}".encode() for i in range(100)]
    dump(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, "py2")
    split = load("cifar100", "train", tmp_path)
    assert split.labels.tolist() == [99, 3]
    assert split.num_classes == 100 and split.classes[99] == "fine99"
    assert float(split.images[1, 0, 0, 1]) == pytest.approx(((3072 + 1) % 256) / 255)
    assert split.mean == (0.5071, 0.4865, 0.4409)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n=2)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    with pytest.raises(DataError, match=f"{re.escape(str(bad))}.*refusing to load global (posix|os)\\.system"):
        load("cifar10", "test", tmp_path)
    assert not marker.exists()
    # The payload really would run under a plain pickle.load: the test is not vacuous.
    pickle.loads(bad.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "scalar")])
def test_only_array_globals_are_allowed(tmp_path: Path, target: tuple[str, str]) -> None:
    path = tmp_path / "evil"
    path.write_bytes(b"\x80\x02c" + f"{target[0]}\n{target[1]}\n".encode() + b".")
    with pytest.raises(DataError, match=f"unsafe.*{re.escape(str(path))}"):
        cifar.load_pickle(path)


def test_malformed_batches_are_data_errors(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n=2)
    folder = tmp_path / "cifar-10-batches-py"
    dump(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "py2")
    with pytest.raises(DataError, match="test_batch should hold uint8 'data' of shape"):
        load("cifar10", "test", tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "py2")
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        load("cifar10", "test", tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02}(U\x04data")  # truncated
    with pytest.raises(DataError, match="test_batch"):
        load("cifar10", "test", tmp_path)
    dump(folder / "batches.meta", [b"not", b"a", b"dict"], "py2")
    with pytest.raises(DataError, match=r"batches\.meta holds a list"):
        load("cifar10", "test", tmp_path)


@pytest.mark.parametrize(
    "name, archive", [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz")]
)
def test_missing_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, archive: str) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(cifar.CifarDataset, "_fetch", lambda self, root: calls.append(root))
    with pytest.raises(DataNotFoundError) as info:
        load(name, "test", tmp_path / "empty", download=False)
    assert calls == []
    message = str(info.value)
    assert archive in message and "XBENCH_DATA" in message and str(tmp_path / "empty") in message


def test_download_fills_the_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar.CifarDataset, "_fetch", lambda self, root: write_cifar10(root, n=2))
    split = load("cifar10", "test", tmp_path / "dl", download=True)
    assert len(split) == 2 and split.source == str(tmp_path / "dl" / "cifar-10-batches-py")
