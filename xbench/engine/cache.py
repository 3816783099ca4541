"""A content-addressed store of checkpoints and cell results.

Every entry lives under a key that hashes everything it depends on (see
:func:`cache_key`). Writes are atomic: a temporary file in the same folder,
``fsync``, then ``os.replace``, so a killed run never leaves a half-written
entry under a real key. Each entry has a sidecar ``.json`` with the sha256 of
its payload; a load that finds a different hash reports it and returns
``None`` so the caller recomputes, and never uses the tampered file.
Checkpoints load with ``torch.load(weights_only=True)``, which refuses pickled
code. Whatever is wrong with an entry (a missing or damaged sidecar, a payload that
does not match it, one that does but cannot be read), a load returns ``None``: a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from xbench.errors import CheckpointError
from xbench.fileio import atomic_write, atomic_write_text
from xbench.models.weights import load_weights_only

log = logging.getLogger(__name__)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; paths and tuples become strings/lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a state dict safely: ``weights_only=True`` refuses pickled objects (see
    :func:`xbench.models.weights.load_weights_only`); every failure is a :class:`CheckpointError`."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    state = load_weights_only(Path(path), f"{path}: not a loadable weights-only checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    if map_location != "cpu":
        state = {k: v.to(map_location) if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    return state


class Cache:
    """Checkpoints (``models/``), explanation maps (``explanations/``), JSON results and reports under one root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def _verify(self, payload: Path) -> bool:
        meta = payload.with_name(payload.name + ".json")
        if not payload.exists():
            return False
        try:
            expected = json.loads(meta.read_text(encoding="utf-8"))["sha256"]
        except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):  # TypeError: not an object
            log.warning("cache entry %s has no valid hash sidecar; recomputing", payload)
            return False
        if sha256_file(payload) != expected:
            log.warning(
                "cache entry %s does not match its recorded sha256 (truncated or tampered); recomputing", payload
            )
            return False
        return True

    def _commit(self, payload: Path, meta: dict[str, Any]) -> None:
        meta = {**meta, "sha256": sha256_file(payload)}
        atomic_write_text(payload.with_name(payload.name + ".json"), json.dumps(meta, indent=1, default=str))

    # -- checkpoints ----------------------------------------------------------
    def load_model(self, key: str, kind: str = "models") -> dict[str, Any] | None:
        """The state dict (or dict of tensors) stored under ``key``, or None if absent or invalid."""
        path = self._path(kind, key, ".pt")
        if not self._verify(path):
            return None
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            log.warning("%s; recomputing", err)
            return None

    def has_model(self, key: str, kind: str = "models") -> bool:
        """Whether a checkpoint is stored under ``key`` (not verified: a hint, e.g. for scheduling)."""
        return self._path(kind, key, ".pt").exists()

    def save_model(self, key: str, state: dict[str, Any], meta: dict[str, Any], kind: str = "models") -> Path:
        path = self._path(kind, key, ".pt")
        atomic_write(path, lambda f: torch.save(state, f))
        self._commit(path, meta)
        return path

    def discard(self, key: str, kind: str = "models") -> None:
        """Remove a checkpoint and its sidecar (e.g. an epoch checkpoint once training has finished)."""
        path = self._path(kind, key, ".pt")
        path.with_name(path.name + ".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    # -- JSON results -------------------------------------------------------------
    def load_json(self, kind: str, key: str) -> Any | None:
        path = self._path(kind, key, ".json")
        if not self._verify(path):
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # matches its sidecar, yet is not JSON: rewritten
            log.warning("cache entry %s is not JSON (%s); recomputing", path, err)
            return None

    def save_json(self, kind: str, key: str, obj: Any, meta: dict[str, Any] | None = None) -> Path:
        path = self._path(kind, key, ".json")
        atomic_write_text(path, json.dumps(obj, default=str))
        self._commit(path, meta or {})
        return path

    # -- files -------------------------------------------------------------------
    def load_bytes(self, kind: str, key: str, suffix: str = ".bin") -> bytes | None:
        """The bytes stored under ``key``, or None if absent or not matching their recorded sha256."""
        path = self._path(kind, key, suffix)
        return path.read_bytes() if self._verify(path) else None

    def save_bytes(self, kind: str, key: str, data: bytes, meta: dict[str, Any], suffix: str = ".bin") -> Path:
        path = self._path(kind, key, suffix)
        atomic_write(path, lambda f: f.write(data))
        self._commit(path, meta)
        return path


def default_cache_dir() -> Path:
    """``$XBENCH_CACHE`` or ``~/.cache/xbench``."""
    env = os.environ.get("XBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "xbench"
