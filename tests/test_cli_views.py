"""``xbench report --view`` and ``xbench run --view``: what the tables show, from the flag or the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import make_record

from xbench.cli import main
from xbench.report.records import Record, write_records


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def records() -> list[Record]:
    """An early-exit method with three exits and a baseline without."""
    out = [make_record(m, 0, "top1", v) for m, v in (("baseline", 0.7), ("egt", 0.8))]
    out += [make_record("egt", 0, "top1", 0.5 + 0.1 * k, exit=k) for k in range(3)]
    return out


def results(folder: Path, view: str | None = None) -> Path:
    write_records(folder / "records.jsonl", records())
    if view is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump({"name": "x", "report": {"view": view}}))
    return folder


def headers(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| Method")]


def test_report_writes_the_paper_view_by_default(tmp_path: Path) -> None:
    run = results(tmp_path / "run")
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert headers(markdown) == ["| Method | Top-1 [%] ↑ |", "| Method | Exit | Top-1 [%] ↑ |"]
    assert "| egt | 2 | **70.00** |" in markdown
    assert "@exit" not in markdown and "@exit" in (tmp_path / "out" / "leaderboard.csv").read_text()


def test_report_view_full_has_a_column_per_exit(tmp_path: Path) -> None:
    run = results(tmp_path / "run")
    assert main(["report", str(run), "-o", str(tmp_path / "out"), "--view", "full"]) == 0
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    exits = " | ".join(f"Top-1 @exit {k} [%] ↑" for k in range(3))
    assert headers(markdown) == [f"| Method | Top-1 [%] ↑ | {exits} |"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Top-1 @exit 2" in html


def test_report_follows_the_view_of_the_suite_that_made_the_run(tmp_path: Path) -> None:
    run = results(tmp_path / "run", view="full")
    assert main(["report", str(run), "-o", str(tmp_path / "a")]) == 0
    assert "@exit 2" in (tmp_path / "a" / "leaderboard.md").read_text()
    assert main(["report", str(run), "-o", str(tmp_path / "b"), "--view", "paper"]) == 0  # the flag wins
    assert "@exit" not in (tmp_path / "b" / "leaderboard.md").read_text()


def test_a_bad_view_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = results(tmp_path / "run", view="wide")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"xbench: error: {run / 'config.yaml'}: report.view: unknown view 'wide' (known: paper, full)"]
    with pytest.raises(SystemExit) as info:
        main(["report", str(run), "--view", "wide"])
    assert info.value.code == 2
    assert "invalid choice: 'wide'" in capsys.readouterr().err


def test_run_view_flag_sets_the_suite_report_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "synthetic_shapes",
                        "params": {"n_train": 64, "n_test": 32, "image_size": 16, "channels": 1, "distractors": 0},
                    }
                ],
                "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
                "methods": ["baseline"],
                "metrics": ["top1"],
                "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
                "evaluation": {"batch_size": 32},
                "device": "cpu",
            }
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(suite), "--output", str(out), "--no-progress", "--view", "full"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["report"] == {"view": "full"}
    assert (out / "leaderboard_twocolumn.tex").is_file()
