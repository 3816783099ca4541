"""Saliency files: the sample images, masks and maps a run writes for the saliency grid.

Saliency file format (``RUN_DIR/saliency/<dataset>.npz``), written by
:func:`write_saliency` and read by :func:`read_saliency`:

* ``images``: float32 (N, C, H, W) in [0, 1], C = 1 or 3;
* ``labels``: int64 (N,);
* ``masks`` (optional): bool (N, 1, H, W);
* ``maps/<method>/<explainer>``: float32 (N, H, W) in [0, 1], one array per map set,
  in the order given. The method label may contain ``/``, the explainer label not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xbench.errors import DataError
from xbench.fileio import atomic_write


@dataclass(frozen=True)
class Saliency:
    """The contents of one saliency file; see the module docstring for shapes and dtypes."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    maps: dict[tuple[str, str], np.ndarray]


_MAP_PREFIX = "maps/"
#: Most bytes the arrays of a saliency file may unpack to (a run writes a few sample images and their maps).
MAX_SALIENCY_BYTES = 1 << 30


def _in_unit_range(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}] (see normalize_maps)")


def _check_saliency(
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    maps: Mapping[tuple[str, str], np.ndarray],
) -> Saliency:
    """Validate and convert to the stored dtypes; raises ValueError naming what is wrong."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C 1 or 3, got shape {images.shape}")
    n, _, h, w = images.shape
    images = images.astype(np.float32)
    _in_unit_range("images", images)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape == (n, h, w):
            masks = masks[:, None]
        if masks.shape != (n, 1, h, w):
            raise ValueError(f"masks must have shape ({n}, 1, {h}, {w}), got {masks.shape}")
        if masks.dtype != np.bool_ and not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    checked = {}
    for key, array in maps.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) and k for k in key)):
            raise ValueError(f"map keys must be (method, explainer) pairs of non-empty strings, got {key!r}")
        if "/" in key[1]:
            raise ValueError(f"explainer label {key[1]!r} must not contain '/'")
        array = np.asarray(array, dtype=np.float32)
        if array.shape != (n, h, w):
            raise ValueError(f"map {key} must have shape ({n}, {h}, {w}), got {array.shape}")
        _in_unit_range(f"map {key}", array)
        checked[key] = array
    return Saliency(images, labels.astype(np.int64), masks, checked)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max scale each map of an (N, H, W) batch to [0, 1] (constant maps become 0), as float32."""
    x = np.asarray(maps, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    out = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return out.reshape(x.shape).astype(np.float32)


def write_saliency(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    maps: Mapping[tuple[str, str], np.ndarray],
) -> Path:
    """Write a saliency file (``.npz``, compressed) atomically; the format is in the module docstring.

    Args:
        path: usually ``RUN_DIR/saliency/<dataset>.npz``.
        images: (N, C, H, W) in [0, 1].
        labels: (N,) integer class labels.
        masks: (N, 1, H, W) (or (N, H, W)) ground-truth masks, or None.
        maps: ``{(method, explainer): (N, H, W) map in [0, 1]}``, in display order.

    Raises:
        ValueError: a shape, dtype or value range is wrong (the message says which).
    """
    data = _check_saliency(images, labels, masks, maps)
    arrays: dict[str, Any] = {"images": data.images, "labels": data.labels}
    if data.masks is not None:
        arrays["masks"] = data.masks
    for (method, explainer), array in data.maps.items():
        arrays[f"{_MAP_PREFIX}{method}/{explainer}"] = array
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def read_saliency(path: str | Path) -> Saliency:
    """Read a file written by :func:`write_saliency`.

    Raises:
        DataError: the file is missing, not an npz, or its arrays break the format.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            # A few sample images: an archive that unpacks to more is damaged or a zip bomb, not read.
            declared = sum(info.file_size for info in npz.zip.infolist()) if npz.zip is not None else 0
            if declared > MAX_SALIENCY_BYTES:
                raise ValueError(f"its arrays declare {declared} bytes, more than {MAX_SALIENCY_BYTES}")
            arrays = {name: npz[name] for name in npz.files}
    except Exception as err:  # a damaged zip fails anywhere: BadZipFile, zlib.error, EOFError, NotImplementedError
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(f"{path}: not a readable saliency file ({reason})") from err
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise DataError(f"{path}: saliency file lacks {sorted(missing)}")
    maps = {}
    for name, array in arrays.items():
        if name.startswith(_MAP_PREFIX):
            method, sep, explainer = name[len(_MAP_PREFIX) :].rpartition("/")
            if not sep or not method or not explainer:
                raise DataError(f"{path}: map array {name!r} is not named maps/<method>/<explainer>")
            maps[(method, explainer)] = array
        elif name not in ("images", "labels", "masks"):
            raise DataError(f"{path}: unknown array {name!r} in saliency file")
    try:
        return _check_saliency(arrays["images"], arrays["labels"], arrays.get("masks"), maps)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


def _saliency_files(saliency: str | Path | None) -> list[Path]:
    if saliency is None:
        return []
    saliency = Path(saliency)
    if saliency.is_dir():
        return sorted(saliency.glob("*.npz"))
    return [saliency] if saliency.is_file() else []
