"""The dataset contract: every dataset loads into in-memory tensors.

Images are float32 in [0, 1], shape (N, C, H, W); models normalise inside
their first layer with the dataset's ``mean``/``std``. Keeping raw [0, 1] pixels
in the data lets explanation metrics perturb pixels on a known scale.

Small benchmark datasets (MNIST-like, CIFAR) fit in memory many times over, and
a batched tensor loop is several times faster on 2 CPU cores than a DataLoader
with per-sample transforms, so no DataLoader is used on the hot path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, Literal, cast

import torch
from pydantic import BaseModel
from torch import Tensor

from xbench.params import NoParams, P

Split = Literal["train", "test"]


@dataclass
class ImageSplit(torch.utils.data.Dataset):
    """One split of a dataset held as tensors.

    Attributes:
        images: float32 (N, C, H, W) in [0, 1].
        labels: int64 (N,).
        masks: bool (N, 1, H, W) ground-truth object masks, or None.
        classes: class names, ``len(classes)`` is the number of classes.
        source: where the data came from (a path or "generated"), for records.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor | None
    classes: list[str]
    source: str = "generated"
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return ``(image, label, mask)``; ``mask`` is None without masks."""
        mask = self.masks[i] if self.masks is not None else None
        return self.images[i], self.labels[i], mask

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def take(self, idx: Tensor) -> ImageSplit:
        """The items at ``idx``, as a new split."""
        masks = None if self.masks is None else self.masks[idx]
        return ImageSplit(self.images[idx], self.labels[idx], masks, self.classes, self.source, self.mean, self.std)

    def split_off(self, n: int, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
        """``(rest, held_out)``: ``n`` items of a fixed seeded permutation are held out."""
        if not 0 < n < len(self):
            raise ValueError(f"cannot hold out {n} of {len(self)} items")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.take(perm[n:].sort().values), self.take(perm[:n].sort().values)

    def subset(self, n: int | None, seed: int = 0) -> ImageSplit:
        """The first ``n`` items of a fixed seeded permutation (stratification-free).

        ``n=None`` or ``n >= len(self)`` returns ``self``.
        """
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n]
        return ImageSplit(
            self.images[idx],
            self.labels[idx],
            None if self.masks is None else self.masks[idx],
            self.classes,
            self.source,
            self.mean,
            self.std,
        )


class Dataset(ABC, Generic[P]):
    """A registered dataset, generic over its parameters: ``class SyntheticShapes(Dataset[SyntheticShapesParams])``.

    Subclasses set the class attributes and ``load``. ``Params`` is the same model at run time.

    Args:
        params: the validated ``Params`` of this dataset from the suite.
        data_dir: ``--data-dir`` from the CLI or the suite's ``data.dir``.
        download: whether a torchvision download may be attempted.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    has_masks: ClassVar[bool] = False
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel, data_dir: Path | None = None, download: bool = True) -> None:
        self.params = cast(P, params)  # an instance of ``Params``, the model the subclass declares as ``P``
        self.data_dir = data_dir
        self.download = download

    @abstractmethod
    def load(self, split: Split) -> ImageSplit:
        """Load one split into memory."""
