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

from xbench.data.base import ImageSplit
from xbench.data.folder import FolderParams, ImageFolderDataset, read_mask
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS

W, H = 12, 10

# split, class, stem, suffix, fill colour, mask kind
ITEMS = [
    ("train", "cat", "a", ".png", (200, 10, 10), "0-255"),
    ("train", "cat", "b", ".png", (10, 200, 10), "0-1"),
    ("train", "dog", "c", ".png", (10, 10, 200), "grey"),
    ("test", "cat", "d", ".png", (50, 60, 70), "0-255"),
    ("test", "dog", "e", ".jpg", (120, 120, 120), "0-255"),
]


def expected_mask(kind: str) -> np.ndarray:
    """Object = the left half of the top rows, in every encoding."""
    mask = np.zeros((H, W), bool)
    mask[: H // 2, : W // 2] = True
    if kind == "grey":
        mask[H - 1, W - 1] = True  # 128 is object, 127 is not
    return mask


def mask_pixels(kind: str) -> np.ndarray:
    mask = expected_mask(kind)
    if kind == "0-1":
        return mask.astype(np.uint8)
    if kind == "grey":
        pixels = np.where(mask, 200, 30).astype(np.uint8)
        pixels[H - 1, W - 1], pixels[H - 1, W - 2] = 128, 127
        return pixels
    return mask.astype(np.uint8) * 255


def make_tree(root: Path, items: list[tuple[str, str, str, str, tuple[int, int, int], str]] = ITEMS) -> None:
    for split, cls, stem, suffix, colour, kind in items:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), colour).save(root / split / cls / f"{stem}{suffix}")
        Image.fromarray(mask_pixels(kind)).save(root / "masks" / split / cls / f"{stem}.png")


def load(split: str, root: Path, **params: Any) -> ImageSplit:
    return ImageFolderDataset(FolderParams(root=root, **params)).load(split)  # type: ignore[arg-type]


def test_registered_under_its_name() -> None:
    cls = DATASETS.get("folder")
    assert cls is ImageFolderDataset and cls.Params is FolderParams
    with pytest.raises(pydantic.ValidationError, match="root"):
        FolderParams()  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="mask_dir"):
        FolderParams(root=Path("x"), mask_dir="y")  # type: ignore[call-arg]


def test_loads_images_labels_and_masks(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    train = load("train", tmp_path)
    assert train.classes == ["cat", "dog"] and train.source == str(tmp_path)
    assert train.images.shape == (3, 3, H, W) and train.images.dtype == torch.float32
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 0, 1]
    assert torch.equal((train.images[0, :, 0, 0] * 255).round(), torch.tensor([200.0, 10.0, 10.0]))
    assert train.masks is not None and train.masks.shape == (3, 1, H, W) and train.masks.dtype == torch.bool
    for i, kind in enumerate(("0-255", "0-1", "grey")):
        assert train.masks[i, 0].numpy().tolist() == expected_mask(kind).tolist(), kind
    assert len(train.mean) == len(train.std) == 3
    test = load("test", tmp_path)
    assert test.labels.tolist() == [0, 1] and test.classes == ["cat", "dog"]


def test_resize_grey_and_no_masks(tmp_path: Path) -> None:
    make_tree(tmp_path)
    split = load("train", tmp_path, image_size=8, channels=1)
    assert split.images.shape == (3, 1, 8, 8) and split.masks is not None and split.masks.shape == (3, 1, 8, 8)
    assert split.masks[0, 0, 0, 0] and not split.masks[0, 0, 7, 7]
    # Without masks the masks tree is not needed at all.
    for path in sorted((tmp_path / "masks").rglob("*.png")):
        path.unlink()
    bare = load("train", tmp_path, masks=False)
    assert bare.masks is None and bare.images.shape == (3, 3, H, W)


def test_missing_mask_names_the_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    missing = tmp_path / "masks" / "test" / "dog" / "e.png"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(str(missing))) as info:
        load("test", tmp_path)
    assert "missing" in str(info.value) and "\n" not in str(info.value)


def test_misshapen_mask_names_the_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    bad = tmp_path / "masks" / "train" / "cat" / "b.png"
    Image.new("L", (W, H + 1)).save(bad)
    with pytest.raises(DataError, match=f"mask {re.escape(str(bad))} is {W}x{H + 1}"):
        load("train", tmp_path)
    # Even when images are resized: the mask must match its image as stored.
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load("train", tmp_path, image_size=8)


