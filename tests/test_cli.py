"""The command line, in-process: help texts, listings, validation, and input errors as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import xbench.data.fashion_mnist as fashion_mnist
from xbench.cli import main

COMMANDS = ["run", "list", "validate", "report"]

TINY = {
    "datasets": [
        {
            "name": "synthetic_shapes",
            "params": {"n_train": 64, "n_test": 32, "image_size": 16, "channels": 1, "distractors": 0},
        }
    ],
    "backbone": {"name": "resnet_cifar", "params": {"depth": 8, "width": 4}},
    "methods": ["baseline"],
    "metrics": ["top1", "params"],
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "evaluation": {"batch_size": 32},
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's cache, data or home folder."""
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def write_suite(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    assert lines[0].startswith("xbench: error: ")
    return lines[0]


# -- help and listings ----------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["main", *COMMANDS])
def test_help_has_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "python -m xbench" in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["list", "gizmos"], ["run"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "error:" in err and "--help" in err  # one line, and where help is


def test_list_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("baseline ") for line in lines)
    assert "paper:" in out
    assert out.count("paper:") == sum(1 for line in lines if not line.startswith(" "))  # one per method


def test_list_metrics_shows_direction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "metrics"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) >= {"top1", "top5", "params", "flops"}
    assert "↑" in lines["top1"] and "accuracy" in lines["top1"]
    assert "↓" in lines["params"] and "↓" in lines["flops"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("datasets", {"synthetic_shapes", "fashion_mnist", "cifar10", "cifar100"}), ("backbones", {"resnet_cifar"})],
)
def test_list_other_kinds(kind: str, expected: set[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", kind]) == 0
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()} >= expected


def test_list_suites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_suite(tmp_path / "s" / "good.yaml", {**TINY, "description": "a tiny suite\nsecond line"})
    (tmp_path / "s" / "bad.yaml").write_bytes(b"\xff\xfe")
    assert main(["list", "suites", "--suites-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "a tiny suite" in out and "second line" not in out
    assert "(invalid:" in out and "bad.yaml" in out
    assert main(["list", "suites", "--suites-dir", str(tmp_path / "empty")]) == 0
    assert "no suites" in capsys.readouterr().out


# -- validate -------------------------------------------------------------------------------------
def test_validate_prints_the_resolved_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "tiny.yaml", TINY)
    assert main(["validate", str(path), "--set", "seeds=[0,1]", "--set", "training.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path}: valid")
    resolved = yaml.safe_load(out)
    assert resolved["name"] == "tiny"
    assert resolved["seeds"] == [0, 1]
    assert resolved["training"]["epochs"] == 3
    assert resolved["training"]["schedule"] == "cosine"  # defaults are filled in
    assert resolved["methods"] == [{"name": "baseline", "params": {}, "label": None}]


def test_validate_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "tiny.yaml", TINY)
    assert main(["validate", "-q", str(path)]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        ({**TINY, "training": {"epochs": "ten"}}, [], "training.epochs"),
        ({**TINY, "methods": ["baselin"]}, [], "did you mean 'baseline'"),
        ({**TINY, "methods": [{"name": "baseline", "params": {"foo": 1}}]}, [], "methods[0].params.foo: unknown key"),
        ({**TINY, "backbone": {"name": "resnet_cifar", "params": {"depth": 9}}}, [], "backbone.params.depth"),
        ({**TINY, "device": "gpu"}, [], "device"),
        ("methods: [baseline\n", [], "YAML syntax error"),
        ("- a\n- b\n", [], "must be a mapping"),
        (TINY, ["training.epochz=3"], "--set training.epochz: unknown key"),
        (TINY, ["methods[3].label=x"], "out of range"),
    ],
    ids=["type", "method-name", "method-param", "depth", "device", "yaml", "list", "set-key", "set-index"],
)
def test_validate_bad_suite_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, overrides: list[str], expected: str
) -> None:
    path = write_suite(tmp_path / "bad.yaml", content)
    argv = ["validate", str(path)] + [arg for o in overrides for arg in ("--set", o)]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(path) in line
    assert expected in line


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    assert main(["validate", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "no such suite file" in line


def test_validate_non_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"description: caf\xe9\n")
    assert main(["validate", str(path)]) == 2
    assert str(path) in one_error_line(capsys)


# -- run: input errors stop before anything is written ----------------------------------------------------
def test_run_into_an_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "tiny.yaml", TINY)
    (tmp_path / "afile").write_text("a regular file")
    before = snapshot(tmp_path)
    out = tmp_path / "afile" / "sub"
    assert main(["run", str(path), "--output", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(out) in line
    assert snapshot(tmp_path) == before
    assert (tmp_path / "afile").read_text() == "a regular file"


def test_run_into_an_output_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "tiny.yaml", TINY)
    (tmp_path / "afile").write_text("a regular file")
    before = snapshot(tmp_path)
    assert main(["run", str(path), "--set", f"output={tmp_path / 'afile'}", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(tmp_path / "afile") in line and "not a folder" in line
    assert snapshot(tmp_path) == before


def test_run_with_missing_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty_data, empty_env = tmp_path / "data", tmp_path / "env-data"
    empty_data.mkdir()
    empty_env.mkdir()
    monkeypatch.setenv("XBENCH_DATA", str(empty_env))
    # Hide Debian's /usr/share/datasets/fashion-mnist, which may be installed on this machine.
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (tmp_path / "no-system-dir",))

    def no_download(root: Path) -> None:
        raise AssertionError("downloads are disabled; nothing may be fetched")

    monkeypatch.setattr(fashion_mnist, "_fetch", no_download)
    suite = {**TINY, "datasets": ["fashion_mnist"]}
    path = write_suite(tmp_path / "fm.yaml", suite)
    out = tmp_path / "results" / "fm"
    before = snapshot(tmp_path)
    code = main(
        [
            "run",
            str(path),
            "--data-dir",
            str(empty_data),
            "--set",
            "data.download=false",
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 2
    line = one_error_line(capsys)
    assert "dataset-fashion-mnist" in line
    assert str(empty_data) in line and str(empty_env) in line
    assert str(tmp_path / "no-system-dir") in line and "/usr/share/datasets" not in line
    assert "downloads are disabled" in line
    assert not out.exists()
    assert snapshot(tmp_path) - before <= {"results"}  # at most the parent folder, left empty


# -- run and report end to end -------------------------------------------------------------------------------
def test_run_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "out"
    assert main(["run", str(path), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1/1] synthetic_shapes/baseline/seed0" in printed and "trained" in printed
    assert "baseline" in printed and "|" in printed  # the leaderboard is printed
    assert {p.name for p in out.iterdir()} >= {
        "records.jsonl",
        "config.yaml",
        "run.json",
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.tex",
    }
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in records} == {"top1", "params"}
    assert all(isinstance(r["value"], float | int) for r in records)
    assert yaml.safe_load((out / "config.yaml").read_text())["training"]["epochs"] == 1
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left behind

    # Running again reuses the cache and rewrites the same numbers.
    assert main(["run", str(path), "--output", str(out), "--no-progress"]) == 0
    assert "cached" in capsys.readouterr().out
    again = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["value"] for r in again] == [r["value"] for r in records]

    tables = tmp_path / "tables"
    assert main(["report", str(out), "-o", str(tables)]) == 0
    assert (tables / "leaderboard.md").is_file()


def test_report_on_a_folder_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "records" in one_error_line(capsys)
