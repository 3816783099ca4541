"""Synthetic shapes: procedural images of one shape each, with exact object masks.

Each image holds one shape (its class) at a random position, size and colour on
a smooth random background, plus small distractor blobs that are not part of
the object. The mask is exactly the set of pixels painted with the shape's
colour, so localisation metrics have an unambiguous ground truth. Everything is
generated with batched tensor ops from a seeded generator: the same parameters
always give bit-identical tensors, and no files or downloads are needed.

With ``r`` the shape's half-size and ``(dx, dy) = (x - cx, y - cy) / r``:

- square: ``max(|dx|, |dy|) <= 0.85``
- circle: ``dx^2 + dy^2 <= 1``
- triangle (apex up): ``-1 <= dy <= 1`` and ``|dx| <= (dy + 1) / 2``
- cross: ``max(|dx|, |dy|) <= 1`` and ``min(|dx|, |dy|) <= 0.3``
- ring: ``0.55^2 <= dx^2 + dy^2 <= 1``
- bar: ``|dx| <= 1`` and ``|dy| <= 0.3``, or that turned by 90 degrees
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.errors import DataError
from xbench.registry import DATASETS

SHAPES = ("square", "circle", "triangle", "cross", "ring", "bar")

# Shape colours are drawn from [_FG_LOW, 1] and background base colours from [_BG_LOW, _BG_HIGH]
# per channel, so the object is always brighter than the background it covers (before noise).
_FG_LOW = 0.55
_BG_LOW, _BG_HIGH = 0.05, 0.35
_TEXTURE = 0.3  # peak-to-peak amplitude of the smooth background texture
_TEXTURE_CELLS = 4  # the texture is bilinear noise on a 4x4 grid
_RADIUS = (0.18, 0.35)  # shape half-size as a fraction of the image size
_BLOB_RADIUS = (0.04, 0.08)  # distractor radius as a fraction of the image size
_ARM = 0.3  # half-width of cross arms and bars relative to the half-size
_RING_INNER = 0.55
_SQUARE = 0.85  # squares are shrunk so their area is close to the circle's

# Stream ids for derived seeds: the splits and the normalisation statistics never share random numbers.
_STREAMS = {"train": 0, "test": 1, "stats": 2}


class SyntheticShapesParams(BaseModel):
    """Parameters of ``synthetic_shapes``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(default=2000, ge=1, le=10_000_000, description="number of training images (at most 10^7)")
    n_test: int = Field(default=500, ge=1, le=10_000_000, description="number of test images (at most 10^7)")
    image_size: int = Field(default=32, ge=16, le=512, description="height and width in pixels")
    channels: Literal[1, 3] = Field(default=3, description="1 for grey images, 3 for colour")
    seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the generator; train and test derive their own")
    noise: float = Field(default=0.1, ge=0.0, le=1.0, description="std of the Gaussian pixel noise")
    distractors: int = Field(default=2, ge=0, le=16, description="small blobs per image outside the mask")


