from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from xbench.data import fashion_mnist as fm
from xbench.data.base import ImageSplit
from xbench.data.cluttered import ClutteredParams, FashionMNISTCluttered, render_cluttered
from xbench.data.synthetic import derived_seed
from xbench.errors import DataError, DataNotFoundError
from xbench.params import NoParams
from xbench.registry import DATASETS

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
THRESHOLD_U8 = 25  # 25/255 < 0.1 < 26/255: the default mask threshold falls between these


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items with a random-textured bright rectangle (> threshold) on a faint (<= threshold) background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, THRESHOLD_U8 + 1, size=(n, 28, 28), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(0, 10, size=2)
        height, width = rng.integers(8, 18, size=2)
        patch = image[top : top + height, left : left + width]
        patch[...] = rng.integers(THRESHOLD_U8 + 1, 256, size=patch.shape)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_fake(directory: Path, n_train: int = 20, n_test: int = 12, same: bool = False) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for i, split in enumerate(("train", "test")):
        images, labels = fake_items(n_train if split == "train" else n_test, seed=0 if same else i)
        write_idx(directory / fm.FILES[split][0], images)
        write_idx(directory / fm.FILES[split][1], labels)
        data[split] = (images, labels)
    return data


def load(split: str, data_dir: Path | None, **params: Any) -> ImageSplit:
    dataset = FashionMNISTCluttered(ClutteredParams(**params), data_dir=data_dir, download=False)
    return dataset.load(split)  # type: ignore[arg-type]


def reference_render(
    pool: torch.Tensor, scenes: Any, i: int, canvas: int, f: int, threshold: float = 0.1, with_object: bool = True
) -> torch.Tensor:
    """One canvas re-rendered with plain slicing, from the draws render_cluttered reports."""
    image = torch.zeros(canvas, canvas)
    draws = zip(scenes.donors[i].tolist(), scenes.crops[i].tolist(), scenes.pastes[i].tolist(), strict=True)
    for d, (cy, cx), (py, px) in draws:
        region = image[py : py + f, px : px + f]
        region.copy_(torch.maximum(region, pool[d, 0, cy : cy + f, cx : cx + f]))
    if not with_object:
        return image
    oy, ox = scenes.offsets[i].tolist()
    obj = pool[i, 0]
    region = image[oy : oy + 28, ox : ox + 28]
    region.copy_(torch.where(obj > threshold, obj, torch.maximum(region, obj)))
    return image


def test_registered_under_its_name() -> None:
    cls = DATASETS.get("fashion_mnist_cluttered")
    assert cls is FashionMNISTCluttered
    assert cls.has_masks and cls.Params is ClutteredParams


def test_shapes_dtypes_ranges_labels_and_source(tmp_path: Path) -> None:
    data = write_fake(tmp_path)
    train = load("train", tmp_path, canvas=40)
    assert train.images.shape == (20, 1, 40, 40) and train.images.dtype == torch.float32
    assert train.masks is not None and train.masks.shape == (20, 1, 40, 40) and train.masks.dtype == torch.bool
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == data["train"][1].tolist()
    assert train.classes == fm.CLASSES
    assert train.source == f"{tmp_path} cluttered(seed=0)"
    assert len(train.mean) == len(train.std) == 1 and 0 < train.mean[0] < 1 and 0 < train.std[0] < 1
    # Every item keeps its own label, and a limit keeps the first items.
    test = load("test", tmp_path, canvas=40, n_test=5, seed=3)
    assert len(test) == 5 and test.labels.tolist() == data["test"][1][:5].tolist()
    assert test.source == f"{tmp_path} cluttered(seed=3)"


def test_mask_is_the_object_at_its_offset_and_image_matches_a_reference(tmp_path: Path) -> None:
    write_fake(tmp_path)
    split = load("train", tmp_path, canvas=48, n_distractors=6, fragment_size=9, seed=5)
    pool = fm.FashionMNIST(NoParams(), data_dir=tmp_path, download=False).load("train").images
    scenes = render_cluttered(
        pool, 20, canvas=48, n_distractors=6, fragment_size=9, seed=derived_seed(5, "train"), mask_threshold=0.1
    )
    assert split.masks is not None
    assert torch.equal(split.images, scenes.images) and torch.equal(split.masks, scenes.masks)
    assert scenes.offsets.min() >= 0 and scenes.offsets.max() <= 48 - 28
    # Fragments come from other items only.
    assert not (scenes.donors == torch.arange(20).unsqueeze(1)).any()
    assert scenes.donors.min() >= 0 and scenes.donors.max() < 20
    for i in range(20):
        oy, ox = scenes.offsets[i].tolist()
        obj = pool[i, 0]
        expected = torch.zeros(48, 48, dtype=torch.bool)
        expected[oy : oy + 28, ox : ox + 28] = obj > 0.1
        mask = split.masks[i, 0]
        assert torch.equal(mask, expected), i
        assert mask.any()
        # Inside the mask the image is exactly the object's own pixels.
        assert torch.equal(split.images[i, 0][mask], obj[obj > 0.1])
        assert torch.equal(split.images[i, 0], reference_render(pool, scenes, i, 48, 9, 0.1)), i
    # The fragments are visible: bright pixels outside every object's mask.
    assert (split.images[:, 0][~split.masks[:, 0]] > 0.1).any()