def test_mixed_sizes_name_the_file_unless_resized(tmp_path: Path) -> None:
    make_tree(tmp_path)
    odd = tmp_path / "train" / "dog" / "c.png"
    Image.new("RGB", (W + 3, H), "white").save(odd)
    Image.new("L", (W + 3, H)).save(tmp_path / "masks" / "train" / "dog" / "c.png")
    with pytest.raises(DataError, match=f"{re.escape(str(odd))} is {W + 3}x{H}.*image_size"):
        load("train", tmp_path)
    assert load("train", tmp_path, image_size=9).images.shape == (3, 3, 9, 9)
    # The first training image fixes the size for the test split too.
    Image.new("RGB", (W, H + 2)).save(tmp_path / "test" / "cat" / "d.png")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "test" / "cat" / "d.png"))):
        load("test", tmp_path, masks=False)


def test_other_bad_trees(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "train"))):
        load("train", tmp_path)
    make_tree(tmp_path)
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "test" / "bird"))):
        load("test", tmp_path)
    (tmp_path / "test" / "bird").rmdir()
    clash = tmp_path / "train" / "cat" / "a.jpg"
    Image.new("RGB", (W, H)).save(clash)
    with pytest.raises(DataError, match=re.escape(str(clash))):
        load("train", tmp_path)
    clash.unlink()
    broken = tmp_path / "train" / "dog" / "c.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read image {re.escape(str(broken))}"):
        load("train", tmp_path, image_size=8)


def test_read_mask_rules(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).save(path)
    assert read_mask(path).tolist() == [[False, True], [True, False]]
    Image.fromarray(np.array([[0, 127], [128, 255]], np.uint8)).save(path)
    assert read_mask(path).tolist() == [[False, False], [True, True]]
    Image.fromarray(np.array([[False, True], [False, False]])).save(path)  # a 1-bit PNG
    assert read_mask(path).tolist() == [[False, True], [False, False]]


@pytest.mark.parametrize(
    ("rel", "damage", "params", "problem"),
    [
        ("train/cat/a.png", "truncate", {}, "cannot read image"),  # the first image, which fixes the size
        ("test/dog/e.jpg", "truncate", {}, "cannot read image"),
        ("train/dog/c.png", "empty", {"masks": False}, "cannot read image"),
        ("masks/train/cat/b.png", "junk", {}, "cannot read mask"),
        ("masks/test/cat/d.png", "truncate", {"image_size": 8}, "cannot read mask"),
    ],
)
def test_corrupt_files_name_the_file(
    tmp_path: Path, rel: str, damage: str, params: dict[str, Any], problem: str
) -> None:
    make_tree(tmp_path)
    path = tmp_path / rel
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "junk": b"GIF89a not really"}[damage])
    with pytest.raises(DataError, match=f"{problem} {re.escape(str(path))}") as info:
        load(rel.removeprefix("masks/").split("/")[0], tmp_path, **params)
    assert "\n" not in str(info.value)


def test_broken_symlink_is_a_missing_image(tmp_path: Path) -> None:
    make_tree(tmp_path)
    link = tmp_path / "train" / "dog" / "z.png"
    link.symlink_to(tmp_path / "elsewhere" / "z.png")
    with pytest.raises(DataError, match=f"image {re.escape(str(link))} is missing.*elsewhere"):
        load("train", tmp_path)
    # A link to an existing image is an image like any other.
    link.unlink()
    link.symlink_to(tmp_path / "train" / "dog" / "c.png")
    (tmp_path / "masks" / "train" / "dog" / "z.png").symlink_to(tmp_path / "masks" / "train" / "dog" / "c.png")
    assert load("train", tmp_path).labels.tolist() == [0, 0, 1, 1]


def test_missing_test_split_names_the_folder(tmp_path: Path) -> None:
    make_tree(tmp_path)
    shutil.rmtree(tmp_path / "test")
    assert load("train", tmp_path).labels.tolist() == [0, 0, 1]
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "test"))):
        load("test", tmp_path)


def test_unlistable_folder_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    locked = tmp_path / "train" / "dog"
    iterdir = Path.iterdir

    def guarded(self: Path) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", guarded)  # chmod does not stop root, who may run the tests
    with pytest.raises(DataError, match=f"cannot list {re.escape(str(locked))}: Permission denied"):
        load("train", tmp_path)
