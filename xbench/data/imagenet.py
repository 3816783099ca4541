"""ImageNet (ILSVRC-2012) from the folder tree torchvision's ``ImageNet`` leaves, with box masks on ``val``.

Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge", IJCV 2015;
https://image-net.org/challenges/LSVRC/2012/. The layout is::

    ROOT/train/<wnid>/*.JPEG                        # the "train" split (a subset, see below)
    ROOT/val/<wnid>/ILSVRC2012_val_00000001.JPEG    # the "test" split
    ROOT/bbox_val/ILSVRC2012_val_00000001.xml       # or ROOT/bbox_val/<wnid>/<stem>.xml; param bbox_dir
    ROOT/LOC_synset_mapping.txt                     # optional: "n01440764 tench, Tinca tinca" per line

This is what ``torchvision.datasets.ImageNet`` makes of the official archives after parsing the
devkit, plus the official validation boxes (``ILSVRC2012_bbox_val_v3.tgz``) extracted into
``bbox_val``. Classes are the sub-folders of ``ROOT/val`` in sorted order, as ``ImageFolder``
numbers them: with all 1000 wnids this is the index order of torchvision's pretrained
1000-class heads. ``ROOT/train`` must hold the same class folders. Class names are the wnids,
or the first name of each wnid in ``ROOT/LOC_synset_mapping.txt`` when that file exists (a name
two wnids share, such as "crane", gets its wnid appended).

**Only a subset of ImageNet train is loaded.** xbench holds every split in memory as float
tensors (1.28 million training images at 224 x 224 would need about 770 GB), and it has no
streaming loader, so full ImageNet training is out of reach here: train a model elsewhere and
evaluate it, or fine-tune on a subset. The train split is the first ``train_per_class`` images
of each class by sorted file name, and ``train_limit`` caps the total by taking the first,
second, ... image of every class in turn (so a cap keeps classes balanced); the choice is
deterministic. The test split is all of ``ROOT/val`` (50,000 images: about 30 GB at 224 x 224)
unless ``image_list`` restricts it.

Every image gets the standard evaluation transform (no augmentation; xbench uses no
DataLoader): the shorter side is resized to ``resize`` (bilinear, antialiased, on the PIL image,
exactly ``torchvision.transforms.v2.Resize(resize)``), then the centre ``image_size`` x
``image_size`` is cropped (``v2.CenterCrop``). Images are converted to RGB (ImageNet holds a few
greyscale and CMYK JPEGs). ``mean``/``std`` are ImageNet's.

Masks (test split only; the train split carries none): the mask of a validation image is the
union of its XML boxes whose ``<name>`` is the image's own wnid (``boxes: label``; a box naming
any other or an unknown wnid is ignored) or of all its boxes (``boxes: all``). The XML files
are in PASCAL VOC format, but ILSVRC's coordinates are 0-based inclusive pixel indices (unlike
VOC's 1-based ones): a box covers columns ``xmin..xmax`` and rows ``ymin..ymax``, the left
column is 0 and ``xmax`` is at most width - 1. Coordinates are in the pixels of the image as
the XML's ``<size>`` gives it; if the JPEG on disk has another size (a pre-resized copy of
ImageNet) the boxes are scaled to it, and a pixel is in the mask if the scaled box overlaps it.
Boxes are clipped to the image. The mask then goes through the image's geometry: resized with
nearest neighbour to the image's resized size and cropped like it. An image whose boxes are
all of other classes has an empty mask. With ``masks: false`` no XML is read.

The XML files are parsed with the standard library's expat; a file that declares a DOCTYPE or
an entity (the way to entity-expansion attacks) is refused, as is malformed XML.

``image_list`` restricts and orders the test split: a text file of validation image names,
one per line, with or without the ``.JPEG`` suffix, optionally followed by the class index,
as TAME's lists (``datalist/ILSVRC/Evaluation_2000.txt``: ``ILSVRC2012_val_00010011.JPEG 248``)
give them. A given class index must be the image's index in the sorted wnids of ``ROOT/val``;
blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xbench.data.base import Dataset, ImageSplit, Split
from xbench.data.folder import IMAGE_SUFFIXES, list_classes, list_images
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SYNSET_MAPPING = "LOC_synset_mapping.txt"
BBOX_FOLDER = "bbox_val"
LAYOUT = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (torchvision's ImageNet layout)"
_READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


class ImageNetParams(BaseModel):
    """Parameters of ``imagenet``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(description="folder holding train/ and val/ in torchvision's layout (relative to the cwd)")
    resize: int = Field(default=256, ge=8, le=4096, description="the shorter side is resized to this (bilinear)")
    image_size: int = Field(default=224, ge=8, le=4096, description="then the centre square of this side is cropped")
    image_list: Path | None = Field(
        default=None, description="text file of val image names ('<name>[.JPEG] [class]' per line) for the test split"
    )
    bbox_dir: Path | None = Field(
        default=None, description="folder of the val XML boxes, flat or in <wnid>/ sub-folders (None: ROOT/bbox_val)"
    )
    boxes: Literal["label", "all"] = Field(
        default="label", description="mask = boxes of the image's own class ('label') or all its boxes ('all')"
    )
    masks: bool = Field(default=True, description="build test masks from the XML boxes")
    train_per_class: int | None = Field(
        default=10, ge=1, le=1300, description="load the first this many train images of each class (None: all)"
    )
    train_limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="load at most this many train images, classes in turn (None: no cap)",
    )

    @model_validator(mode="after")
    def _check(self) -> ImageNetParams:
        if self.image_size > self.resize:
            raise ValueError(f"image_size {self.image_size} is larger than resize {self.resize}")
        if self.train_per_class is None and self.train_limit is None:
            raise ValueError("set train_per_class or train_limit: ImageNet train does not fit in memory")
        return self


