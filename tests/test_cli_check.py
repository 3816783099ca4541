"""``python -m xbench check`` and ``baseline``, in-process on hand-made records: the check can fail,
improvements and direction-less changes pass, missing rows fail, and bad input is one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import make_record

from xbench.cli import main
from xbench.report.records import Record, write_records


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


#: The run these records come from: a commit and one training setup.
RUN: dict[str, Any] = {"git": "0123abc", "config": {"training": {"epochs": 2}}, "setup": "abc123"}


def rec(method: str, seed: int, metric: str, value: float | None, **overrides: Any) -> Record:
    return make_record(method, seed, metric, value, **(RUN | overrides))


def records(top1: tuple[float, ...] = (0.80, 0.82, 0.84), time: float = 1.0) -> list[Record]:
    """Two methods, three seeds; top1 higher is better, time has no direction."""
    out = []
    for seed in range(3):
        out.append(rec("egt", seed, "top1", top1[seed]))
        out.append(rec("egt", seed, "time", time))
        out.append(rec("baseline", seed, "top1", 0.70 + 0.01 * seed))
    return out


def make_run(path: Path, rows: list[Record], config: dict[str, Any] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_records(path / "records.jsonl", rows)
    if config is not None:
        (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    assert lines[0].startswith("xbench: error: ")
    return lines[0]


@pytest.fixture
def baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = make_run(tmp_path / "results" / "quick", records(), config={"name": "quick", "seeds": [0, 1, 2]})
    path = tmp_path / "results" / "baselines" / "quick.json"
    assert main(["baseline", str(run), "-o", str(path)]) == 0
    assert capsys.readouterr().out == f"wrote {path} (3 entries)\n"
    return path


# -- help ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["check", "baseline"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"python -m xbench {command} results/quick" in out
    assert "--tolerance" in out


# -- the check can fail ---------------------------------------------------------------------------------
def test_baseline_file(baseline: Path) -> None:
    text = baseline.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert data["format"] == "xbench-baseline" and data["version"] == 1
    assert data["suite"] == "quick" and data["git"] == "0123abc" and data["versions"] == {"xbench": "0.1.0"}
    assert data["settings"] == {
        "config": {"name": "quick", "seeds": [0, 1, 2]},
        "setups": {"fmnist": {"baseline": "abc123", "egt": "abc123"}},
    }
    assert [(e["method"], e["metric"], e["n_seeds"]) for e in data["entries"]] == [
        ("baseline", "top1", 3),
        ("egt", "time", 3),
        ("egt", "top1", 3),
    ]
    assert not list(baseline.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_same_run_passes(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "results/quick", "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"# xbench check: results/quick vs {baseline}"
    assert "**PASS**: 0 regressed, 0 missing" in out
    assert "## " not in out


def test_worse_value_fails_and_is_named(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # egt top1 0.82 ± 4.97 points (3 seeds), tolerance 2 × CI = 9.94 points; seed 0 drops by 40 points.
    make_run(tmp_path / "results" / "quick", records(top1=(0.40, 0.82, 0.84)))
    summary = tmp_path / "summary.md"
    assert main(["check", "results/quick", "-b", str(baseline), "--output", str(summary)]) == 1
    captured = capsys.readouterr()
    assert "**FAIL**: 1 regressed, 0 missing" in captured.out
    assert "## Regressed (1)" in captured.out
    row = next(line for line in captured.out.splitlines() if line.startswith("| fmnist | egt |"))
    assert "| top1 ↑ | 82.00 ± 4.97 % (3 seeds) | 68.67 ±" in row
    assert "| -13.33 % | ±9.94 % (2×CI) |" in row
    assert summary.read_text() == captured.out
    assert f"wrote {summary}" in captured.err


def test_better_value_passes_as_improved(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "results" / "quick", records(top1=(0.99, 0.99, 0.99)))
    assert main(["check", "results/quick", "-b", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "**PASS**: 0 regressed, 0 missing, 1 improved" in out
    assert "## Improved (1)" in out and "| fmnist | egt | — | top1 ↑ |" in out


def test_deleted_metric_fails_as_missing(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "results" / "quick", [r for r in records() if r.method != "baseline"])
    assert main(["check", "results/quick", "-b", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "**FAIL**: 0 regressed, 1 missing" in out
    assert "## Missing (1)" in out
    assert "| fmnist | baseline | — | top1 ↑ | 71.00 ± 2.48 % (3 seeds) | — | — |" in out and "not in the run" in out


def test_failed_cell_fails_as_missing(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = [
        r.model_copy(update={"status": "failed", "value": None, "error": "boom"}) if r.method == "baseline" else r
        for r in records()
    ]
    make_run(tmp_path / "results" / "quick", failed)
    assert main(["check", "results/quick", "-b", str(baseline)]) == 1
    assert "all 3 record(s) failed" in capsys.readouterr().out


def test_changed_metric_without_direction_passes(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(tmp_path / "results" / "quick", records(time=5.0))
    assert main(["check", "results/quick", "-b", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "**PASS**: 0 regressed, 0 missing, 0 improved, 1 changed" in out
    assert "| fmnist | egt | — | time | 1.00 s (3 seeds) | 5.00 s (3 seeds) | +4.00 s | ±0.01 s (floor) |" in out


def test_new_rows_pass(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "results" / "quick", [*records(), rec("egt", 0, "top5", 0.99)])
    assert main(["check", "results/quick", "-b", str(baseline)]) == 0
    assert "## New (not in the baseline) (1)" in capsys.readouterr().out


def test_tolerance_flag_tightens_the_check(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "results" / "quick", records(top1=(0.78, 0.80, 0.82)))  # 2 points down
    assert main(["check", "results/quick", "-b", str(baseline)]) == 0
    assert main(["check", "results/quick", "-b", str(baseline), "--tolerance", "top1=abs:0.01"]) == 1
    assert "| -2.00 % | ±1.00 % (abs) |" in capsys.readouterr().out
    assert main(["check", "results/quick", "-b", str(baseline), "-t", "*=rel:0.01"]) == 1


def test_refresh_keeps_the_tolerances(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "results/quick", "-o", str(baseline), "-t", "top1=abs:0.02", "-t", "*=ci:3:0.01"]) == 0
    capsys.readouterr()
    data = json.loads(baseline.read_text())
    assert data["tolerances"] == {"top1": {"kind": "abs", "value": 0.02}}
    assert data["default_tolerance"] == {"kind": "ci", "factor": 3.0, "floor": 0.01}
    make_run(tmp_path / "results" / "quick", records(top1=(0.90, 0.90, 0.90)))
    assert main(["baseline", "results/quick", "-o", str(baseline)]) == 0
    assert "kept the tolerances of the previous file" in capsys.readouterr().out
    refreshed = json.loads(baseline.read_text())
    assert refreshed["tolerances"] == data["tolerances"]
    assert refreshed["default_tolerance"] == data["default_tolerance"]
    assert refreshed["entries"][-1]["mean"] == pytest.approx(0.90)


def test_baseline_of_a_run_with_failures_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [*records(), rec("egt", 0, "top5", None, status="failed", error="boom")]
    make_run(tmp_path / "run", rows)
    assert main(["baseline", "run", "-o", "b.json"]) == 0
    captured = capsys.readouterr()
    assert "warning: failed records" in captured.err and "fmnist/egt" in captured.err
    assert "top5" not in (tmp_path / "b.json").read_text()
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["config"] is None  # no config.yaml


# -- bad input: one line naming the file, exit 2 --------------------------------------------------------
def test_check_missing_run_dir(baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "results/nope", "-b", str(baseline)]) == 2
    assert one_error_line(capsys) == "xbench: error: results/nope: no such results folder"


def test_check_run_dir_without_records(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["check", "empty", "-b", str(baseline)]) == 2
    assert "empty/records.jsonl: no such records file" in one_error_line(capsys)


def test_check_corrupt_records(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "records.jsonl").write_text('{"suite": \n')
    assert main(["check", "bad", "-b", str(baseline)]) == 2
    assert "bad/records.jsonl:1: invalid JSON" in one_error_line(capsys)


def test_check_missing_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run", records())
    assert main(["check", "run", "-b", "results/baselines/nope.json"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("xbench: error: results/baselines/nope.json: no such baseline file")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"format": "xbench-baseline",',
            "b.json: invalid JSON: Expecting property name enclosed in double quotes (line 1",
        ),
        ("[1, 2]", "b.json: a baseline must be a JSON object, got list"),
        ('{"format": "other"}', "b.json: format: expected 'xbench-baseline', got 'other'"),
        (b"\xff\xfe", "b.json: not UTF-8 text"),
    ],
    ids=["json", "list", "format", "utf8"],
)
def test_check_corrupt_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, expected: str
) -> None:
    make_run(tmp_path / "run", records())
    path = tmp_path / "b.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["check", "run", "-b", str(path)]) == 2
    assert expected in one_error_line(capsys)


def test_check_baseline_with_a_bad_key(tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(baseline.read_text())
    data["entries"][2]["mean"] = "high"
    data["tolerances"]["top1"] = {"kind": "abs", "value": 0.01}
    baseline.write_text(json.dumps(data))
    assert main(["check", "results/quick", "-b", str(baseline)]) == 2
    assert one_error_line(capsys) == f"xbench: error: {baseline}: entries[2].mean: expected a finite number, got 'high'"
    data["entries"][2]["mean"] = 0.5
    data["tolerances"]["top1"] = {"kind": "abs", "factor": 2}
    baseline.write_text(json.dumps(data))
    assert main(["check", "results/quick", "-b", str(baseline)]) == 2
    assert f"{baseline}: tolerances.top1: unknown key(s) ['factor']" in one_error_line(capsys)


def test_bad_tolerance_flag(baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "results/quick", "-b", str(baseline), "--tolerance", "top1=percent:1"]) == 2
    assert "--tolerance 'top1=percent:1': expected METRIC=abs:VALUE" in one_error_line(capsys)


def test_baseline_over_a_corrupt_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run", records())
    (tmp_path / "b.json").write_text("not json")
    assert main(["baseline", "run", "-o", "b.json"]) == 2
    assert one_error_line(capsys).startswith("xbench: error: b.json: invalid JSON")
    assert (tmp_path / "b.json").read_text() == "not json"  # left alone


def test_baseline_of_a_missing_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "nope", "-o", "b.json"]) == 2
    assert one_error_line(capsys) == "xbench: error: nope: no such results folder"
    assert not Path("b.json").exists()


def test_baseline_of_a_run_without_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path / "run", [])
    assert main(["baseline", "run", "-o", "b.json"]) == 2
    assert one_error_line(capsys) == "xbench: error: run/records.jsonl: no successful records to make a baseline from"


def test_baseline_requires_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["baseline", "run"])
    assert info.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_records_of_different_settings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [r.model_copy(update={"setup": "other"}) if r.seed == 2 else r for r in records()]
    make_run(tmp_path / "run", rows)
    assert main(["baseline", "run", "-o", "b.json"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("xbench: error: run/records.jsonl: records of method") and "different settings" in line
