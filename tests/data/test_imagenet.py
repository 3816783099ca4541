from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from tests.data.imagenet_fixture import (
    CLASSES,
    UNKNOWN_WNID,
    make_imagenet,
    other_box,
    outside_box,
    own_box,
    val_stem,
    write_jpeg,
    write_xml,
)
from xbench.data.base import ImageSplit
from xbench.data.imagenet import MEAN, STD, ImageNet, ImageNetParams, box_mask_for
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS

SMALL = {"resize": 40, "image_size": 32}


def load(split: str, root: Path, **params: Any) -> ImageSplit:
    return ImageNet(ImageNetParams(root=root, **params)).load(split)  # type: ignore[arg-type]


def val_paths(root: Path) -> list[Path]:
    """The val images in the order of the test split: sorted wnids, then sorted names."""
    return [p for wnid in sorted(CLASSES) for p in sorted((root / "val" / wnid).glob("*.JPEG"))]


def reference(path: Path, resize: int, crop: int) -> torch.Tensor:
    """torchvision's evaluation transform applied by hand to the PIL image."""
    transform = v2.Compose([v2.Resize(resize), v2.CenterCrop(crop)])
    with Image.open(path) as image:
        out = transform(image.convert("RGB"))
    return v2.functional.pil_to_tensor(out).float() / 255.0


def box(mask: np.ndarray, b: tuple[int, int, int, int]) -> None:
    xmin, ymin, xmax, ymax = b
    mask[max(ymin, 0) : ymax + 1, max(xmin, 0) : xmax + 1] = True


def one_line(info: pytest.ExceptionInfo[Exception]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_registered_and_params() -> None:
    assert DATASETS.get("imagenet") is ImageNet and ImageNet.Params is ImageNetParams
    p = ImageNetParams(root=Path("x"))
    assert (p.resize, p.image_size, p.boxes, p.masks, p.train_per_class, p.train_limit) == (
        256,
        224,
        "label",
        True,
        10,
        None,
    )
    assert p.image_list is None and p.bbox_dir is None
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ImageNetParams(root=Path("x"), limit=3)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="larger than resize"):
        ImageNetParams(root=Path("x"), resize=32, image_size=40)
    with pytest.raises(pydantic.ValidationError, match="train_per_class or train_limit"):
        ImageNetParams(root=Path("x"), train_per_class=None)
    with pytest.raises(pydantic.ValidationError, match="boxes"):
        ImageNetParams(root=Path("x"), boxes="some")  # type: ignore[arg-type]


def test_classes_labels_and_shapes(tmp_path: Path) -> None:
    # Classes are sorted wnids whatever order the tree was written in.
    root = make_imagenet(tmp_path, classes=("n01484850", "n01440764", "n01443537"))
    test = load("test", root, **SMALL)
    assert test.classes == sorted(CLASSES) and test.source == str(root)
    assert test.images.shape == (9, 3, 32, 32) and test.images.dtype == torch.float32
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    assert test.labels.dtype == torch.int64 and test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert test.masks is not None and test.masks.shape == (9, 1, 32, 32) and test.masks.dtype == torch.bool
    assert test.mean == MEAN == (0.485, 0.456, 0.406) and test.std == STD == (0.229, 0.224, 0.225)
    train = load("train", root, **SMALL)
    assert train.classes == test.classes and train.masks is None
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and train.images.shape == (12, 3, 32, 32)


def test_transform_is_torchvision_resize_and_center_crop(imagenet_root: Path) -> None:
    test = load("test", imagenet_root, masks=False, **SMALL)
    paths = val_paths(imagenet_root)
    assert test.masks is None and len(paths) == len(test) == 9
    for i, path in enumerate(paths):  # landscape, portrait and wider images
        assert torch.equal(test.images[i], reference(path, 40, 32)), path
    # The defaults are the standard 256/224.
    listing = imagenet_root / "one.txt"
    listing.write_text(f"{paths[4].name}\n")
    default = load("test", imagenet_root, image_list=listing)
    assert default.images.shape == (1, 3, 224, 224) and default.masks is not None
    assert torch.equal(default.images[0], reference(paths[4], 256, 224))
    train = load("train", imagenet_root, train_per_class=1, **SMALL)
    first = sorted((imagenet_root / "train" / CLASSES[1]).glob("*.JPEG"))[0]
    assert torch.equal(train.images[1], reference(first, 40, 32))