def test_distractors_never_show_inside_the_mask(tmp_path: Path) -> None:
    write_fake(tmp_path)
    # Whole-item fragments, many of them: they cover the object's position almost surely.
    params = {"canvas": 32, "n_distractors": 12, "fragment_size": 28, "seed": 1}
    split = load("train", tmp_path, **params)
    pool = fm.FashionMNIST(NoParams(), data_dir=tmp_path, download=False).load("train").images
    scenes = render_cluttered(pool, 20, canvas=32, n_distractors=12, fragment_size=28, seed=derived_seed(1, "train"))
    assert split.masks is not None
    leaked = 0
    for i in range(20):
        oy, ox = scenes.offsets[i].tolist()
        obj = pool[i, 0]
        inside = obj > 0.1
        window = split.images[i, 0, oy : oy + 28, ox : ox + 28]
        assert torch.equal(window[inside], obj[inside]), i
        # The fragments-only canvas is brighter than the object somewhere under the mask, so plain
        # max() compositing would have leaked distractor pixels into it: the check above has teeth.
        fragments_only = reference_render(pool, scenes, i, 32, 28, with_object=False)
        leaked += int((fragments_only[oy : oy + 28, ox : ox + 28][inside] > obj[inside]).any())
    assert leaked > 10


def test_same_seed_is_bit_identical_other_seed_or_split_differs(tmp_path: Path) -> None:
    write_fake(tmp_path, n_train=16, n_test=16, same=True)  # identical items in both splits
    a, b = load("train", tmp_path, canvas=36), load("train", tmp_path, canvas=36)
    assert a.masks is not None and b.masks is not None
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    assert a.mean == b.mean and a.std == b.std
    other = load("train", tmp_path, canvas=36, seed=1)
    assert other.masks is not None
    assert not torch.equal(a.images, other.images) and not torch.equal(a.masks, other.masks)
    assert torch.equal(a.labels, other.labels)
    test = load("test", tmp_path, canvas=36)
    assert torch.equal(a.labels, test.labels)  # same items...
    assert not torch.equal(a.images, test.images)  # ...placed with the test split's own seed


def test_invalid_params_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        ClutteredParams(canvas=27)
    with pytest.raises(pydantic.ValidationError):
        ClutteredParams(fragment_size=29)
    with pytest.raises(pydantic.ValidationError, match="n_distractor"):
        ClutteredParams(n_distractor=3)  # type: ignore[call-arg]


def test_one_item_cannot_give_fragments_of_others(tmp_path: Path) -> None:
    images, labels = fake_items(1, seed=0)
    write_idx(tmp_path / fm.FILES["test"][0], images)
    write_idx(tmp_path / fm.FILES["test"][1], labels)
    with pytest.raises(DataError, match="at least 2"):
        load("test", tmp_path)
    alone = load("test", tmp_path, n_distractors=0, canvas=28)
    assert alone.images.shape == (1, 1, 28, 28)
    assert torch.equal(alone.images[0, 0], torch.from_numpy(images[0]).float() / 255)


def test_missing_data_is_reported_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIRS", (tmp_path / "no-system",))
    monkeypatch.setattr(fm, "_fetch", lambda root: pytest.fail("download attempted"))
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load("test", tmp_path / "empty")


@pytest.mark.skipif(not (REAL_DIR / "t10k-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent")
def test_real_debian_files(tmp_path: Path) -> None:
    split = load("test", tmp_path / "empty", n_test=40)
    base = fm.FashionMNIST(NoParams(), data_dir=tmp_path / "empty", download=False).load("test")
    assert split.source == f"{REAL_DIR} cluttered(seed=0)"
    assert split.images.shape == (40, 1, 64, 64) and split.masks is not None
    assert torch.equal(split.labels, base.labels[:40])
    counts = split.masks.sum(dim=(1, 2, 3))
    assert (counts > 20).all() and (counts <= 28 * 28).all()
    # Each item's mask covers exactly its pixels above the threshold.
    assert torch.equal(counts, (base.images[:40] > 0.1).sum(dim=(1, 2, 3)))
