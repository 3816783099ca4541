"""A tiny ILSVRC-2012 tree in torchvision's layout, with validation boxes as ILSVRC's XML files.

``make_imagenet`` writes::

    ROOT/train/<wnid>/<wnid>_<k>.JPEG                       k = 1..per_class_train
    ROOT/val/<wnid>/ILSVRC2012_val_<n:08d>.JPEG             n = 1..len(classes) * per_class_val
    ROOT/bbox_val/ILSVRC2012_val_<n:08d>.xml

Validation image ``n`` belongs to ``classes[(n - 1) % len(classes)]`` (so name order is not class
order, as in ILSVRC). Images are random-noise JPEGs of size ``image_size(n, size)``: ``size``, its
portrait transpose, or a wider one in turn. Each XML holds three boxes (0-based inclusive pixel
indices, as ILSVRC's): ``own_box`` named by the image's wnid, ``other_box`` named by the next
class's wnid and ``outside_box`` named ``UNKNOWN_WNID`` that reaches past the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("n01440764", "n01443537", "n01484850")
UNKNOWN_WNID = "n99999999"
Box = tuple[int, int, int, int]


def val_stem(n: int) -> str:
    return f"ILSVRC2012_val_{n:08d}"


def image_size(n: int, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of image number ``n`` (1-based): ``size``, portrait, wider, in turn."""
    w, h = size
    return [(w, h), (h, w), (w + 24, h + 8)][(n - 1) % 3]


def own_box(w: int, h: int) -> Box:
    """The centre half of the image: (xmin, ymin, xmax, ymax), inclusive."""
    return w // 4, h // 4, (3 * w) // 4 - 1, (3 * h) // 4 - 1


def other_box(w: int, h: int) -> Box:
    """The top-left eighth, named by another class."""
    return 0, 0, w // 8 - 1, h // 8 - 1


def outside_box(w: int, h: int) -> Box:
    """The bottom-right corner and beyond the image, named by an unknown wnid."""
    return w - w // 8, h - h // 8, w + 20, h + 20


def write_xml(path: Path, size: tuple[int, int], objects: Sequence[tuple[str, Box]], folder: str = "val") -> None:
    """An ILSVRC-style annotation for an image of ``size`` (W, H) with ``(wnid, box)`` objects."""
    parts = [
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{path.stem}</filename>\n",
        "\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n",
        f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n",
        "\t<segmented>0</segmented>\n",
    ]
    for wnid, (xmin, ymin, xmax, ymax) in objects:
        parts.append(
            f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        )
    parts.append("</annotation>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")


def write_jpeg(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def make_imagenet(
    root: Path,
    classes: Sequence[str] = CLASSES,
    per_class_train: int = 4,
    per_class_val: int = 3,
    size: tuple[int, int] = (80, 64),
) -> Path:
    """Write the tree described in the module docstring under ``root`` and return ``root``."""
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(classes):
        for k in range(1, per_class_train + 1):
            write_jpeg(root / "train" / wnid / f"{wnid}_{k}.JPEG", image_size(c + k, size), rng)
    for n in range(1, len(classes) * per_class_val + 1):
        wnid = classes[(n - 1) % len(classes)]
        other = classes[n % len(classes)]
        w, h = image_size(n, size)
        write_jpeg(root / "val" / wnid / f"{val_stem(n)}.JPEG", (w, h), rng)
        objects = [(wnid, own_box(w, h)), (other, other_box(w, h)), (UNKNOWN_WNID, outside_box(w, h))]
        write_xml(root / "bbox_val" / f"{val_stem(n)}.xml", (w, h), objects)
    return root
