from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from xbench.data import fashion_mnist as fm
from xbench.data.base import ImageSplit, NoParams
from xbench.errors import DataError, DataNotFoundError

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write ``array`` (uint8) in the IDX format, as the original files are."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def make_split(directory: Path, split: str, n: int, seed: int, compress: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    directory.mkdir(parents=True, exist_ok=True)
    image_stem, label_stem = fm.FILES[split]
    write_idx(directory / image_stem, images, compress)
    write_idx(directory / label_stem, labels, compress)
    return images, labels


@pytest.fixture
def no_system_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine may have Debian's copy in /usr/share/datasets; hide it.
    monkeypatch.setattr(fm, "SYSTEM_DIRS", (tmp_path / "no-system",))


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    monkeypatch.setattr(fm, "_fetch", calls.append)
    return calls


def load(split: str, data_dir: Path | None = None, download: bool = False) -> ImageSplit:
    return fm.FashionMNIST(NoParams(), data_dir=data_dir, download=download).load(split)  # type: ignore[arg-type]


@pytest.mark.parametrize("compress", [True, False])
def test_round_trips_gzip_and_raw_idx(tmp_path: Path, compress: bool, no_system_dirs: None) -> None:
    train_images, train_labels = make_split(tmp_path / "fashion-mnist", "train", 13, seed=0, compress=compress)
    test_images, test_labels = make_split(tmp_path / "fashion-mnist", "test", 7, seed=1, compress=compress)

    train, test = load("train", tmp_path), load("test", tmp_path)
    for split, images, labels in ((train, train_images, train_labels), (test, test_images, test_labels)):
        assert split.images.shape == (len(labels), 1, 28, 28) and split.images.dtype == torch.float32
        assert torch.equal((split.images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images))
        assert split.labels.dtype == torch.int64
        assert split.labels.tolist() == labels.tolist()
        assert split.masks is None
        assert split.source == str(tmp_path / "fashion-mnist")
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert train.mean == (0.2860,) and train.std == (0.3530,)


def test_reads_torchvision_layout(tmp_path: Path, no_system_dirs: None) -> None:
    _, labels = make_split(tmp_path / "FashionMNIST" / "raw", "test", 5, seed=2, compress=False)
    assert load("test", tmp_path).labels.tolist() == labels.tolist()


def test_prefers_uncompressed_over_gzip(tmp_path: Path, no_system_dirs: None) -> None:
    make_split(tmp_path, "test", 5, seed=3, compress=True)
    _, raw_labels = make_split(tmp_path, "test", 6, seed=4, compress=False)
    assert load("test", tmp_path).labels.tolist() == raw_labels.tolist()


def test_xbench_data_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_dirs: None) -> None:
    _, labels = make_split(tmp_path / "env", "test", 4, seed=5, compress=True)
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env"))
    assert load("test").labels.tolist() == labels.tolist()


def test_data_dir_takes_precedence_over_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_dirs: None
) -> None:
    make_split(tmp_path / "env", "test", 4, seed=5, compress=True)
    _, arg_labels = make_split(tmp_path / "arg", "test", 9, seed=6, compress=True)
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env"))
    split = load("test", tmp_path / "arg")
    assert len(split) == 9 and split.labels.tolist() == arg_labels.tolist()


def test_missing_everywhere_without_download(tmp_path: Path, no_system_dirs: None, no_fetch: list[Path]) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load("train", tmp_path / "empty", download=False)
    message = str(info.value)
    assert no_fetch == []
    assert "\n" not in message
    assert "dataset-fashion-mnist" in message and "XBENCH_DATA" in message
    assert "train-images-idx3-ubyte[.gz]" in message
    assert str(tmp_path / "empty") in message and str(tmp_path / "no-system") in message


def test_failed_download_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_dirs: None) -> None:
    calls: list[Path] = []

    def offline(root: Path) -> None:
        calls.append(root)
        raise URLError("Name or service not known")

    monkeypatch.setattr(fm, "_fetch", offline)
    with pytest.raises(DataNotFoundError, match=r"failed.*Name or service not known.*dataset-fashion-mnist"):
        load("test", tmp_path / "dl", download=True)
    assert calls == [tmp_path / "dl"]


