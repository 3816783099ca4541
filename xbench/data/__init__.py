"""Datasets: every built-in dataset registers itself in ``DATASETS`` on import.

The registry imports this package on first use, so importing it must import
every module that registers a dataset.
"""

from xbench.data import cifar, cluttered, fashion_mnist, folder, imagenet, pets, synthetic
from xbench.data.base import Dataset, ImageSplit, NoParams, Split
from xbench.data.locate import (
    ENV_VAR,
    candidate_roots,
    default_cache,
    download_root,
    expand,
    find_first,
    locate_dataset,
    user_roots,
)

__all__ = [
    "ENV_VAR",
    "Dataset",
    "ImageSplit",
    "NoParams",
    "Split",
    "candidate_roots",
    "cifar",
    "cluttered",
    "default_cache",
    "download_root",
    "expand",
    "fashion_mnist",
    "find_first",
    "folder",
    "imagenet",
    "locate_dataset",
    "pets",
    "synthetic",
    "user_roots",
]
