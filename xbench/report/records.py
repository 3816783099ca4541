"""Result records: one JSON-lines row per (suite, dataset, method, seed, metric[, exit]).

A :class:`Record` is the only thing the engine hands to reporting; tables and
plots are pure functions of a list of records. Numbers are stored as numbers:
reading a file validates every row strictly, so ``"0.91"`` (a string) or ``1.0``
as a seed is an error rather than a silent conversion.

Rules a record keeps:

* ``status == "ok"`` has a finite ``value``; a metric that yields NaN is a
  failure, not a number to average.
* ``status == "failed"`` has ``value is None`` and the message + traceback in
  ``error``. A failed cell writes one failed record per metric it would have
  measured, so the leaderboard knows which columns the row misses.
* ``params``, ``versions`` and ``display`` hold plain JSON (numpy scalars and
  tuples are converted on construction), so a record read back from disk equals
  the record that was written.

When records of several runs are merged and the same (dataset, method, seed,
metric, exit) appears twice, the leaderboard keeps the last row, so a re-run of a
failed cell replaces it. Rows whose ``setup`` differs are never merged: see
:func:`xbench.report.stats.statistics`, which every table and plot is rendered from.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xbench.errors import DataError, OutputError, XBenchError
from xbench.fileio import atomic_write_text
from xbench.metadata import Aggregation, member

#: Keys of ``Record.display`` and their defaults (``label`` defaults to the metric name).
DISPLAY_DEFAULTS: dict[str, Any] = {"label": None, "unit": "", "scale": 1.0, "decimals": 3}
#: Keys a ``Record.display`` holds only away from their default, so the records of every metric at
#: the default stay as they were: ``aggregation``, how seeds are summarised (:class:`~xbench.metadata.Aggregation`).
DISPLAY_OPTIONAL: dict[str, Any] = {"aggregation": "mean"}
_DISPLAY_KEYS: dict[str, Any] = {**DISPLAY_DEFAULTS, **DISPLAY_OPTIONAL}
#: Most decimals a table shows (a float has 17 significant digits; more would only print noise).
MAX_DECIMALS = 15
_DISPLAY_TYPES = (
    ("label", str, "a string"),
    ("unit", str, "a string"),
    ("scale", int | float, "a number"),
    ("decimals", int, "an integer"),
    ("aggregation", str, "a string"),
)


def _to_json(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy/torch scalars, paths and sets become plain JSON."""
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _plain_json(value: dict[str, Any]) -> dict[str, Any]:
    # A JSON round trip now makes the in-memory record equal to the one read back later.
    result: dict[str, Any] = json.loads(json.dumps(value, default=_to_json, allow_nan=False))
    return result


class Record(BaseModel):
    """One measured number (or one failure) of one cell of a suite.

    Attributes:
        suite: suite name.
        dataset: dataset name; leaderboards have one table per dataset.
        method: display label of the method row.
        seed: training seed.
        metric: metric name as the suite lists it.
        value: the score in raw units, or None when the cell failed.
        exit: early-exit index the value belongs to, or None for the final output.
        explainer: the explainer whose maps an explanation metric scored (suite label), else None.
        n: number of samples the value is computed on.
        higher_is_better: score direction; None for metrics without one (e.g. time).
        category: the metric's :class:`~xbench.metadata.Category` as a string: "accuracy",
            "efficiency", "localization", "faithfulness", "consistency", "sanity".
        display: ``{"label", "unit", "scale", "decimals"}`` and, for a metric whose seeds are
            summarised otherwise than by their mean, ``"aggregation"`` (an
            :class:`~xbench.metadata.Aggregation` value); tables show ``value * scale``.
        params: every hyperparameter the metric used.
        versions: library versions (xbench, torch, python, quantus, ...).
        git: git hash of the code, or None outside a checkout.
        device: device the cell ran on.
        time_s: wall time of the measurement in seconds.
        status: "ok" or "failed".
        error: message and traceback of a failed cell.
        method_name: registry name of the method (``method`` is its label).
        cell: id of the cell that produced the record.
        config: what the cell was trained and evaluated with: dataset, method, backbone,
            training and evaluation settings (everything but the seed), and where the data
            came from.
        setup: short hash of ``config`` without the data source; rows of a leaderboard
            aggregate seeds only across records with the same setup.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    suite: str
    dataset: str
    method: str
    seed: int
    metric: str
    value: float | None
    exit: int | None = None
    explainer: str | None = None
    n: int | None
    higher_is_better: bool | None
    category: str
    display: dict[str, Any]
    params: dict[str, Any]
    versions: dict[str, Any]
    git: str | None
    device: str
    time_s: float | None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    method_name: str
    cell: str
    config: dict[str, Any] = Field(default_factory=dict)
    setup: str | None = None

    @field_validator("params", "versions", "config")
    @classmethod
    def _check_plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _plain_json(value)

    @field_validator("display")
    @classmethod
    def _check_display(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(_DISPLAY_KEYS))
        if unknown:
            raise ValueError(f"unknown display keys {unknown}; valid keys are {sorted(_DISPLAY_KEYS)}")
        value = _plain_json(value)
        for key, kind, what in _DISPLAY_TYPES:
            item = value.get(key)
            if item is not None and (isinstance(item, bool) or not isinstance(item, kind)):
                raise ValueError(f"display[{key!r}] must be {what}, got {item!r}")
        if not 0 <= value.get("decimals", 0) <= MAX_DECIMALS:
            raise ValueError(f"display['decimals'] must be 0..{MAX_DECIMALS}, got {value['decimals']}")
        if "aggregation" in value:
            member(Aggregation, value["aggregation"])
        return value

    @field_validator("time_s")
    @classmethod
    def _check_time(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number of seconds or null, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_status(self) -> Record:
        if self.status == "ok" and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"status 'ok' needs a finite value, got value {self.value!r}")
        if self.status == "failed" and self.value is not None:
            raise ValueError(f"status 'failed' needs value None (null), got value {self.value!r}")
        return self


def _dump_line(record: Record) -> str:
    return json.dumps(record.model_dump(), allow_nan=False, ensure_ascii=False) + "\n"


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write ``records`` as JSON lines to ``path`` atomically, replacing any old file."""
    return atomic_write_text(path, "".join(_dump_line(r) for r in records))


