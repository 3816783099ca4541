"""Records: validation, JSON-lines round trip, malformed files, the flat frame."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import METRIC_FIELDS, make_record
from pydantic import ValidationError

from xbench.errors import DataError, OutputError, XBenchError
from xbench.registry import METRICS
from xbench.report.records import (
    Record,
    append_records,
    read_records,
    records_to_frame,
    write_records,
)

#: A record with every field set: non-ASCII text, an exit, nested params, a git hash.
EXAMPLE: dict[str, Any] = {
    "dataset": "fashion_mnist_cluttered",
    "method": "EGT (λ=0)",
    "metric": "pointing_game",
    "value": 0.91,
    "exit": 2,
    "n": 1000,
    "display": {"label": "Pointing game", "unit": "%", "scale": 100.0, "decimals": 1},
    "params": {"tolerance": 15, "classes": ["a", "b"]},
    "versions": {"xbench": "0.1.0", "torch": "2.5.0", "python": "3.11.9"},
    "git": "0123abc",
    "time_s": 12.3,
    "method_name": "egt",
    "cell": "quick/fashion_mnist_cluttered/egt/0",
}


def full_record(**overrides: Any) -> Record:
    return make_record(**(EXAMPLE | overrides))


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    records = [
        full_record(),
        full_record(seed=1, value=0.5, exit=None, git=None, time_s=None),
        full_record(seed=2, value=None, status="failed", error="RuntimeError: boom\nTraceback ..."),
    ]
    path = write_records(tmp_path / "records.jsonl", records)
    assert read_records(path) == records
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]  # no temp file left behind


def test_numbers_are_stored_as_numbers(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [full_record()])
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["value"] == 0.91 and isinstance(row["value"], float)
    assert row["seed"] == 0 and row["exit"] == 2 and row["n"] == 1000
    assert row["display"] == {"label": "Pointing game", "unit": "%", "scale": 100.0, "decimals": 1}
    assert row["status"] == "ok" and row["error"] is None


def test_numpy_values_become_plain_json_and_round_trip(tmp_path: Path) -> None:
    record = full_record(
        seed=np.int64(3),
        value=np.float32(0.25),
        params={"k": np.int64(5), "eps": np.float64(0.1), "shape": (2, 3)},
    )
    assert type(record.seed) is int and record.value == 0.25
    assert record.params == {"k": 5, "eps": 0.1, "shape": [2, 3]}
    assert type(record.params["k"]) is int
    path = write_records(tmp_path / "r.jsonl", [record])
    assert read_records(path) == [record]


def test_write_replaces_and_append_extends(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.jsonl"
    write_records(path, [full_record(seed=0), full_record(seed=1)])
    write_records(path, [full_record(seed=5)])
    assert [r.seed for r in read_records(path)] == [5]
    append_records(path, [full_record(seed=6), full_record(seed=7)])
    append_records(tmp_path / "new.jsonl", [full_record(seed=8)])
    assert [r.seed for r in read_records(path)] == [5, 6, 7]
    assert [r.seed for r in read_records(tmp_path / "new.jsonl")] == [8]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [full_record(seed=0), full_record(seed=1)])
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    assert [r.seed for r in read_records(path)] == [0, 1]


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [full_record(seed=0), full_record(seed=1)])
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:-10] + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON") as info:
        read_records(path)
    assert "\n" not in str(info.value)


def test_truncated_line_then_append_reports_only_the_broken_line(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", [full_record(seed=0)])
    path.write_text(path.read_text()[:-20])  # writer killed mid-line: no trailing newline
    append_records(path, [full_record(seed=1)])
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: invalid JSON"):
        read_records(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": "0.91"}, "value"),  # a number stored as a string
        ({"seed": 1.0}, "seed"),
        ({"surprise": 1}, "surprise"),
        ({"status": "done"}, "status"),
        ({"value": None}, "finite value"),
    ],
)
def test_bad_record_names_file_line_and_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write_records(tmp_path / "r.jsonl", [full_record(seed=s) for s in range(3)])
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row.update(change)
    path.write_text("\n".join([*lines[:2], json.dumps(row)]) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: invalid record: .*{message}"):
        read_records(path)


def test_non_object_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: expected a JSON object, got list"):
        read_records(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(XBenchError, match="records file not found"):
        read_records(tmp_path / "nope.jsonl")


def test_unwritable_folder_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        write_records(blocker / "r.jsonl", [full_record()])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": None, "status": "ok"}, "finite value"),
        ({"value": math.nan}, "finite value"),
        ({"value": 0.5, "status": "failed"}, "value None"),
        ({"display": {"label": "x", "color": "red"}}, "unknown display keys"),
        ({"display": {"decimals": 1.5}}, "decimals"),
        ({"display": {"scale": "100"}}, "scale"),
        ({"cell": None}, "cell"),
    ],
)
def test_record_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        full_record(**change)


def test_record_is_frozen() -> None:
    record = full_record()
    with pytest.raises(ValidationError):
        record.value = 0.1


def test_records_to_frame_flattens_display() -> None:
    records = [
        full_record(),
        full_record(seed=1, metric="top1", exit=None, display={}, value=0.8),
        full_record(seed=2, value=None, status="failed", error="boom"),
    ]
    frame = records_to_frame(records)
    assert len(frame) == 3
    assert "display" not in frame.columns
    assert list(frame["display_label"]) == [
        "Pointing game",
        "top1",
        "Pointing game",
    ]  # label defaults to metric
    assert list(frame["display_scale"]) == [100.0, 1.0, 100.0]
    assert list(frame["display_decimals"]) == [1, 3, 1]
    assert list(frame["display_unit"]) == ["%", "", "%"]
    assert frame["exit"].isna().tolist() == [False, True, False]
    assert frame["exit"].iloc[0] == 2 and str(frame["exit"].dtype) == "Int64"
    assert frame["value"].iloc[1] == 0.8 and math.isnan(frame["value"].iloc[2])
    assert frame["params"].iloc[0] == {"tolerance": 15, "classes": ["a", "b"]}
    assert list(frame["status"]) == ["ok", "ok", "failed"]


def test_records_to_frame_of_nothing_has_the_columns() -> None:
    frame = records_to_frame([])
    assert len(frame) == 0
    assert {"suite", "value", "display_label", "display_scale"} <= set(frame.columns)


def test_the_shared_helper_gives_each_metric_its_registered_fields() -> None:
    """``helpers.make_record`` fills category, direction and display as the registered metrics declare them."""
    registered = [name for name in METRIC_FIELDS if name in METRICS.names()]
    assert {"top1", "flops", "params", "pointing_game", "branch_energy"} <= set(registered)
    for name in registered:
        metric = METRICS.get(name)
        assert METRIC_FIELDS[name] == (metric.category, metric.higher_is_better, metric.display()), name
        record = make_record(metric=name)
        assert (record.category, record.higher_is_better, record.display) == METRIC_FIELDS[name]
    failed = make_record(metric="time", value=None)
    assert (failed.status, failed.higher_is_better, failed.cell) == ("failed", None, "fmnist/egt/0")
