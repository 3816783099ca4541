"""Cluttered Fashion-MNIST: each real item on a larger canvas among fragments of other items.

The construction follows cluttered MNIST (Mnih, Heess, Graves and Kavukcuoglu,
"Recurrent Models of Visual Attention", NeurIPS 2014) applied to Fashion-MNIST
(Xiao, Rasul and Vollgraf, arXiv:1708.07747, 2017). The Fashion-MNIST files are
found by :class:`xbench.data.fashion_mnist.FashionMNIST`, with the same
data-location rules (see :mod:`xbench.data.locate`).

For every item, on a black ``canvas`` x ``canvas`` image:

1. ``n_distractors`` fragments, ``fragment_size`` x ``fragment_size`` crops cut at
   random from *other* items of the same split, are pasted at random positions,
   overlapping fragments composited with ``max()``;
2. the item (28x28) is pasted at a random position. Its pixels brighter than
   ``mask_threshold`` *replace* what is under them; its fainter pixels are
   ``max()``-composited, so they neither erase fragments nor count as object.

The mask is exactly the item's pixels brighter than ``mask_threshold`` at its
placed position. The default 0.1 (25.5 of 255) keeps the garment and drops the
near-black background and the faint halo of the 28x28 crop. Because object
pixels replace the fragments, the image inside the mask is the item's own pixels
and no distractor pixel ever lies inside the mask.

Everything is drawn from one generator seeded per split (train and test derive
different seeds from ``seed``), so the same parameters give bit-identical
tensors. ``mean``/``std`` are computed from the generated split itself, on its
first 8,192 canvases (models normalise with the training split's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.data.fashion_mnist import CLASSES, FashionMNIST
from xbench.data.synthetic import derived_seed
from xbench.errors import DataError
from xbench.params import NoParams
from xbench.registry import DATASETS

# Items are composited in chunks, so the (chunk, 28, 28) intermediates stay small and cache-friendly.
_CHUNK = 4096
# mean/std are estimated on at most this many generated canvases of the split.
_STATS_SAMPLE = 8192


class ClutteredParams(BaseModel):
    """Parameters of ``fashion_mnist_cluttered``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    canvas: int = Field(default=64, ge=28, le=512, description="height and width of the canvas in pixels")
    n_distractors: int = Field(default=4, ge=0, le=64, description="fragments of other items pasted per image")
    fragment_size: int = Field(default=10, ge=1, le=28, description="side of the square distractor fragments")
    mask_threshold: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="object pixels brighter than this (in [0, 1]) form the mask"
    )
    seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the generator; train and test derive their own")
    n_train: int | None = Field(
        default=None, ge=1, le=10_000_000, description="first n training items (None: all 60,000)"
    )
    n_test: int | None = Field(default=None, ge=1, le=10_000_000, description="first n test items (None: all 10,000)")


@dataclass
class ClutteredScenes:
    """Generated canvases with the draws that placed them (tests re-render from these).

    Attributes:
        images: float32 (N, 1, canvas, canvas) in [0, 1].
        masks: bool (N, 1, canvas, canvas), the object's pixels above the threshold.
        offsets: int64 (N, 2), ``(y, x)`` of the object's top-left corner.
        donors: int64 (N, K), the item each fragment was cut from (never the object's own).
        crops: int64 (N, K, 2), ``(y, x)`` of each fragment's top-left corner in its donor.
        pastes: int64 (N, K, 2), ``(y, x)`` of each fragment's top-left corner on the canvas.
    """

    images: Tensor
    masks: Tensor
    offsets: Tensor
    donors: Tensor
    crops: Tensor
    pastes: Tensor


