from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest

from xbench.data import locate as loc
from xbench.errors import DataNotFoundError


def test_candidate_roots_follow_the_documented_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path.home()
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env"))
    roots = loc.candidate_roots(tmp_path / "arg", extra=[Path("/usr/share/datasets/x")])
    assert roots == [
        tmp_path / "arg",
        tmp_path / "env",
        home / ".cache" / "xbench" / "data",
        Path("/usr/share/datasets/x"),
    ]


def test_candidate_roots_skip_unset_and_empty_and_dedupe(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path.home() / ".cache" / "xbench" / "data"
    monkeypatch.setenv("XBENCH_DATA", "  ")
    assert loc.candidate_roots(None) == [cache]
    # The same folder given twice is searched once, at its first position.
    monkeypatch.setenv("XBENCH_DATA", str(cache))
    assert loc.candidate_roots(cache, extra=[cache]) == [cache]


def test_candidate_roots_expand_user() -> None:
    assert loc.candidate_roots("~/mydata")[0] == Path.home() / "mydata"


def test_expand_keeps_root_order_and_the_root_itself() -> None:
    a, b = Path("/a"), Path("/b")
    assert loc.expand([a, b], ["", "sub"]) == [a, a / "sub", b, b / "sub"]


def test_find_first_returns_the_first_match_or_none() -> None:
    paths = [Path("/x"), Path("/y"), Path("/z")]
    assert loc.find_first(paths, lambda p: p.name in {"y", "z"}) == Path("/y")
    assert loc.find_first(paths, lambda p: False) is None


def test_download_root_skips_unwritable_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "env"))
    # data_dir lies under a regular file, so it cannot be created: $XBENCH_DATA is next.
    assert loc.download_root(blocker / "data") == tmp_path / "env"
    assert (tmp_path / "env").is_dir()


def _has_marker(path: Path) -> bool:
    return (path / "marker").is_file()


def test_locate_prefers_data_dir_over_env_over_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = {name: tmp_path / name for name in ("arg", "env", "system")}
    for d in dirs.values():
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "marker").touch()
    monkeypatch.setenv("XBENCH_DATA", str(dirs["env"]))

    def find(data_dir: Path | None) -> Path:
        return loc.locate_dataset(
            "toy",
            data_dir,
            layouts=["", "sub"],
            predicate=_has_marker,
            download=False,
            system=[dirs["system"]],
        )

    assert find(dirs["arg"]) == dirs["arg"] / "sub"
    assert find(None) == dirs["env"] / "sub"
    monkeypatch.delenv("XBENCH_DATA")
    assert find(None) == dirs["system"] / "sub"


def test_locate_never_downloads_when_disabled(tmp_path: Path) -> None:
    calls: list[Path] = []
    with pytest.raises(DataNotFoundError) as info:
        loc.locate_dataset(
            "toy",
            tmp_path / "d",
            layouts=["", "sub"],
            predicate=_has_marker,
            download=False,
            fetch=calls.append,
            system=[tmp_path / "sys"],
            how_to="copy the files into {dir}",
        )
    assert calls == []
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "d") in message and str(tmp_path / "sys") in message
    assert str(Path.home() / ".cache" / "xbench" / "data") in message
    assert "<dir>/sub" in message
    assert "downloads are disabled" in message
    assert f"copy the files into {tmp_path / 'd'}" in message


def test_locate_downloads_into_data_dir_and_rescans(tmp_path: Path) -> None:
    def fetch(root: Path) -> None:
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "marker").touch()

    found = loc.locate_dataset(
        "toy", tmp_path / "d", layouts=["", "sub"], predicate=_has_marker, download=True, fetch=fetch
    )
    assert found == tmp_path / "d" / "sub"


def test_locate_reports_a_failed_download(tmp_path: Path) -> None:
    def offline(root: Path) -> None:
        raise URLError("[Errno -2] Name or service not known")

    with pytest.raises(DataNotFoundError, match=r"download into .* failed .*Name or service not known"):
        loc.locate_dataset("toy", tmp_path / "d", layouts=[""], predicate=_has_marker, download=True, fetch=offline)


def test_locate_reports_a_download_without_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="expected files are not there"):
        loc.locate_dataset(
            "toy", tmp_path / "d", layouts=[""], predicate=_has_marker, download=True, fetch=lambda r: None
        )
