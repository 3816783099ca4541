"""CIFAR-10 and CIFAR-100: 60,000 32x32 colour images in 10 or 100 classes, no masks.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical
report, University of Toronto (2009).

Both are read from CIFAR's own "python version" pickles. Pickle can run code,
so the files are read with an unpickler that only rebuilds numpy arrays and
refuses anything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.data.locate import locate_dataset
from xbench.errors import DataError
from xbench.params import NoParams
from xbench.registry import DATASETS

# The only globals a CIFAR pickle needs: numpy's array reconstruction (numpy 1 and 2 module names;
# _frombuffer is what numpy itself writes with pickle protocol 5), and _codecs.encode, which Python 3
# writes for every bytes object at protocol 2 and which can only encode data with a standard codec.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves numpy's array-rebuilding globals and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        # Resolve numpy.core names through numpy._core so numpy 2 does not warn about numpy.core.
        return super().find_class(*target)


def load_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR pickle safely, as a dict with ``str`` keys.

    Raises:
        DataError: the file is unreadable, not a dict, or references anything but numpy arrays.
    """
    try:
        with path.open("rb") as f:
            # encoding="bytes": CIFAR's pickles come from Python 2, whose str are bytes.
            obj = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"unsafe or corrupt CIFAR pickle {path}: {err}") from err
    # A malformed pickle fails in many ways (EOFError, KeyError, ValueError, ...); all mean bad data.
    except Exception as err:
        raise DataError(f"cannot read CIFAR pickle {path}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR pickle {path} holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _label_names(path: Path, key: str, count: int) -> list[str]:
    names = load_pickle(path).get(key)
    if not isinstance(names, list) or len(names) != count:
        raise DataError(f"{path} should hold {count} class names under {key!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _batch(path: Path, key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = load_pickle(path)
    data, labels = entry.get("data"), entry.get(key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path} should hold uint8 'data' of shape (N, 3072), not {got}")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path} has non-integer {key!r}: {err}") from err
    if label_array.shape != (len(data),):
        raise DataError(f"{path} has {len(data)} images but {key!r} has shape {label_array.shape}")
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise DataError(f"{path} has labels outside 0..{num_classes - 1}")
    return data, label_array


class CifarDataset(Dataset[NoParams]):
    """CIFAR from its python pickles; subclasses name the files and label keys."""

    has_masks: ClassVar[bool] = False
    num_classes: ClassVar[int]
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    meta_file: ClassVar[str]
    label_key: ClassVar[str]
    names_key: ClassVar[str]
    archive: ClassVar[str]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def load(self, split: Split) -> ImageSplit:
        """Load ``split`` ("train": 50,000 images, "test": 10,000)."""
        if split not in ("train", "test"):
            raise DataError(f"{self.name} has no split {split!r}; use 'train' or 'test'")
        files = (*(self.train_files if split == "train" else self.test_files), self.meta_file)
        directory = locate_dataset(
            self.name,
            self.data_dir,
            layouts=(self.folder, f"{self.name}/{self.folder}", ""),
            predicate=lambda d: all((d / f).is_file() for f in files),
            download=self.download,
            fetch=self._fetch,
            how_to=(
                f"put the extracted {self.archive} (the {self.folder} folder) in {{dir}}, or set "
                "XBENCH_DATA to a folder holding it, or run with internet and downloads enabled so "
                "torchvision downloads it"
            ),
        )
        classes = _label_names(directory / self.meta_file, self.names_key, self.num_classes)
        batches = [_batch(directory / f, self.label_key, self.num_classes) for f in files[:-1]]
        data = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major: CHW.
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255.0)
        return ImageSplit(
            images=images,
            labels=torch.from_numpy(labels),
            masks=None,
            classes=classes,
            source=str(directory),
            mean=self.mean,
            std=self.std,
        )

    def _fetch(self, root: Path) -> None:
        # Imported here: torchvision takes seconds to import and is only needed to download.
        import torchvision.datasets as tvd

        # torchvision checks the archive's and every file's md5 before it unpickles them itself.
        getattr(tvd, self.name.upper())(str(root), train=False, download=True)


@DATASETS.register("cifar10")
class Cifar10(CifarDataset):
    """CIFAR-10: 3x32x32, 10 classes."""

    name: ClassVar[str] = "cifar10"
    description: ClassVar[str] = "CIFAR-10, 32x32 colour images, 10 classes (no masks)"
    num_classes: ClassVar[int] = 10
    folder: ClassVar[str] = "cifar-10-batches-py"
    train_files: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: ClassVar[tuple[str, ...]] = ("test_batch",)
    meta_file: ClassVar[str] = "batches.meta"
    label_key: ClassVar[str] = "labels"
    names_key: ClassVar[str] = "label_names"
    archive: ClassVar[str] = "cifar-10-python.tar.gz"
    mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, ...]] = (0.2470, 0.2435, 0.2616)


@DATASETS.register("cifar100")
class Cifar100(CifarDataset):
    """CIFAR-100: 3x32x32, 100 fine classes."""

    name: ClassVar[str] = "cifar100"
    description: ClassVar[str] = "CIFAR-100, 32x32 colour images, 100 fine classes (no masks)"
    num_classes: ClassVar[int] = 100
    folder: ClassVar[str] = "cifar-100-python"
    train_files: ClassVar[tuple[str, ...]] = ("train",)
    test_files: ClassVar[tuple[str, ...]] = ("test",)
    meta_file: ClassVar[str] = "meta"
    label_key: ClassVar[str] = "fine_labels"
    names_key: ClassVar[str] = "fine_label_names"
    archive: ClassVar[str] = "cifar-100-python.tar.gz"
    mean: ClassVar[tuple[float, ...]] = (0.5071, 0.4865, 0.4409)
    std: ClassVar[tuple[float, ...]] = (0.2673, 0.2564, 0.2762)
