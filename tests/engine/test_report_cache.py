"""A re-run's report comes from the cache when what it is drawn from is byte for byte the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from xbench.engine import reports
from xbench.engine.cache import Cache
from xbench.engine.reports import cached_report, report_key


def staged(root: Path, records: str = '{"metric": "top1"}\n') -> Path:
    root.mkdir(parents=True)
    (root / "records.jsonl").write_text(records)
    (root / "saliency").mkdir()
    (root / "saliency" / "data.npz").write_bytes(b"maps")
    return root


def drawer(root: Path, calls: list[int]) -> object:
    def draw() -> list[Path]:
        calls.append(1)
        (root / "plots").mkdir(exist_ok=True)
        files = [root / "leaderboard.md", root / "plots" / "accuracy.png"]
        files[0].write_text(f"table drawn {len(calls)} time(s)\n")
        files[1].write_bytes(bytes(range(256)))
        return files

    return draw


def test_the_same_inputs_get_the_stored_files(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path / "cache"), []
    first = staged(tmp_path / "a")
    key = report_key(first / "records.jsonl", first / "saliency", "xbench: tiny", "paper")
    files, cached = cached_report(cache, key, first, drawer(first, calls))  # type: ignore[arg-type]
    assert not cached and calls == [1] and len(files) == 2
    second = staged(tmp_path / "b")
    assert report_key(second / "records.jsonl", second / "saliency", "xbench: tiny", "paper") == key
    files, cached = cached_report(cache, key, second, drawer(second, calls))  # type: ignore[arg-type]
    assert cached and calls == [1]  # not drawn again
    assert sorted(str(p.relative_to(second)) for p in files) == ["leaderboard.md", "plots/accuracy.png"]
    assert (second / "leaderboard.md").read_text() == "table drawn 1 time(s)\n"
    assert (second / "plots" / "accuracy.png").read_bytes() == bytes(range(256))


def test_the_key_follows_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = staged(tmp_path / "a")
    records, saliency = root / "records.jsonl", root / "saliency"
    key = report_key(records, saliency, "t", "paper")
    assert report_key(records, saliency, "t", "full") != key
    assert report_key(records, saliency, "other", "paper") != key
    other = staged(tmp_path / "b", records='{"metric": "top5"}\n')
    assert report_key(other / "records.jsonl", other / "saliency", "t", "paper") != key
    (other / "records.jsonl").write_text(records.read_text())
    (other / "saliency" / "data.npz").write_bytes(b"other maps")
    assert report_key(other / "records.jsonl", other / "saliency", "t", "paper") != key
    monkeypatch.setattr(reports, "package_fingerprint", lambda: "edited code")
    assert report_key(records, saliency, "t", "paper") != key
    monkeypatch.setattr(reports, "_version", lambda name: "9.9" if name == "matplotlib" else None)
    assert report_key(records, saliency, "t", "paper") != key


def test_a_damaged_entry_is_drawn_again(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path / "cache"), []
    root = staged(tmp_path / "a")
    cached_report(cache, "ab" * 32, root, drawer(root, calls))  # type: ignore[arg-type]
    (entry,) = (tmp_path / "cache" / "reports").rglob("*.tar")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    again = staged(tmp_path / "b")
    _, cached = cached_report(cache, "ab" * 32, again, drawer(again, calls))  # type: ignore[arg-type]
    assert not cached and calls == [1, 1]


def test_unpacking_without_tarfile_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python before 3.10.12 / 3.11.4 has no extraction filters: the plain-file check stands in for them.
    import tarfile

    cache, calls = Cache(tmp_path / "cache"), []
    first = staged(tmp_path / "a")
    cached_report(cache, "cd" * 32, first, drawer(first, calls))  # type: ignore[arg-type]
    monkeypatch.delattr(tarfile, "data_filter")
    second = staged(tmp_path / "b")
    _, cached = cached_report(cache, "cd" * 32, second, drawer(second, calls))  # type: ignore[arg-type]
    assert cached and calls == [1]
    assert (second / "plots" / "accuracy.png").read_bytes() == bytes(range(256))
