"""Keep data tests away from the user's real data folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``~`` at an empty folder and unset ``$XBENCH_DATA``; returns the fake home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    return home


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """A tiny ILSVRC-2012 tree with XML boxes (see tests/data/imagenet_fixture.py)."""
    from tests.data.imagenet_fixture import make_imagenet  # imported here: only these tests need it

    return make_imagenet(tmp_path / "imagenet")