def test_mask_follows_resize_and_crop_by_hand(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path, classes=("n01440764",), per_class_train=1, per_class_val=1)
    # Replace the only val image by a 96x64 one with one box at columns 40..63, rows 10..41.
    image = root / "val" / "n01440764" / f"{val_stem(1)}.JPEG"
    write_jpeg(image, (96, 64), np.random.default_rng(1))
    xml = root / "bbox_val" / f"{val_stem(1)}.xml"
    write_xml(xml, (96, 64), [("n01440764", (40, 10, 63, 41))])
    # Resize 64 -> 32 halves the image to 48x32: nearest keeps source pixel 2j at j, so columns
    # 20..31 and rows 5..20; the centre crop of 32 drops 8 columns on the left: columns 12..23.
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[5:21, 12:24] = True
    test = load("test", root, resize=32, image_size=32)
    assert test.masks is not None and torch.equal(test.masks[0, 0], expected)
    # The same box given for a 192x128 original is scaled to the 96x64 image on disk.
    write_xml(xml, (192, 128), [("n01440764", (80, 20, 127, 83))])
    test = load("test", root, resize=32, image_size=32)
    assert test.masks is not None and torch.equal(test.masks[0, 0], expected)


def test_boxes_label_or_all(imagenet_root: Path) -> None:
    # Image 1 (class 0, first in the split) is 80x64: resize 64 leaves it, the crop drops 8 columns each side.
    w, h = 80, 64
    own, union = np.zeros((h, w), bool), np.zeros((h, w), bool)
    box(own, own_box(w, h))
    for b in (own_box(w, h), other_box(w, h), outside_box(w, h)):
        box(union, b)
    assert union[h - 1, w - 1] and union[0, 0] and not own[0, 0]  # the outside box is clipped, not dropped
    label = load("test", imagenet_root, resize=64, image_size=64)
    every = load("test", imagenet_root, resize=64, image_size=64, boxes="all")
    assert label.masks is not None and every.masks is not None
    assert label.masks[0, 0].numpy().tolist() == own[:, 8:72].tolist()
    assert every.masks[0, 0].numpy().tolist() == union[:, 8:72].tolist()
    assert bool((every.masks >= label.masks).all()) and int(every.masks.sum()) > int(label.masks.sum())