@DATASETS.register("imagenet")
class ImageNet(Dataset[ImageNetParams]):
    """ILSVRC-2012 in torchvision's layout: val as the test split with box masks, a train subset."""

    name: ClassVar[str] = "imagenet"
    description: ClassVar[str] = "ImageNet ILSVRC-2012 (ROOT/train|val/<wnid>/*.JPEG), masks from the val XML boxes"
    has_masks: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = ImageNetParams
    mean: ClassVar[tuple[float, ...]] = MEAN
    std: ClassVar[tuple[float, ...]] = STD

    def load(self, split: Split) -> ImageSplit:
        """Load ``split`` ("train": a subset of ROOT/train, "test": ROOT/val) into tensors."""
        p = self.params
        if split not in ("train", "test"):
            raise DataError(f"imagenet has no split {split!r}; use 'train' or 'test'")
        root = p.root.expanduser()
        val_dir = root / "val"
        if not val_dir.is_dir():
            raise DataNotFoundError(f"imagenet: {val_dir} is not a folder; expected {LAYOUT}")
        wnids = list_classes(val_dir)
        if not wnids:
            raise DataError(f"{val_dir} has no class sub-folders; expected {LAYOUT}")
        if split == "train":
            items = _train_items(root / "train", wnids, p.train_per_class, p.train_limit)
        else:
            items = _val_items(val_dir, wnids, p.image_list)
        bbox_dir = None
        if split == "test" and p.masks:
            bbox_dir = p.bbox_dir.expanduser() if p.bbox_dir is not None else root / BBOX_FOLDER
            if not bbox_dir.is_dir():
                raise DataNotFoundError(
                    f"imagenet: bounding-box folder {bbox_dir} is not a folder (extract ILSVRC2012_bbox_val_v3.tgz "
                    "there, set bbox_dir, or set masks: false)"
                )

        from torchvision import tv_tensors
        from torchvision.transforms import v2

        transform = v2.Compose([v2.Resize(p.resize, antialias=True), v2.CenterCrop(p.image_size)])
        size = p.image_size
        images = torch.empty(len(items), 3, size, size)
        masks = torch.zeros(len(items), 1, size, size, dtype=torch.bool) if bbox_dir is not None else None
        for row, (path, label) in enumerate(items):
            image = _read_image(path)
            if masks is not None and bbox_dir is not None:
                xml = _xml_path(bbox_dir, path, wnids[label])
                box_mask = box_mask_for(xml, image.size, wnids[label] if p.boxes == "label" else None)
                image, mask = transform(image, tv_tensors.Mask(torch.from_numpy(box_mask).to(torch.uint8).unsqueeze(0)))
                masks[row] = mask.as_subclass(torch.Tensor).bool()
            else:
                image = transform(image)
            images[row] = v2.functional.pil_to_tensor(image).float().div_(255.0)
        return ImageSplit(
            images=images,
            labels=torch.tensor([label for _, label in items], dtype=torch.int64),
            masks=masks,
            classes=class_names(root, wnids),
            source=str(root),
            mean=self.mean,
            std=self.std,
        )