def test_download_lands_in_torchvision_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_dirs: None
) -> None:
    expected: dict[str, np.ndarray] = {}

    def fake_torchvision(root: Path) -> None:
        for i, split in enumerate(("train", "test")):
            expected[split] = make_split(root / "FashionMNIST" / "raw", split, 3 + i, seed=i, compress=True)[1]

    monkeypatch.setattr(fm, "_fetch", fake_torchvision)
    split = load("test", tmp_path / "dl", download=True)
    assert split.labels.tolist() == expected["test"].tolist()
    assert split.source == str(tmp_path / "dl" / "FashionMNIST" / "raw")


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*truncated"):
        fm.read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=re.escape(str(path))):
        fm.read_idx(path)


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"<html>not a dataset</html>")
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is not an IDX file"):
        fm.read_idx(path)


def test_mismatched_counts_and_bad_labels_are_errors(tmp_path: Path, no_system_dirs: None) -> None:
    make_split(tmp_path, "test", 5, seed=0, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(DataError, match=r"5 images but .* 4 labels"):
        load("test", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(5, 10, np.uint8), compress=False)
    with pytest.raises(DataError, match="label 10"):
        load("test", tmp_path)


def test_read_idx_handles_wider_types(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + values.tobytes())
    assert fm.read_idx(path).tolist() == [[1, -2], [300, 4]]


@pytest.mark.skipif(not (REAL_DIR / "t10k-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent")
def test_real_debian_files(tmp_path: Path, no_fetch: list[Path]) -> None:
    train, test = load("train", tmp_path / "empty"), load("test", tmp_path / "empty")
    assert train.source == str(REAL_DIR)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert abs(float(train.images.mean()) - 0.2860) < 1e-3
    assert abs(float(train.images.std()) - 0.3530) < 1e-3


def test_header_whose_size_overflows_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31))  # 2**93 bytes, 0 in int64
    with pytest.raises(DataError, match=f"IDX file {re.escape(str(path))} has 0 data bytes.*truncated or corrupt"):
        fm.read_idx(path)


def test_truncated_file_through_load_names_it(tmp_path: Path, no_system_dirs: None) -> None:
    make_split(tmp_path, "test", 6, seed=0, compress=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-28])  # one row of the last image
    with pytest.raises(DataError, match=rf"{re.escape(str(images))} has 4676 data bytes .* needs 4704 \(truncated"):
        load("test", tmp_path)


def test_empty_split_is_an_error(tmp_path: Path, no_system_dirs: None) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(0, np.uint8), compress=True)
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 't10k-images-idx3-ubyte.gz'))} holds no images"):
        load("test", tmp_path)


def test_wrong_shapes_and_types_name_the_file(tmp_path: Path, no_system_dirs: None) -> None:
    make_split(tmp_path, "test", 4, seed=0, compress=False)
    images, labels = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(images, np.zeros((4, 32, 32), np.uint8), compress=False)
    with pytest.raises(DataError, match=rf"{re.escape(str(images))} should hold uint8 images .*, not uint8 \(4, 32"):
        load("test", tmp_path)
    make_split(tmp_path, "test", 4, seed=0, compress=False)
    labels.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 4) + np.arange(4, dtype=">i4").tobytes())
    with pytest.raises(DataError, match=rf"{re.escape(str(labels))} should hold uint8 labels .* not int32 \(4,\)"):
        load("test", tmp_path)


def test_incomplete_folder_names_the_missing_file(tmp_path: Path, no_system_dirs: None, no_fetch: list[Path]) -> None:
    make_split(tmp_path / "fm", "test", 4, seed=0, compress=True)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load("test", tmp_path / "fm")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'fm'} has t10k-images-idx3-ubyte.gz but not t10k-labels-idx1-ubyte[.gz]; ")
    assert "downloads are disabled" in message and "\n" not in message
    # The other split's files are not "missing" while the test split is what is loaded.
    assert "train-images" not in message.split(";")[0]