def test_box_mask_clips_and_ignores_unknown(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    write_xml(xml, (8, 6), [("n1", (5, 4, 20, 20)), ("n1", (-3, -2, 0, 0)), (UNKNOWN_WNID, (0, 0, 7, 5))])
    expected = np.zeros((6, 8), bool)
    expected[4:6, 5:8] = True
    expected[0, 0] = True
    assert box_mask_for(xml, (8, 6), "n1").tolist() == expected.tolist()
    assert box_mask_for(xml, (8, 6), None).all()
    assert not box_mask_for(xml, (8, 6), "n2").any()


def test_image_list_orders_and_restricts(imagenet_root: Path) -> None:
    listing = imagenet_root / "list.txt"
    # TAME's format (name, class index, a trailing space), bare stems, comments and blank lines.
    listing.write_text(f"{val_stem(9)}.JPEG 2 \n\n# a comment\n{val_stem(1)}\n{val_stem(5)}.JPEG 1\n")
    test = load("test", imagenet_root, image_list=listing, **SMALL)
    assert test.labels.tolist() == [2, 0, 1]
    everything = load("test", imagenet_root, **SMALL)
    order = [p.stem for p in val_paths(imagenet_root)]
    for row, n in enumerate((9, 1, 5)):
        assert torch.equal(test.images[row], everything.images[order.index(val_stem(n))])
        assert everything.masks is not None and test.masks is not None
        assert torch.equal(test.masks[row], everything.masks[order.index(val_stem(n))])


@pytest.mark.parametrize(
    ("lines", "bad_line", "problem"),
    [
        ([f"{val_stem(1)}", "ILSVRC2012_val_00000077.JPEG"], 2, "is not in"),
        ([f"{val_stem(1)} 1"], 1, "as class 1 but it is in n01440764, class 0"),
        ([f"{val_stem(1)} one"], 1, "not an integer"),
        ([f"{val_stem(1)}", f"{val_stem(1)}.JPEG"], 2, "listed twice"),
        ([f"{val_stem(1)} 0 extra"], 1, "expected"),
    ],
)
def test_image_list_errors_name_file_and_line(
    imagenet_root: Path, lines: list[str], bad_line: int, problem: str
) -> None:
    listing = imagenet_root / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{re.escape(str(listing))}:{bad_line}: .*{re.escape(problem)}") as info:
        load("test", imagenet_root, image_list=listing, **SMALL)
    one_line(info)


def test_missing_or_empty_image_list(imagenet_root: Path) -> None:
    missing = imagenet_root / "nope.txt"
    with pytest.raises(DataNotFoundError, match=re.escape(str(missing))):
        load("test", imagenet_root, image_list=missing, **SMALL)
    missing.write_text("# nothing\n")
    with pytest.raises(DataError, match="lists no images"):
        load("test", imagenet_root, image_list=missing, **SMALL)


def test_train_subset_is_deterministic(imagenet_root: Path) -> None:
    two = load("train", imagenet_root, train_per_class=2, **SMALL)
    assert two.labels.tolist() == [0, 0, 1, 1, 2, 2]
    firsts = [sorted((imagenet_root / "train" / w).glob("*.JPEG"))[:2] for w in CLASSES]
    for row, path in enumerate(p for pair in firsts for p in pair):
        assert torch.equal(two.images[row], reference(path, 40, 32))
    # A cap takes the classes in turn: the first image of each class, then the second of class 0.
    capped = load("train", imagenet_root, train_per_class=3, train_limit=4, **SMALL)
    assert capped.labels.tolist() == [0, 0, 1, 2]
    assert torch.equal(capped.images[1], two.images[1]) and torch.equal(capped.images[3], two.images[4])
    assert len(load("train", imagenet_root, train_per_class=None, train_limit=100, **SMALL)) == 12


def test_readable_class_names(imagenet_root: Path) -> None:
    (imagenet_root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 crane\nn01484850 crane\nn09999999 unused\n"
    )
    assert load("test", imagenet_root, **SMALL).classes == ["tench", "crane (n01443537)", "crane (n01484850)"]
    (imagenet_root / "LOC_synset_mapping.txt").write_text("n01440764 tench\nn01443537\n")
    with pytest.raises(DataError, match=re.escape(str(imagenet_root / "LOC_synset_mapping.txt")) + ":2"):
        load("test", imagenet_root, **SMALL)


def test_nested_bbox_dir(imagenet_root: Path, tmp_path: Path) -> None:
    flat = load("test", imagenet_root, **SMALL)
    nested = tmp_path / "boxes"
    for n in range(1, 10):
        wnid = CLASSES[(n - 1) % 3]
        (nested / wnid).mkdir(parents=True, exist_ok=True)
        shutil.move(imagenet_root / "bbox_val" / f"{val_stem(n)}.xml", nested / wnid / f"{val_stem(n)}.xml")
    with pytest.raises(DataError, match=re.escape(str(imagenet_root / "bbox_val" / f"{val_stem(1)}.xml"))) as info:
        load("test", imagenet_root, **SMALL)
    assert "missing" in one_line(info) and "masks: false" in str(info.value)
    again = load("test", imagenet_root, bbox_dir=nested, **SMALL)
    assert flat.masks is not None and again.masks is not None and torch.equal(flat.masks, again.masks)
    shutil.rmtree(imagenet_root / "bbox_val")
    with pytest.raises(DataNotFoundError, match=re.escape(str(imagenet_root / "bbox_val"))):
        load("test", imagenet_root, **SMALL)
    assert load("test", imagenet_root, masks=False, **SMALL).masks is None


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<annotation><object><name>&lol2;</name></object></annotation>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE annotation SYSTEM "http://example.invalid/evil.dtd">
<annotation></annotation>
"""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (BILLION_LAUGHS.encode(), "DOCTYPE or entity"),
        (EXTERNAL.encode(), "DOCTYPE or entity"),
        (BILLION_LAUGHS.replace('"1.0"', '"1.0" encoding="UTF-16"').encode("utf-16"), "DOCTYPE or entity"),
        (b"<annotation><object><name>n01440764</name>", "malformed XML"),
        (b"", "malformed XML"),
        (b"<annotation><size><width>80</width></annotation>", "malformed XML"),
        (b"<annotation>&nbsp;</annotation>", "malformed XML"),
        (b"<voc></voc>", "expected <annotation>"),
        (b"<annotation><object><name>n1</name><bndbox><xmin>a</xmin></bndbox></object></annotation>", "xmin"),
        (b"<annotation><object><name>n1</name></object></annotation>", "no <bndbox>"),
        (
            b"<annotation><object><name>n1</name><bndbox><xmin>9</xmin><ymin>0</ymin><xmax>3</xmax><ymax>4</ymax>"
            b"</bndbox></object></annotation>",
            "xmax < xmin",
        ),
    ],
)
def test_bad_xml_names_the_file(imagenet_root: Path, content: bytes, problem: str) -> None:
    xml = imagenet_root / "bbox_val" / f"{val_stem(4)}.xml"
    xml.write_bytes(content)
    with pytest.raises(DataError, match=f"{re.escape(str(xml))}.*{re.escape(problem)}") as info:
        load("test", imagenet_root, **SMALL)
    one_line(info)
    assert len(load("test", imagenet_root, masks=False, **SMALL)) == 9  # without masks no XML is read


@pytest.mark.parametrize(
    ("rel", "damage", "split"),
    [
        (f"val/n01443537/{val_stem(5)}.JPEG", "empty", "test"),
        (f"val/n01440764/{val_stem(1)}.JPEG", "truncate", "test"),
        ("train/n01484850/n01484850_1.JPEG", "junk", "train"),
    ],
)
def test_corrupt_images_name_the_file(imagenet_root: Path, rel: str, damage: str, split: str) -> None:
    path = imagenet_root / rel
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncate": data[: len(data) // 2], "junk": b"GIF89a not really"}[damage])
    with pytest.raises(DataError, match=f"cannot read image {re.escape(str(path))}") as info:
        load(split, imagenet_root, **SMALL)
    one_line(info)


def test_bad_trees_name_the_folder(imagenet_root: Path) -> None:
    (imagenet_root / "val" / "n01440764" / "notes.txt").write_text("not an image")
    empty = imagenet_root / "val" / "n09999999"
    empty.mkdir()
    with pytest.raises(DataError, match=f"class folder {re.escape(str(empty))} holds no") as info:
        load("test", imagenet_root, **SMALL)
    one_line(info)
    empty.rmdir()
    extra = imagenet_root / "train" / "n09999999"
    extra.mkdir()
    with pytest.raises(DataError, match=re.escape(str(extra))):
        load("train", imagenet_root, **SMALL)
    extra.rmdir()
    shutil.rmtree(imagenet_root / "train" / "n01443537")
    with pytest.raises(DataError, match=re.escape(str(imagenet_root / "train" / "n01443537")) + " is missing"):
        load("train", imagenet_root, **SMALL)
    shutil.rmtree(imagenet_root / "train")
    with pytest.raises(DataNotFoundError, match=re.escape(str(imagenet_root / "train"))):
        load("train", imagenet_root, **SMALL)
    assert len(load("test", imagenet_root, **SMALL)) == 9  # evaluation needs only val
    shutil.rmtree(imagenet_root / "val")
    with pytest.raises(DataNotFoundError, match=re.escape(str(imagenet_root / "val"))) as info:
        load("test", imagenet_root, **SMALL)
    one_line(info)
    with pytest.raises(DataError, match="no split"):
        load("validation", imagenet_root)


def test_duplicate_val_names_are_refused(imagenet_root: Path) -> None:
    twin = imagenet_root / "val" / "n01443537" / f"{val_stem(1)}.jpg"
    shutil.copy(imagenet_root / "val" / "n01440764" / f"{val_stem(1)}.JPEG", twin)
    with pytest.raises(DataError, match=f"{re.escape(str(twin))} and .* share the name"):
        load("test", imagenet_root, masks=False, **SMALL)