def append_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Append ``records`` to the JSON-lines file ``path`` (created if missing).

    All lines go out in one ``write`` call, so concurrent appenders on a local
    file system do not interleave within a line.
    """
    path = Path(path)
    text = "".join(_dump_line(r) for r in records)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as handle:
            # A writer killed mid-line leaves no newline; start on a fresh line so that
            # only the broken line is reported by read_records, not ours too.
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    text = "\n" + text
            handle.write(text.encode("utf-8"))
    except OSError as err:
        raise OutputError(f"cannot append to {path}: {err.strerror}") from err
    return path


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_json(text: str) -> Any:
    """``json.loads(text)`` for input files: every way it can fail is a ``ValueError`` with a short reason.

    Besides malformed JSON, a number of more than 4300 digits (Python's limit on int
    conversion), nesting deeper than the parser's recursion limit and a ``\\udXXX`` escape
    that is half of a surrogate pair (a ``str`` that cannot be written as UTF-8 again) are
    refused; the reason names the key of the broken string.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except ValueError:  # int("1" * 5000) refuses to convert, and says so at length
        raise ValueError("invalid JSON: a number of more than 4300 digits") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if "\\u" in text:  # only an escape can make a lone surrogate: the text itself is valid UTF-8
        where = _lone_surrogate(obj, "")
        if where is not None:
            raise ValueError(f"{where or 'value'}: a \\uXXXX escape is half of a surrogate pair, not text")
    return obj


def _lone_surrogate(obj: Any, where: str) -> str | None:
    """The dotted key of the first string (or key) in ``obj`` that is not encodable as UTF-8, else None."""
    stack = [(obj, where)]
    while stack:  # iterative: the parser accepted the nesting, the check must not overflow on it
        node, at = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return at
        elif isinstance(node, dict):
            for key, value in reversed(node.items()):
                child = f"{at}.{key}" if at else str(key)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return child.encode("utf-8", "backslashreplace").decode()
                stack.append((value, child))
        elif isinstance(node, list):
            stack.extend((value, f"{at}[{i}]") for i, value in reversed(list(enumerate(node))))
    return None


def read_records(path: str | Path) -> list[Record]:
    """Read a JSON-lines records file; blank lines are skipped.

    Raises:
        XBenchError: the file does not exist.
        DataError: the file cannot be read, or a line is not JSON or not a valid record;
            the message is ``"FILE:LINE: what is wrong"``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise XBenchError(f"records file not found: {path}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err
    records = []
    # b"\n" only: str.splitlines would also split at U+2028 or U+0085 inside a string, which json.dumps
    # (ensure_ascii=False) writes as they are.
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {err.start} of the line: {err.reason})") from err
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except ValueError as err:
            raise DataError(f"{path}:{lineno}: {err}") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        try:
            records.append(Record.model_validate(obj, strict=True))
        except ValidationError as err:
            raise DataError(f"{path}:{lineno}: invalid record: {_first_error(err)}") from err
    return records


RECORD_COLUMNS = list(Record.model_fields)
DISPLAY_COLUMNS = [f"display_{key}" for key in _DISPLAY_KEYS]


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record, in order, with ``display`` flattened.

    Columns are the record fields, with ``display`` replaced by
    ``display_label``, ``display_unit``, ``display_scale``,
    ``display_decimals`` and ``display_aggregation`` (defaults filled in; the
    label defaults to the metric name). ``params`` and ``versions`` stay dicts.
    ``seed``, ``exit`` and ``n`` are nullable integers.
    """
    rows = [r.model_dump() for r in records]
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    display = pd.DataFrame(frame.pop("display").tolist(), index=frame.index, columns=list(_DISPLAY_KEYS))
    # object dtype first: a column no record sets is all-NaN float64, which pandas will not fill with a str.
    display = display.astype(object).fillna({k: v for k, v in _DISPLAY_KEYS.items() if v is not None})
    display["label"] = display["label"].fillna(frame["metric"])
    frame = frame.join(display.add_prefix("display_"))
    frame = frame.astype(
        {
            "seed": "Int64",
            "exit": "Int64",
            "n": "Int64",
            "value": "float64",
            "time_s": "float64",
            "display_scale": "float64",
            "display_decimals": "int64",
        }
    )
    return frame
