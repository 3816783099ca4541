"""Shared fixtures: every test gets its own cache and never touches ~/.cache."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path_factory.mktemp("xbench-cache")))


@pytest.fixture
def repo_root() -> Path:
    return ROOT
