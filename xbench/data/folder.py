"""Your own images: an ImageFolder tree with an optional parallel tree of object masks.

The layout is torchvision's ``ImageFolder`` (one sub-folder per class) per split,
plus masks with the same relative paths under ``masks/``::

    ROOT/train/CLASS/NAME.png|.jpg|.jpeg
    ROOT/test/CLASS/NAME.png|.jpg|.jpeg
    ROOT/masks/train/CLASS/NAME.png     # same stem as the image, always .png
    ROOT/masks/test/CLASS/NAME.png

Classes are the sub-folders of ``ROOT/train`` in sorted order (as ``ImageFolder``
numbers them); a test class that is not a training class is an error. Files
with other suffixes and hidden files are ignored.

Masks are read as greyscale (PIL ``convert("L")``) and must have their image's
size. A mask whose values are all 0 or 1 is taken as a 0/1 label map (1 =
object); any other mask is thresholded: grey values > 127 are object, so a
0/255 mask, an anti-aliased mask or a JPEG-like grey mask all work. With
``masks: false`` no mask is read and the splits carry none.

Images are converted to RGB (``channels: 3``) or greyscale (``channels: 1``).
Without ``image_size`` every image must have the size of the first training
image; with it, images are resized to ``image_size`` x ``image_size``
(bilinear) and masks after thresholding with nearest neighbour. ``mean``/``std``
are computed from the loaded split (models normalise with the training
split's).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIX = ".png"
LAYOUT = "ROOT/{train,test}/CLASS/*.png|jpg with masks in ROOT/masks/{train,test}/CLASS/<same name>.png"
_READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


class FolderParams(BaseModel):
    """Parameters of ``folder``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(description="folder holding train/, test/ and masks/ (relative to the working directory)")
    image_size: int | None = Field(
        default=None, ge=8, le=4096, description="resize to this square (None: all images must share one size)"
    )
    masks: bool = Field(default=True, description="read masks from ROOT/masks/{train,test}/CLASS/<name>.png")
    channels: Literal[1, 3] = Field(default=3, description="3 converts images to RGB, 1 to greyscale")


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError as err:
        raise DataError(f"cannot list {directory}: {err.strerror or err}") from err


def list_classes(directory: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``directory``."""
    return sorted(d.name for d in _entries(directory) if d.is_dir() and not d.name.startswith("."))


def list_images(directory: Path) -> list[Path]:
    """Sorted image files (by suffix) directly in ``directory``; hidden files are skipped.

    Raises:
        DataError: an image name is a symbolic link to nothing (a missing file).
    """
    images = []
    for f in _entries(directory):
        if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):
            continue
        if f.is_symlink() and not f.exists():
            raise DataError(f"image {f} is missing: it links to {os.readlink(f)}, which does not exist")
        if f.is_file():
            images.append(f)
    return sorted(images)


def read_mask(path: Path) -> np.ndarray:
    """A mask file as a bool (H, W) array (see the module docstring for the rule).

    Raises:
        DataError: the file cannot be read; the message names it.
    """
    try:
        with Image.open(path) as mask:
            grey = np.asarray(mask.convert("L"))
    except _READ_ERRORS as err:
        raise DataError(f"cannot read mask {path}: {err}") from err
    if grey.size and int(grey.max()) <= 1:
        return grey == 1
    return grey > 127


@DATASETS.register("folder")
class ImageFolderDataset(Dataset[FolderParams]):
    """Images in ImageFolder layout with optional per-image masks."""

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "your images in ImageFolder layout (ROOT/train|test/CLASS/*), masks in ROOT/masks/"
    has_masks: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = FolderParams

    def load(self, split: Split) -> ImageSplit:
        """Load ``split`` from ``ROOT/<split>``, and its masks from ``ROOT/masks/<split>``."""
        p = self.params
        if split not in ("train", "test"):
            raise DataError(f"folder has no split {split!r}; use 'train' or 'test'")
        root = p.root.expanduser()
        train_dir, split_dir = root / "train", root / split
        for directory in (train_dir, split_dir):
            if not directory.is_dir():
                raise DataNotFoundError(f"folder dataset: {directory} is not a folder; expected {LAYOUT}")
        classes = list_classes(train_dir)
        if not classes:
            raise DataError(f"{train_dir} has no class sub-folders; expected {LAYOUT}")

        items: list[tuple[Path, int]] = []
        for name in list_classes(split_dir):
            if name not in classes:
                raise DataError(f"{split_dir / name} is not a class: {train_dir} has no folder {name!r}")
            files = list_images(split_dir / name)
            stems: dict[str, Path] = {}
            for f in files:
                if f.stem in stems:
                    raise DataError(f"{f} and {stems[f.stem]} would share the mask {f.stem}{MASK_SUFFIX}; rename one")
                stems[f.stem] = f
            items.extend((f, classes.index(name)) for f in files)
        if not items:
            raise DataError(f"{split_dir} holds no {'/'.join(IMAGE_SUFFIXES)} images in class sub-folders")

        reference = None if p.image_size is not None else self._reference(train_dir, classes)
        mode = "RGB" if p.channels == 3 else "L"
        size = p.image_size
        images, masks = [], []
        for path, _ in items:
            try:
                with Image.open(path) as opened:
                    image = opened.convert(mode)
            except _READ_ERRORS as err:
                raise DataError(f"cannot read image {path}: {err}") from err
            if reference is not None and image.size != reference[1]:
                raise DataError(
                    f"{path} is {_wxh(image.size)} but {reference[0]} is {_wxh(reference[1])}; "
                    "set image_size to resize every image"
                )
            if p.masks:
                masks.append(self._mask(root, split, path, image.size, size))
            if size is not None:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.array(image, dtype=np.uint8).reshape(image.size[1], image.size[0], -1)
            images.append(torch.from_numpy(array).permute(2, 0, 1))

        stacked = torch.stack(images).float().div_(255.0)
        return ImageSplit(
            images=stacked,
            labels=torch.tensor([label for _, label in items], dtype=torch.int64),
            masks=torch.stack(masks).unsqueeze(1) if p.masks else None,
            classes=classes,
            source=str(root),
            mean=tuple(round(float(m), 4) for m in stacked.mean(dim=(0, 2, 3))),
            std=tuple(round(float(s), 4) for s in stacked.std(dim=(0, 2, 3))),
        )

    @staticmethod
    def _reference(train_dir: Path, classes: list[str]) -> tuple[Path, tuple[int, int]]:
        # The first training image fixes the size for both splits, so train and test always agree.
        for name in classes:
            files = list_images(train_dir / name)
            if files:
                try:
                    with Image.open(files[0]) as image:
                        return files[0], image.size
                except _READ_ERRORS as err:
                    raise DataError(f"cannot read image {files[0]}: {err}") from err
        raise DataError(f"{train_dir} holds no {'/'.join(IMAGE_SUFFIXES)} images in class sub-folders")

    @staticmethod
    def _mask(root: Path, split: str, image_path: Path, image_size: tuple[int, int], size: int | None) -> torch.Tensor:
        mask_path = root / "masks" / split / image_path.parent.name / (image_path.stem + MASK_SUFFIX)
        if not mask_path.is_file():
            raise DataError(f"mask {mask_path} for image {image_path} is missing (set masks: false if there are none)")
        mask = read_mask(mask_path)
        if (mask.shape[1], mask.shape[0]) != image_size:
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is {_wxh(image_size)}"
            )
        if size is not None:
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
            mask = np.asarray(resized) > 127
        return torch.from_numpy(np.ascontiguousarray(mask))


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