@dataclass
class ShapeScenes:
    """Generated images with the parameters that drew them (tests re-derive masks from these).

    Attributes:
        images: float32 (N, C, H, W) in [0, 1].
        labels: int64 (N,), indices into :data:`SHAPES`.
        masks: bool (N, 1, H, W), exactly the shape's pixels.
        centers: float32 (N, 2), ``(cx, cy)`` in pixel coordinates.
        radii: float32 (N,), half-size in pixels.
        vertical: bool (N,), orientation of bars (ignored for other shapes).
        colors: float32 (N, C), the shape's colour before noise.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    centers: Tensor
    radii: Tensor
    vertical: Tensor
    colors: Tensor


def shape_masks(labels: Tensor, centers: Tensor, radii: Tensor, vertical: Tensor, size: int) -> Tensor:
    """Boolean (N, H, W) masks of the shapes described by the arguments (see the module docstring)."""
    coords = torch.arange(size, dtype=torch.float32)
    dx = (coords.view(1, 1, -1) - centers[:, 0].view(-1, 1, 1)) / radii.view(-1, 1, 1)
    dy = (coords.view(1, -1, 1) - centers[:, 1].view(-1, 1, 1)) / radii.view(-1, 1, 1)
    masks = torch.zeros(len(labels), size, size, dtype=torch.bool)
    # One batched evaluation per kind, over the images of that kind only; dx (N, 1, W) and dy (N, H, 1)
    # broadcast to (N, H, W) inside each test.
    for kind, inside in enumerate(_INSIDE):
        idx = (labels == kind).nonzero().squeeze(1)
        if len(idx):
            masks[idx] = inside(dx[idx], dy[idx], vertical[idx].view(-1, 1, 1))
    return masks


def _square(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    return torch.maximum(dx.abs(), dy.abs()) <= _SQUARE


def _circle(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    return dx * dx + dy * dy <= 1.0


def _triangle(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    return (dy >= -1.0) & (dy <= 1.0) & (dx.abs() <= (dy + 1.0) / 2)


def _cross(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    ax, ay = dx.abs(), dy.abs()
    return (torch.maximum(ax, ay) <= 1.0) & (torch.minimum(ax, ay) <= _ARM)


def _ring(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    r2 = dx * dx + dy * dy
    return (r2 >= _RING_INNER**2) & (r2 <= 1.0)


def _bar(dx: Tensor, dy: Tensor, vertical: Tensor) -> Tensor:
    # A vertical bar swaps the roles of x and y.
    along, across = torch.where(vertical, dy, dx).abs(), torch.where(vertical, dx, dy).abs()
    return (along <= 1.0) & (across <= _ARM)


# Indexed by class: the order of SHAPES.
_INSIDE = (_square, _circle, _triangle, _cross, _ring, _bar)


def _bilinear_weights(cells: int, size: int) -> Tensor:
    # Bilinear upsampling is separable and linear: two small matmuls with these (size, cells) weights,
    # several times faster than F.interpolate on a large batch of tiny images.
    eye = torch.eye(cells).unsqueeze(1)  # (cells, 1, cells): one basis signal per row
    return F.interpolate(eye, size=size, mode="linear", align_corners=False).squeeze(1).T.contiguous()


def render_shapes(
    n: int,
    *,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    noise: float = 0.1,
    distractors: int = 2,
) -> ShapeScenes:
    """Generate ``n`` images deterministically from ``seed`` (on the CPU, in one batch)."""
    g = torch.Generator().manual_seed(seed)
    size, k = image_size, len(SHAPES)

    # Balanced classes in a random order: every class appears whenever n >= len(SHAPES).
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    radii = size * (_RADIUS[0] + (_RADIUS[1] - _RADIUS[0]) * torch.rand(n, generator=g))
    # Keep the whole shape inside the image: centres lie in [r, size - 1 - r].
    span = (size - 1 - 2 * radii).unsqueeze(1)
    centers = radii.unsqueeze(1) + span * torch.rand(n, 2, generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    colors = _FG_LOW + (1.0 - _FG_LOW) * torch.rand(n, channels, generator=g)

    base = _BG_LOW + (_BG_HIGH - _BG_LOW) * torch.rand(n, channels, 1, 1, generator=g)
    cells = torch.rand(n, channels, _TEXTURE_CELLS, _TEXTURE_CELLS, generator=g)
    weights = _bilinear_weights(_TEXTURE_CELLS, size)
    texture = weights @ cells @ weights.T
    images = base + _TEXTURE * (texture - 0.5)

    # Distractors are painted before the shape, so they never cover object pixels.
    coords = torch.arange(size, dtype=torch.float32)
    for _ in range(distractors):  # a handful of iterations, each batched over all images
        blob_c = size * torch.rand(n, 2, generator=g)
        blob_r = size * (_BLOB_RADIUS[0] + (_BLOB_RADIUS[1] - _BLOB_RADIUS[0]) * torch.rand(n, generator=g))
        blob_color = _FG_LOW + (1.0 - _FG_LOW) * torch.rand(n, channels, 1, 1, generator=g)
        d2 = (coords.view(1, 1, -1) - blob_c[:, 0].view(-1, 1, 1)) ** 2 + (
            coords.view(1, -1, 1) - blob_c[:, 1].view(-1, 1, 1)
        ) ** 2
        blob = (d2 <= blob_r.view(-1, 1, 1) ** 2).unsqueeze(1)
        images = torch.where(blob, blob_color, images)

    masks = shape_masks(labels, centers, radii, vertical, size).unsqueeze(1)
    images = torch.where(masks, colors.view(n, channels, 1, 1), images)
    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=g)
    images = images.clamp_(0.0, 1.0).contiguous()
    return ShapeScenes(images, labels, masks, centers, radii, vertical, colors)


def derived_seed(seed: int, stream: str) -> int:
    """A seed for one stream ("train", "test", "stats") that is independent of the others."""
    return int(np.random.SeedSequence([seed, _STREAMS[stream]]).generate_state(1)[0])


@DATASETS.register("synthetic_shapes")
class SyntheticShapes(Dataset[SyntheticShapesParams]):
    """Procedural shapes with exact object masks; needs no files."""

    name: ClassVar[str] = "synthetic_shapes"
    description: ClassVar[str] = f"procedural {', '.join(SHAPES)} on textured backgrounds, exact masks"
    has_masks: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = SyntheticShapesParams

    def load(self, split: Split) -> ImageSplit:
        """Generate ``split``; the same params always give bit-identical tensors."""
        p = self.params
        if split not in ("train", "test"):
            raise DataError(f"synthetic_shapes has no split {split!r}; use 'train' or 'test'")
        n = p.n_train if split == "train" else p.n_test
        scenes = self._render(n, derived_seed(p.seed, split))
        mean, std = self._stats()
        return ImageSplit(
            images=scenes.images,
            labels=scenes.labels,
            masks=scenes.masks,
            classes=list(SHAPES),
            source="generated",
            mean=mean,
            std=std,
        )

    def _render(self, n: int, seed: int) -> ShapeScenes:
        p = self.params
        return render_shapes(
            n,
            image_size=p.image_size,
            channels=p.channels,
            seed=seed,
            noise=p.noise,
            distractors=p.distractors,
        )

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        p = self.params
        return _stats(p.image_size, p.channels, p.seed, p.noise, p.distractors)


@functools.lru_cache(maxsize=32)
def _stats(
    image_size: int, channels: int, seed: int, noise: float, distractors: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # From a fixed sample of its own stream, so train and test share identical statistics.
    images = render_shapes(
        256,
        image_size=image_size,
        channels=channels,
        seed=derived_seed(seed, "stats"),
        noise=noise,
        distractors=distractors,
    ).images
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)
