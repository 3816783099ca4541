"""Oxford-IIIT Pet: photos of 37 cat and dog breeds with pixel-level trimaps.

Parkhi, Vedaldi, Zisserman and Jawahar, "Cats and Dogs", CVPR 2012;
https://www.robots.ox.ac.uk/~vgg/data/pets/.

Read through :class:`torchvision.datasets.OxfordIIITPet` from its own layout,
``<dir>/oxford-iiit-pet/{images/*.jpg, annotations/trimaps/*.png,
annotations/trainval.txt, annotations/test.txt}``, found by the rules of
:mod:`xbench.data.locate`. The suite's "train" split is the official
"trainval" list (3,680 images), "test" the official test list (3,669).

Trimap pixels are 1 = pet, 2 = background, 3 = border. The mask is pet ∪ border:
the border is the unlabelled band along the pet's outline that the annotators
could not assign (fur, whiskers, blur), so it holds the pet's own silhouette
edge; dropping it would shrink every mask inside the animal and count
attributions on its outline as off-object.

Images are resized to ``image_size`` x ``image_size`` (bilinear, antialiased by
PIL) and trimaps with nearest neighbour, so the aspect ratio is not kept but the
whole pet and its whole mask are. Everything is loaded into tensors: meant for
benchmark-sized subsets (``limit``) at small resolutions. ``mean``/``std`` are
ImageNet's, the usual statistics for natural photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.data.locate import locate_dataset
from xbench.errors import DataError
from xbench.registry import DATASETS

# The 37 breeds in the order of their class ids 1..37 (annotations/list.txt), named as torchvision does.
CLASSES = [
    "Abyssinian",
    "American Bulldog",
    "American Pit Bull Terrier",
    "Basset Hound",
    "Beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "Boxer",
    "British Shorthair",
    "Chihuahua",
    "Egyptian Mau",
    "English Cocker Spaniel",
    "English Setter",
    "German Shorthaired",
    "Great Pyrenees",
    "Havanese",
    "Japanese Chin",
    "Keeshond",
    "Leonberger",
    "Maine Coon",
    "Miniature Pinscher",
    "Newfoundland",
    "Persian",
    "Pomeranian",
    "Pug",
    "Ragdoll",
    "Russian Blue",
    "Saint Bernard",
    "Samoyed",
    "Scottish Terrier",
    "Shiba Inu",
    "Siamese",
    "Sphynx",
    "Staffordshire Bull Terrier",
    "Wheaten Terrier",
    "Yorkshire Terrier",
]

FOLDER = "oxford-iiit-pet"
SPLIT_FILES: dict[str, str] = {"train": "trainval", "test": "test"}
PET, BACKGROUND, BORDER = 1, 2, 3
HOW_TO = (
    "download images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ and "
    f"extract both into {{dir}}/{FOLDER} (giving images/*.jpg, annotations/trimaps/*.png, "
    f"annotations/trainval.txt and annotations/test.txt), or set XBENCH_DATA to a folder holding {FOLDER}, "
    "or run with internet and downloads enabled so torchvision downloads it"
)


class PetsParams(BaseModel):
    """Parameters of ``oxford_iiit_pet``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(default=64, ge=8, le=1024, description="images and masks are resized to this square")
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="load at most this many images per split, a fixed seeded sample (None: all)",
    )


def _has_split(base: Path, split_file: str) -> bool:
    return (
        (base / "images").is_dir()
        and (base / "annotations" / "trimaps").is_dir()
        and (base / "annotations" / f"{split_file}.txt").is_file()
    )


@DATASETS.register("oxford_iiit_pet")
class OxfordIIITPet(Dataset[PetsParams]):
    """Oxford-IIIT Pet through torchvision; 3 x image_size x image_size, 37 breeds, trimap masks."""

    name: ClassVar[str] = "oxford_iiit_pet"
    description: ClassVar[str] = "Oxford-IIIT Pet, photos of 37 cat and dog breeds, masks from trimaps"
    has_masks: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = PetsParams
    mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)

    def load(self, split: Split) -> ImageSplit:
        """Load ``split`` ("train": the trainval list, "test": the test list) into tensors."""
        p = self.params
        if split not in SPLIT_FILES:
            raise DataError(f"oxford_iiit_pet has no split {split!r}; use 'train' or 'test'")
        split_file = SPLIT_FILES[split]
        base = locate_dataset(
            "oxford_iiit_pet",
            self.data_dir,
            layouts=(FOLDER,),
            predicate=lambda d: _has_split(d, split_file),
            download=self.download,
            fetch=_fetch,
            how_to=HOW_TO,
        )
        listing = base / "annotations" / f"{split_file}.txt"
        dataset = _open(base.parent, split_file, listing)
        image_files: list[Path] = list(dataset._images)  # torchvision keeps the paths only privately
        trimap_files: list[Path] = list(dataset._segs)
        n = len(dataset)
        if n == 0:
            raise DataError(f"{listing} lists no images")
        order: Sequence[int] = range(n)
        if p.limit is not None and p.limit < n:
            # The lists are sorted by breed, so a prefix would hold only the first breeds: sample instead.
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            order = perm[: p.limit].sort().values.tolist()

        size = p.image_size
        images = torch.empty(len(order), 3, size, size)
        masks = torch.empty(len(order), 1, size, size, dtype=torch.bool)
        labels = torch.empty(len(order), dtype=torch.int64)
        for row, i in enumerate(order):
            image_file, trimap_file = image_files[i], trimap_files[i]
            for path in (image_file, trimap_file):
                if not path.is_file():
                    raise DataError(f"{path} is missing; {listing} lists {image_file.stem}")
            try:
                image, (label, trimap) = dataset[i]  # the image is decoded here, the trimap lazily
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise DataError(f"cannot read image {image_file}: {err}") from err
            try:
                # No convert(): a palette ("P") trimap's raw indices are its codes.
                codes = np.asarray(trimap)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise DataError(f"cannot read trimap {trimap_file}: {err}") from err
            if not 0 <= label < len(CLASSES):
                raise DataError(f"{listing} gives {image_file.stem} class id {label + 1}; ids are 1..37")
            if trimap.size != image.size:
                raise DataError(f"trimap {trimap_file} is {trimap.size}, but its image is {image.size}")
            if codes.ndim != 2:
                raise DataError(f"trimap {trimap_file} has {codes.shape[2]} channels; expected one")
            if not np.isin(codes, (PET, BACKGROUND, BORDER)).all():
                raise DataError(f"trimap {trimap_file} has values {np.unique(codes).tolist()}; expected 1, 2, 3")
            images[row] = _to_tensor(image.resize((size, size), Image.Resampling.BILINEAR))
            small = np.asarray(Image.fromarray(codes.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))
            masks[row, 0] = torch.from_numpy((small == PET) | (small == BORDER))
            labels[row] = label
        return ImageSplit(
            images=images,
            labels=labels,
            masks=masks,
            classes=list(CLASSES),
            source=str(base),
            mean=self.mean,
            std=self.std,
        )


def _open(root: Path, split_file: str, listing: Path) -> Any:
    # Imported here: torchvision takes seconds to import.
    from torchvision.datasets import OxfordIIITPet as TorchvisionPets

    try:
        return TorchvisionPets(str(root), split=split_file, target_types=["category", "segmentation"])
    except (ValueError, IndexError) as err:  # a line that is not "<name> <class> <species> <breed>"
        raise DataError(f"{listing} is malformed: {err}") from err


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def _fetch(root: Path) -> None:
    from torchvision.datasets import OxfordIIITPet as TorchvisionPets

    TorchvisionPets(str(root), download=True)
