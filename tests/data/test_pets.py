from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image

from xbench.data import pets
from xbench.data.base import ImageSplit
from xbench.data.pets import CLASSES, OxfordIIITPet, PetsParams
from xbench.errors import DataError, DataNotFoundError
from xbench.registry import DATASETS

W, H = 40, 32  # the photos are not square: resizing must still keep the painted regions
# The pet is a red box, its border a 4-pixel band around it, the rest blue background.
PET_BOX = (12, 8, 28, 24)  # left, top, right, bottom (exclusive)
BAND = 4

TRAINVAL = [("Abyssinian_100", 1, 1, 1), ("yorkshire_terrier_5", 37, 2, 25), ("Bengal_3", 6, 1, 2)]
TEST = [("Persian_7", 24, 1, 7), ("pug_12", 26, 2, 18)]


def paint(directory: Path, name: str) -> None:
    left, top, right, bottom = PET_BOX
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 2] = 220
    image[top:bottom, left:right] = (230, 20, 20)
    Image.fromarray(image).save(directory / "images" / f"{name}.jpg", quality=95)
    trimap = np.full((H, W), 2, np.uint8)
    trimap[top - BAND : bottom + BAND, left - BAND : right + BAND] = 3
    trimap[top:bottom, left:right] = 1
    Image.fromarray(trimap).save(directory / "annotations" / "trimaps" / f"{name}.png")


def make_pets(root: Path) -> Path:
    """A tiny copy in the dataset's own layout under ``root/oxford-iiit-pet``."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for split, rows in (("trainval", TRAINVAL), ("test", TEST)):
        lines = [" ".join(str(v) for v in row) for row in rows]
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for row in rows:
            paint(base, row[0])
    return base


def load(split: str, data_dir: Path | None, download: bool = False, **params: Any) -> ImageSplit:
    return OxfordIIITPet(PetsParams(**params), data_dir=data_dir, download=download).load(split)  # type: ignore[arg-type]


def test_registered_under_its_name() -> None:
    cls = DATASETS.get("oxford_iiit_pet")
    assert cls is OxfordIIITPet
    assert cls.has_masks and cls.Params is PetsParams
    assert len(CLASSES) == 37 and CLASSES[0] == "Abyssinian" and CLASSES[-1] == "Yorkshire Terrier"


def test_local_copy_loads_with_labels_and_masks(tmp_path: Path) -> None:
    base = make_pets(tmp_path)
    train = load("train", tmp_path, image_size=20)
    assert train.images.shape == (3, 3, 20, 20) and train.images.dtype == torch.float32
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 36, 5]
    assert train.classes == CLASSES and train.num_classes == 37
    assert train.source == str(base)
    assert train.masks is not None and train.masks.shape == (3, 1, 20, 20) and train.masks.dtype == torch.bool
    # 40x32 -> 20x20: x scales by 1/2, y by 20/32. Pet centre (20, 16) -> (10, 10); corner stays background;
    # the border band left of the pet (x in 8..11, y in 8..23) -> x = 4..5, y = 5..14.
    for i in range(3):
        mask, image = train.masks[i, 0], train.images[i]
        assert mask[10, 10] and not mask[0, 0] and not mask[19, 19]
        assert mask[10, 4] and mask[10, 5], "the border band counts as object"
        assert not mask[10, 2]
        assert image[0, 10, 10] > 0.8 and image[2, 10, 10] < 0.2  # red pet
        assert image[0, 0, 0] < 0.2 and image[2, 0, 0] > 0.75  # blue background
    test = load("test", tmp_path, image_size=16)
    assert test.labels.tolist() == [23, 25] and test.images.shape == (2, 3, 16, 16)


def test_mask_is_pet_and_border_resized_with_nearest(tmp_path: Path) -> None:
    base = make_pets(tmp_path)
    trimap_file = base / "annotations" / "trimaps" / "Persian_7.png"
    trimap = Image.open(trimap_file)
    codes = np.asarray(trimap.resize((24, 24), Image.Resampling.NEAREST))
    split = load("test", tmp_path, image_size=24)
    assert split.masks is not None
    assert split.masks[0, 0].numpy().tolist() == np.isin(codes, (1, 3)).tolist()
    # A palette trimap is read by its indices, not by its palette's grey levels.
    palette = Image.fromarray(np.asarray(trimap), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255, 90, 90, 90, 160, 160, 160])
    palette.save(trimap_file)
    again = load("test", tmp_path, image_size=24)
    assert again.masks is not None and torch.equal(again.masks, split.masks)


def test_limit_is_a_fixed_sample(tmp_path: Path) -> None:
    make_pets(tmp_path)
    a, b = load("train", tmp_path, image_size=8, limit=2), load("train", tmp_path, image_size=8, limit=2)
    assert len(a) == 2 and torch.equal(a.images, b.images) and a.labels.tolist() == b.labels.tolist()
    assert set(a.labels.tolist()) <= {0, 36, 5}
    assert len(load("train", tmp_path, image_size=8, limit=10)) == 3


def test_missing_folder_names_it_and_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pets, "_fetch", lambda root: pytest.fail("download attempted"))
    with pytest.raises(DataNotFoundError) as info:
        load("train", tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'nowhere'}" in message and "oxford-iiit-pet" in message
    assert "robots.ox.ac.uk/~vgg/data/pets" in message and "downloads are disabled" in message


def test_download_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        make_pets(root)

    monkeypatch.setattr(pets, "_fetch", fake_download)
    split = load("test", tmp_path / "dl", download=True, image_size=8)
    assert calls == [tmp_path / "dl"] and split.labels.tolist() == [23, 25]


def test_missing_image_or_bad_trimap_names_the_file(tmp_path: Path) -> None:
    base = make_pets(tmp_path)
    image = base / "images" / "pug_12.jpg"
    image.unlink()
    with pytest.raises(DataError, match=re.escape(str(image))):
        load("test", tmp_path)
    paint(base, "pug_12")
    trimap = base / "annotations" / "trimaps" / "pug_12.png"
    Image.fromarray(np.full((H, W + 1), 1, np.uint8)).save(trimap)
    with pytest.raises(DataError, match=re.escape(str(trimap))):
        load("test", tmp_path)
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(trimap)
    with pytest.raises(DataError, match=f"{re.escape(str(trimap))} has values"):
        load("test", tmp_path)


def test_invalid_params_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        PetsParams(image_size=4)
    with pytest.raises(pydantic.ValidationError, match="size"):
        PetsParams(size=32)  # type: ignore[call-arg]
