from __future__ import annotations

import math
from typing import Any

import pydantic
import pytest
import torch

from xbench.data.synthetic import SHAPES, SyntheticShapes, SyntheticShapesParams, render_shapes
from xbench.registry import DATASETS


def _load(split: str = "train", **params: Any) -> Any:
    return SyntheticShapes(SyntheticShapesParams(**params)).load(split)  # type: ignore[arg-type]


def test_registered_under_its_name() -> None:
    cls = DATASETS.get("synthetic_shapes")
    assert cls is SyntheticShapes
    assert cls.has_masks and cls.Params is SyntheticShapesParams


def test_shapes_dtypes_ranges_and_defaults() -> None:
    split = _load("test")  # defaults: 500 test images, 3x32x32
    assert split.images.shape == (500, 3, 32, 32) and split.images.dtype == torch.float32
    assert split.labels.shape == (500,) and split.labels.dtype == torch.int64
    assert split.masks is not None
    assert split.masks.shape == (500, 1, 32, 32) and split.masks.dtype == torch.bool
    assert float(split.images.min()) >= 0.0 and float(split.images.max()) <= 1.0
    assert split.classes == list(SHAPES) and split.num_classes == 6
    assert len(split.mean) == len(split.std) == 3
    assert all(0.1 < s < 0.5 for s in split.std)


def test_labels_are_balanced_over_all_classes() -> None:
    split = _load(n_train=60)
    assert split.labels.bincount(minlength=len(SHAPES)).tolist() == [10] * len(SHAPES)


def test_grey_images_have_one_channel() -> None:
    split = _load(n_train=12, channels=1, image_size=20)
    assert split.images.shape == (12, 1, 20, 20)
    assert split.masks is not None and split.masks.shape == (12, 1, 20, 20)
    assert len(split.mean) == 1


def test_two_loads_are_bit_identical() -> None:
    a, b = _load(n_train=64), _load(n_train=64)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert a.masks is not None and b.masks is not None and torch.equal(a.masks, b.masks)
    assert a.mean == b.mean and a.std == b.std


def test_seeds_and_splits_give_different_data() -> None:
    train, test = _load("train", n_train=64, n_test=64), _load("test", n_train=64, n_test=64)
    other = _load("train", n_train=64, seed=1)
    assert not torch.equal(train.images, test.images)
    assert not torch.equal(train.images, other.images)
    assert not torch.equal(train.masks, other.masks)
    # Normalisation statistics do not depend on the split.
    assert train.mean == test.mean


def test_unknown_or_invalid_params_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="n_trian"):
        SyntheticShapesParams(n_trian=10)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        SyntheticShapesParams(channels=2)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        SyntheticShapesParams(image_size=4)


def _inside(kind: str, dx: float, dy: float, vertical: bool) -> bool:
    # An independent, per-pixel restatement of the shapes in the module docstring.
    if kind == "square":
        return max(abs(dx), abs(dy)) <= 0.85
    if kind == "circle":
        return dx * dx + dy * dy <= 1.0
    if kind == "triangle":
        return -1.0 <= dy <= 1.0 and abs(dx) <= (dy + 1.0) / 2
    if kind == "cross":
        return max(abs(dx), abs(dy)) <= 1.0 and min(abs(dx), abs(dy)) <= 0.3
    if kind == "ring":
        return 0.55**2 <= dx * dx + dy * dy <= 1.0
    assert kind == "bar"
    along, across = (dy, dx) if vertical else (dx, dy)
    return abs(along) <= 1.0 and abs(across) <= 0.3


def test_masks_match_the_analytic_shapes() -> None:
    scenes = render_shapes(24, image_size=24, seed=5)
    assert set(scenes.labels.tolist()) == set(range(len(SHAPES)))
    assert scenes.vertical[scenes.labels == SHAPES.index("bar")].unique().numel() == 2  # both orientations
    for i in range(24):
        kind = SHAPES[int(scenes.labels[i])]
        cx, cy = (float(v) for v in scenes.centers[i])
        r = float(scenes.radii[i])
        expected = torch.tensor(
            [
                [_inside(kind, (x - cx) / r, (y - cy) / r, bool(scenes.vertical[i])) for x in range(24)]
                for y in range(24)
            ]
        )
        assert torch.equal(scenes.masks[i, 0], expected), f"sample {i} ({kind})"


def test_mask_is_exactly_the_pixels_painted_with_the_shape_colour() -> None:
    scenes = render_shapes(60, noise=0.0, distractors=3, seed=2)
    colors = scenes.colors.view(60, 3, 1, 1)
    painted = (scenes.images == colors).all(dim=1, keepdim=True)
    assert torch.equal(painted, scenes.masks)
    assert bool(scenes.masks.flatten(1).any(dim=1).all())  # no empty masks


def test_distractors_lie_outside_the_mask() -> None:
    # Backgrounds stay at or below 0.5 before noise; distractors are at least 0.55 bright like shapes.
    def bright_outside(distractors: int) -> int:
        s = render_shapes(60, noise=0.0, distractors=distractors, seed=4)
        outside = ~s.masks.expand_as(s.images)
        return int((s.images[outside] > 0.5 + 1e-6).sum())

    assert bright_outside(0) == 0
    assert bright_outside(3) > 60


def test_shape_pixels_carry_the_shape_colour_under_noise() -> None:
    scenes = render_shapes(30, noise=0.05, seed=1)
    for i in range(30):
        inside = scenes.images[i][:, scenes.masks[i, 0]]
        err = (inside.mean(dim=1) - scenes.colors[i]).abs().max()
        # The mean of n noisy pixels is within a few standard errors, plus the clamp at 1.
        assert float(err) < 4 * 0.05 / math.sqrt(inside.shape[1]) + 0.02
