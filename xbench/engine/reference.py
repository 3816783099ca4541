"""Reference models: small checkpoints trained by xbench, committed, and evaluated without training.

A reference folder holds one weights-only checkpoint per cell and ``manifest.json``::

    {"format": "xbench-reference", "version": 1, "suite": "smoke", "git": ..., "versions": {...},
     "cells": {"<cell id>": {"file": "<name>.pt", "sha256": ..., "bytes": ..., "config": {...}}}}

``xbench run SUITE --export-reference DIR`` writes it from a run's trained models;
``xbench run SUITE --reference DIR`` loads each cell's weights from it (checking the sha256 and
refusing pickled payloads) instead of training, so CI can measure every metric of fixed models and
``xbench check`` them against a committed baseline: a change that shifts a metric fails there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from xbench.engine.cache import load_checkpoint, sha256_file
from xbench.errors import CheckpointError
from xbench.fileio import atomic_write, atomic_write_text

MANIFEST = "manifest.json"


def _slug(cell: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", cell).strip("_")


class ReferenceModels:
    """Read a reference folder; every problem is a one-line :class:`CheckpointError` naming the file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise CheckpointError(f"{path}: no reference manifest (create one with --export-reference)") from err
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable reference manifest: {err}") from err
        if self.manifest.get("format") != "xbench-reference" or not isinstance(self.manifest.get("cells"), dict):
            raise CheckpointError(f"{path}: not an xbench reference manifest (format/cells missing)")

    def sha256(self, cell: str) -> str:
        return str(self._entry(cell).get("sha256"))

    def _entry(self, cell: str) -> dict[str, Any]:
        entry = self.manifest["cells"].get(cell)
        if entry is None:
            known = ", ".join(sorted(self.manifest["cells"])) or "none"
            raise CheckpointError(f"{self.root / MANIFEST}: cells.{cell}: no reference model (has: {known})")
        return entry  # type: ignore[no-any-return]

    def load(self, cell: str) -> dict[str, Any]:
        entry = self._entry(cell)
        path = self.root / str(entry["file"])
        if not path.is_file():
            raise CheckpointError(f"{path}: reference checkpoint of {cell} is missing")
        if sha256_file(path) != entry.get("sha256"):
            raise CheckpointError(f"{path}: sha256 differs from {MANIFEST} (truncated or changed)")
        return load_checkpoint(path)


class ReferenceWriter:
    """Collects a run's trained models into a reference folder."""

    def __init__(self, root: Path, suite: str, git: str | None, versions: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest: dict[str, Any] = {
            "format": "xbench-reference",
            "version": 1,
            "suite": suite,
            "git": git,
            "versions": versions,
            "cells": {},
        }

    def add(self, cell: str, state: dict[str, Any], config: dict[str, Any]) -> None:
        name = f"{_slug(cell)}.pt"
        path = self.root / name
        atomic_write(path, lambda f: torch.save({k: v.detach().cpu() for k, v in state.items()}, f))
        self.manifest["cells"][cell] = {
            "file": name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "config": {k: v for k, v in config.items() if k != "data_source"},
        }

    def write(self) -> Path:
        return atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
