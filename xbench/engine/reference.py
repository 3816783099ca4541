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

from xbench.engine.cache import sha256_file
from xbench.errors import CheckpointError
from xbench.fileio import atomic_write, atomic_write_text
from xbench.models.weights import read_state_dict
from xbench.report.records import parse_json

MANIFEST = "manifest.json"


def _slug(cell: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", cell).strip("_")


class ReferenceModels:
    """Read a reference folder; every problem is a one-line :class:`CheckpointError` naming the file.

    The manifest is checked whole when the folder is opened (before any cell runs): its
    structure, and that every file it lists is a plain name in the folder whose contents match
    the recorded sha256 and hold a state dict of tensors (read weights-only: pickled code is
    refused, never run). Only whether the weights fit a cell's model shows when the cell runs.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise CheckpointError(f"{path}: no reference manifest (create one with --export-reference)") from err
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: not a readable reference manifest: {err}") from err
        try:
            manifest = parse_json(text)
        except ValueError as err:
            raise CheckpointError(f"{path}: not a readable reference manifest: {err}") from err
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != "xbench-reference"
            or not isinstance(manifest.get("cells"), dict)
        ):
            raise CheckpointError(f"{path}: not an xbench reference manifest (format/cells missing)")
        version = manifest.get("version", 1)
        if version != 1 or isinstance(version, bool):
            raise CheckpointError(f"{path}: version: this xbench reads version 1, got {str(version)[:40]!r}")
        self.manifest: dict[str, Any] = manifest
        for cell, entry in manifest["cells"].items():
            self._check_entry(cell, entry)

    def _check_entry(self, cell: str, entry: Any) -> None:
        where = f"{self.root / MANIFEST}: cells.{cell}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: expected an object with file and sha256, got {type(entry).__name__}")
        name, digest = entry.get("file"), entry.get("sha256")
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
            raise CheckpointError(f"{where}.file: expected a file name in {self.root}, got {str(name)[:80]!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise CheckpointError(f"{where}.sha256: expected 64 hex digits, got {str(digest)[:80]!r}")
        path = self.root / name
        if not path.is_file():
            raise CheckpointError(f"{path}: reference checkpoint of {cell} is missing ({where}.file)")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: sha256 differs from {MANIFEST} (truncated or changed)")
        read_state_dict(path, f"reference checkpoint of {cell}")  # unreadable, pickled code, not tensors: now

    def sha256(self, cell: str) -> str:
        return str(self._entry(cell)["sha256"])

    def path(self, cell: str) -> Path:
        """The checkpoint file of ``cell``."""
        return self.root / str(self._entry(cell)["file"])

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
        return dict(read_state_dict(path, f"reference checkpoint of {cell}"))


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