def _class_images(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataError(f"{directory} is missing: every class of val needs a folder in train")
    files = list_images(directory)
    if not files:
        raise DataError(f"class folder {directory} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def _train_items(train_dir: Path, wnids: list[str], per_class: int | None, limit: int | None) -> list[tuple[Path, int]]:
    if not train_dir.is_dir():
        raise DataNotFoundError(f"imagenet: {train_dir} is not a folder; expected {LAYOUT}")
    for name in list_classes(train_dir):
        if name not in wnids:
            raise DataError(f"{train_dir / name} is not a class: {train_dir.parent / 'val'} has no folder {name!r}")
    # (rank within its class, class, path): sorting by rank takes the classes in turn under train_limit.
    ranked = [
        (rank, label, path)
        for label, wnid in enumerate(wnids)
        for rank, path in enumerate(_class_images(train_dir / wnid)[:per_class])
    ]
    if limit is not None and limit < len(ranked):
        ranked = sorted(ranked)[:limit]
    return [(path, label) for _, label, path in sorted(ranked, key=lambda r: (r[1], r[0]))]


def _val_items(val_dir: Path, wnids: list[str], image_list: Path | None) -> list[tuple[Path, int]]:
    items: list[tuple[Path, int]] = []
    by_stem: dict[str, tuple[Path, int]] = {}
    for label, wnid in enumerate(wnids):
        for path in _class_images(val_dir / wnid):
            if path.stem in by_stem:
                raise DataError(f"{path} and {by_stem[path.stem][0]} share the name {path.stem}; rename one")
            by_stem[path.stem] = (path, label)
            items.append((path, label))
    if image_list is None:
        return items
    return _listed(image_list.expanduser(), by_stem, val_dir)


def _listed(listing: Path, by_stem: dict[str, tuple[Path, int]], val_dir: Path) -> list[tuple[Path, int]]:
    if not listing.is_file():
        raise DataNotFoundError(f"image_list {listing} is not a file")
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read image_list {listing}: {err}") from err
    items: list[tuple[Path, int]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{listing}:{number}"
        if len(fields) > 2:
            raise DataError(f"{where}: expected '<image name> [class index]', got {line.strip()!r}")
        name = Path(fields[0]).name
        stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
        if stem not in by_stem:
            raise DataError(f"{where}: image {fields[0]!r} is not in {val_dir}")
        if stem in seen:
            raise DataError(f"{where}: image {fields[0]!r} is listed twice (also on line {seen[stem]})")
        seen[stem] = number
        path, label = by_stem[stem]
        if len(fields) == 2:
            try:
                given = int(fields[1])
            except ValueError:
                raise DataError(f"{where}: class index {fields[1]!r} is not an integer") from None
            if given != label:
                raise DataError(
                    f"{where}: lists {stem} as class {given} but it is in {path.parent.name}, class {label} of the "
                    f"sorted wnids in {val_dir}"
                )
        items.append((path, label))
    if not items:
        raise DataError(f"image_list {listing} lists no images")
    return items


def _read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except _READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def _xml_path(bbox_dir: Path, image: Path, wnid: str) -> Path:
    flat, nested = bbox_dir / f"{image.stem}.xml", bbox_dir / wnid / f"{image.stem}.xml"
    for candidate in (flat, nested):
        if candidate.is_file():
            return candidate
    raise DataError(f"bounding boxes {flat} for image {image} are missing (nor in {nested}; set masks: false)")


class _Refused(Exception):
    pass


def _refuse(*_: Any) -> int:  # never returns; typed for ExternalEntityRefHandler, which returns an int
    raise _Refused


def parse_xml(path: Path) -> Element:
    """The root element of the XML file ``path``; DOCTYPE and ENTITY declarations are refused.

    Raises:
        DataError: the file cannot be read, is malformed or declares a DOCTYPE or an entity.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read bounding boxes {path}: {err.strerror or err}") from err
    parser = expat.ParserCreate()
    builder = TreeBuilder()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    # Any DTD is refused before it can declare an entity; external entities are never fetched.
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data, True)
        return builder.close()
    except _Refused:
        raise DataError(f"bounding boxes {path} declare a DOCTYPE or entity, which is refused") from None
    # TreeBuilder.close asserts on an unclosed tree; an unknown declared encoding is a LookupError, bytes
    # that are not in the declared one a ValueError.
    except (expat.ExpatError, AssertionError, LookupError, ValueError) as err:
        raise DataError(f"bounding boxes {path} are malformed XML: {err}") from None


def _number(element: Element, tag: str, path: Path) -> float:
    child = element.find(tag)
    text = (child.text or "").strip() if child is not None else ""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"bounding boxes {path}: <{element.tag}> needs a number in <{tag}>, got {text!r}")
    return value


def _clip(value: float, limit: float) -> float:
    return min(max(value, 0.0), limit)


def box_mask_for(path: Path, image_size: tuple[int, int], wnid: str | None) -> np.ndarray:
    """The bool (H, W) union of the boxes in the XML file ``path`` for an image of ``image_size`` (W, H).

    ``wnid`` keeps only the boxes named so; None keeps all. See the module docstring for the
    coordinate convention, scaling and clipping.

    Raises:
        DataError: the file is malformed, refused, or not a PASCAL VOC annotation.
    """
    root = parse_xml(path)
    if root.tag != "annotation":
        raise DataError(f"bounding boxes {path} have root <{root.tag}>; expected <annotation>")
    width, height = image_size
    xml_w, xml_h = float(width), float(height)
    size = root.find("size")
    if size is not None:
        xml_w, xml_h = _number(size, "width", path), _number(size, "height", path)
        if xml_w < 1 or xml_h < 1:
            raise DataError(f"bounding boxes {path} give the image size {xml_w:g}x{xml_h:g}")
    sx, sy = width / xml_w, height / xml_h
    mask = np.zeros((height, width), dtype=bool)
    for obj in root.iter("object"):
        name = obj.find("name")
        if name is None or not (name.text or "").strip():
            raise DataError(f"bounding boxes {path}: an <object> has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"bounding boxes {path}: object {name.text!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"bounding boxes {path}: object {name.text!r} has xmax < xmin or ymax < ymin")
        if wnid is not None and (name.text or "").strip() != wnid:
            continue
        # Inclusive pixel indices: the box spans [xmin, xmax + 1) in continuous coordinates, clipped to the
        # image before scaling (so that no coordinate, however large, overflows).
        x0, x1 = math.floor(_clip(xmin, xml_w) * sx), min(width, math.ceil(_clip(xmax + 1, xml_w) * sx))
        y0, y1 = math.floor(_clip(ymin, xml_h) * sy), min(height, math.ceil(_clip(ymax + 1, xml_h) * sy))
        if x0 < x1 and y0 < y1:
            mask[y0:y1, x0:x1] = True
    return mask


def class_names(root: Path, wnids: list[str]) -> list[str]:
    """Readable names from ``ROOT/LOC_synset_mapping.txt`` if it exists, else the wnids themselves."""
    mapping_file = root / SYNSET_MAPPING
    if not mapping_file.is_file():
        return list(wnids)
    try:
        lines = mapping_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {mapping_file}: {err}") from err
    readable: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[1].split(",")[0].strip():
            raise DataError(f"{mapping_file}:{number}: expected '<wnid> <name>[, <name>...]', got {line.strip()!r}")
        readable[fields[0]] = fields[1].split(",")[0].strip()
    names = [readable.get(w, w) for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids, strict=True)]
