"""Fashion-MNIST: 70,000 28x28 grey images of clothing in 10 classes, no masks.

Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747 (2017).

The four IDX files are read directly (gzip or not), so the data can come from
Debian's ``dataset-fashion-mnist``, a folder of files, or a torchvision download;
see :mod:`xbench.data.locate` for the search order.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.data.locate import candidate_roots, expand, locate_dataset
from xbench.errors import DataError, DataNotFoundError
from xbench.params import NoParams
from xbench.registry import DATASETS

CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUTS = ("", "fashion-mnist", "FashionMNIST/raw")
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
HOW_TO = (
    "apt-get install dataset-fashion-mnist, or put the four IDX files (train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) in {dir}, "
    "or set XBENCH_DATA to a folder holding them, or run with internet and downloads enabled so "
    "torchvision downloads it"
)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a numpy array.

    Raises:
        DataError: the file is unreadable, truncated, or not IDX; the message names it.
    """
    try:
        raw = path.read_bytes()
        # Detect gzip by its magic bytes, not the suffix: renamed files are common.
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a corrupt header must not overflow
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {path} has {len(raw) - header} data bytes but its header {shape} needs {expected}"
            " (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, preferring the uncompressed file."""
    for name in (stem, stem + ".gz"):
        path = directory / name
        if path.is_file():
            return path
    return None


@DATASETS.register("fashion_mnist")
class FashionMNIST(Dataset[NoParams]):
    """Fashion-MNIST from its IDX files; 1x28x28, 10 classes, no masks."""

    name: ClassVar[str] = "fashion_mnist"
    description: ClassVar[str] = "Fashion-MNIST, 28x28 grey clothing images, 10 classes (no masks)"
    has_masks: ClassVar[bool] = False
    mean: ClassVar[tuple[float, ...]] = (0.2860,)
    std: ClassVar[tuple[float, ...]] = (0.3530,)

    def load(self, split: Split) -> ImageSplit:
        """Load ``split`` ("train": 60,000 images, "test": 10,000)."""
        if split not in FILES:
            raise DataError(f"fashion_mnist has no split {split!r}; use 'train' or 'test'")
        stems = FILES[split]
        try:
            directory = locate_dataset(
                "fashion_mnist",
                self.data_dir,
                layouts=LAYOUTS,
                predicate=lambda d: all(find_idx(d, s) is not None for s in stems),
                download=self.download,
                fetch=_fetch,
                system=SYSTEM_DIRS,
                how_to=HOW_TO,
            )
        except DataNotFoundError as err:
            raise DataNotFoundError(f"{_incomplete(self.data_dir, stems)}{err}") from err
        image_file, label_file = (find_idx(directory, s) for s in stems)
        assert image_file is not None and label_file is not None  # the predicate checked both
        images = read_idx(image_file)
        labels = read_idx(label_file)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(
                f"{image_file} should hold uint8 images of shape (N, 28, 28), not {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(f"{label_file} should hold uint8 labels of shape (N,), not {labels.dtype} {labels.shape}")
        if len(images) == 0:
            raise DataError(f"{image_file} holds no images")
        if len(labels) != len(images):
            raise DataError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
        if len(labels) and int(labels.max()) >= len(CLASSES):
            raise DataError(f"{label_file} has label {int(labels.max())}; Fashion-MNIST has 10 classes")
        return ImageSplit(
            images=torch.from_numpy(images).unsqueeze(1).float().div_(255.0),
            labels=torch.from_numpy(labels).long(),
            masks=None,
            classes=list(CLASSES),
            source=str(directory),
            mean=self.mean,
            std=self.std,
        )


def _incomplete(data_dir: Path | None, stems: tuple[str, ...]) -> str:
    """``"DIR has X but not Y; "`` for the first searched folder holding only some of ``stems``, else ``""``."""
    for directory in expand(candidate_roots(data_dir, SYSTEM_DIRS), LAYOUTS):
        found = {s: find_idx(directory, s) for s in stems}
        present = [f.name for f in found.values() if f is not None]
        missing = [f"{s}[.gz]" for s, f in found.items() if f is None]
        if present and missing:
            return f"{directory} has {', '.join(present)} but not {', '.join(missing)}; "
    return ""


def _fetch(root: Path) -> None:
    # Imported here: torchvision takes seconds to import and is only needed to download.
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    # train=False keeps the post-download parse small; all four files are downloaded either way.
    TorchvisionFashionMNIST(str(root), train=False, download=True)