def render_cluttered(
    pool: Tensor,
    n: int,
    *,
    canvas: int = 64,
    n_distractors: int = 4,
    fragment_size: int = 10,
    mask_threshold: float = 0.1,
    seed: int = 0,
) -> ClutteredScenes:
    """Place ``pool[:n]`` on cluttered canvases (see the module docstring); deterministic in ``seed``.

    Args:
        pool: float32 (M, 1, h, w) items in [0, 1]; objects are the first ``n``, fragments come from all.
        n: number of canvases, at most ``M``.
    """
    m, _, h, w = pool.shape
    if not 0 <= n <= m:
        raise ValueError(f"cannot place {n} of {m} items")
    if canvas < max(h, w):
        raise ValueError(f"canvas {canvas} is smaller than the {h}x{w} items")
    f, k = fragment_size, n_distractors
    if k and (m < 2 or f > min(h, w)):
        raise ValueError(f"cannot cut {f}x{f} fragments from other items of {m} {h}x{w} items")

    g = torch.Generator().manual_seed(seed)
    offsets = torch.stack(
        [torch.randint(0, canvas - h + 1, (n,), generator=g), torch.randint(0, canvas - w + 1, (n,), generator=g)], 1
    )
    # Uniform over the other m - 1 items: draw from 0..m-2 and skip the object's own index.
    donors = torch.randint(0, max(m - 1, 1), (n, k), generator=g)
    donors += (donors >= torch.arange(n).unsqueeze(1)).long()
    crops = torch.stack(
        [torch.randint(0, h - f + 1, (n, k), generator=g), torch.randint(0, w - f + 1, (n, k), generator=g)], 2
    )
    pastes = torch.stack(
        [torch.randint(0, canvas - f + 1, (n, k), generator=g), torch.randint(0, canvas - f + 1, (n, k), generator=g)],
        2,
    )

    images = torch.zeros(n, canvas, canvas)
    masks = torch.zeros(n, canvas, canvas, dtype=torch.bool)
    # unfold gives views of every f x f (or h x w) window, indexed by the window's top-left corner, so
    # indexing them with one (item, y, x) triple per image moves whole blocks: no per-pixel indices.
    donor_windows = pool[:, 0].unfold(1, f, 1).unfold(2, f, 1)
    fragment_windows = images.unfold(1, f, 1).unfold(2, f, 1)
    object_windows = images.unfold(1, h, 1).unfold(2, w, 1)
    mask_windows = masks.unfold(1, h, 1).unfold(2, w, 1)
    for start in range(0, n, _CHUNK):
        items = torch.arange(start, min(start + _CHUNK, n))
        for j in range(k):  # a handful of iterations, each batched over the chunk
            c, p = crops[items, j], pastes[items, j]
            fragment = donor_windows[donors[items, j], c[:, 0], c[:, 1]]
            under = fragment_windows[items, p[:, 0], p[:, 1]]
            fragment_windows[items, p[:, 0], p[:, 1]] = torch.maximum(under, fragment)
        y, x = offsets[items, 0], offsets[items, 1]
        obj = pool[items, 0]
        inside = obj > mask_threshold
        under = object_windows[items, y, x]
        object_windows[items, y, x] = torch.where(inside, obj, torch.maximum(under, obj))
        mask_windows[items, y, x] = inside
    return ClutteredScenes(images.unsqueeze(1), masks.unsqueeze(1), offsets, donors, crops, pastes)


@DATASETS.register("fashion_mnist_cluttered")
class FashionMNISTCluttered(Dataset[ClutteredParams]):
    """Fashion-MNIST items on a larger canvas among fragments of other items; object masks."""

    name: ClassVar[str] = "fashion_mnist_cluttered"
    description: ClassVar[str] = "Fashion-MNIST items placed among fragments of other items on a larger canvas, masks"
    has_masks: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = ClutteredParams

    def load(self, split: Split) -> ImageSplit:
        """Generate ``split`` from the Fashion-MNIST split of the same name; bit-identical per params."""
        p = self.params
        if split not in ("train", "test"):
            raise DataError(f"fashion_mnist_cluttered has no split {split!r}; use 'train' or 'test'")
        base = FashionMNIST(NoParams(), data_dir=self.data_dir, download=self.download).load(split)
        limit = p.n_train if split == "train" else p.n_test
        n = len(base) if limit is None else min(limit, len(base))
        if p.n_distractors and len(base) < 2:
            raise DataError(
                f"fashion_mnist {split} split in {base.source} has {len(base)} item(s); "
                "distractor fragments need at least 2"
            )
        scenes = render_cluttered(
            base.images,
            n,
            canvas=p.canvas,
            n_distractors=p.n_distractors,
            fragment_size=p.fragment_size,
            mask_threshold=p.mask_threshold,
            seed=derived_seed(p.seed, split),
        )
        images = scenes.images
        # The first _STATS_SAMPLE canvases are a random sample (placements are random) and give the
        # statistics to 3-4 decimals at a fraction of the cost of a pass over 60,000 canvases.
        sample = images[:_STATS_SAMPLE]
        return ImageSplit(
            images=images,
            labels=base.labels[:n].clone(),
            masks=scenes.masks,
            classes=list(CLASSES),
            source=f"{base.source} cluttered(seed={p.seed})",
            mean=(round(float(sample.mean()), 4),),
            std=(round(float(sample.std()), 4),),
        )
