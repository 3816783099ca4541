"""Baseline files: made from a run's records, validated, read and written.

Baseline file (``version`` 1; keys sorted, 2-space indent)::

    {
      "created": "2025-01-01T12:00:00+00:00",
      "default_tolerance": {"factor": 2.0, "floor": 0.005, "kind": "ci"},
      "entries": [
        {"ci": 0.0497, "dataset": "fmnist", "display": {...}, "exit": null,
         "explainer": null, "higher_is_better": true, "mean": 0.82,
         "method": "egt", "metric": "top1", "n_seeds": 3}
      ],
      "format": "xbench-baseline",
      "git": "0123abc",
      "settings": {"config": {...config.yaml...}, "setups": {"fmnist": {"egt": "3f2a..."}}},
      "suite": "quick",
      "tolerances": {"top1": {"kind": "abs", "value": 0.01}},
      "version": 1,
      "versions": {"torch": "2.5.0", "xbench": "0.1.0"}
    }

``settings.config`` is the run's ``config.yaml``; without one, ``settings.cells``
holds each (dataset, method)'s record ``config`` (minus the machine-specific data
path). ``git``, ``suite`` and each ``versions`` value is a list when the records
disagree. A free-text top-level ``description`` may be added by hand; refreshing a
baseline keeps it, the default tolerance and the per-metric tolerances.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xbench.errors import DataError
from xbench.fileio import atomic_write_text
from xbench.report.check.rows import RowKey, _display, _merged, _row_name, _sort_key, aggregate
from xbench.report.check.tolerances import DEFAULT_KEY, DEFAULT_TOLERANCE, _number, _short, check_tolerance
from xbench.report.records import DISPLAY_DEFAULTS, DISPLAY_OPTIONAL, MAX_DECIMALS, Record, parse_json

FORMAT = "xbench-baseline"
VERSION = 1
_TOP_KEYS = {
    "format",
    "version",
    "created",
    "description",
    "suite",
    "git",
    "versions",
    "settings",
    "default_tolerance",
    "tolerances",
    "entries",
}
_ENTRY_TYPES: dict[str, tuple[tuple[type, ...], str, bool]] = {
    # key: (types, what, may be null)
    "dataset": ((str,), "a string", False),
    "method": ((str,), "a string", False),
    "explainer": ((str,), "a string or null", True),
    "metric": ((str,), "a string", False),
    "exit": ((int,), "an integer or null", True),
    "mean": ((int, float), "a finite number", False),
    "ci": ((int, float), "a number >= 0 or null", True),
    "n_seeds": ((int,), "an integer >= 1", False),
    "higher_is_better": ((bool,), "true, false or null", True),
    "display": ((dict,), "an object", False),
}


def make_baseline(
    records: Iterable[Record],
    *,
    config: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    tolerances: Mapping[str, Mapping[str, Any]] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """A baseline (see the module docstring) of ``records``.

    Args:
        records: the run's records; rows without a successful seed are left out.
        config: the run's resolved suite (``config.yaml``), stored under ``settings.config``; without
            it each (dataset, method)'s record ``config`` is stored under ``settings.cells``.
        previous: the baseline being refreshed: its default tolerance, per-metric tolerances and
            description are kept.
        tolerances: overrides on top of those (key ``"*"`` sets the default tolerance).
        created: timestamp to record (default: now, UTC).

    Raises:
        DataError: no record has a value, or records of one row come from different settings.
    """
    records = list(records)
    rows = aggregate(records)
    entries = []
    for key in sorted(rows, key=_sort_key):
        row = rows[key]
        if row.mean is None:
            continue
        dataset, method, explainer, metric, exit = key
        entries.append(
            {
                "dataset": dataset,
                "method": method,
                "explainer": explainer,
                "metric": metric,
                "exit": exit,
                "mean": row.mean,
                "ci": row.ci,
                "n_seeds": row.n_seeds,
                "higher_is_better": row.higher_is_better,
                "display": row.display,
            }
        )
    if not entries:
        raise DataError("no successful records to make a baseline from")
    default = dict(DEFAULT_TOLERANCE)
    overrides: dict[str, Any] = {}
    if previous is not None:
        default = dict(previous.get("default_tolerance") or default)
        overrides = {k: dict(v) for k, v in (previous.get("tolerances") or {}).items()}
    for name, spec in (tolerances or {}).items():
        if name == DEFAULT_KEY:
            default = dict(spec)
        else:
            overrides[name] = dict(spec)
    setups: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.setup is not None:
            setups.setdefault(r.dataset, {})[r.method] = r.setup
        # The data source is a path on the machine that ran; the setup hash leaves it out too.
        cells.setdefault(r.dataset, {})[r.method] = {k: v for k, v in r.config.items() if k != "data_source"}
    settings: dict[str, Any] = {"config": dict(config) if config is not None else None, "setups": setups}
    if config is None:
        settings["cells"] = cells
    baseline: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created": created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "suite": _merged(r.suite for r in records),
        "git": _merged(r.git for r in records),
        "versions": {
            k: _merged(r.versions.get(k) for r in records) for k in sorted({k for r in records for k in r.versions})
        },
        "settings": settings,
        "default_tolerance": default,
        "tolerances": overrides,
        "entries": entries,
    }
    if previous is not None and previous.get("description") is not None:
        baseline["description"] = previous["description"]
    return validate_baseline(baseline, "baseline")


def validate_baseline(data: Any, source: str) -> dict[str, Any]:
    """Check the structure of a baseline; errors name ``source`` and the key (``FILE: entries[3].mean: ...``).

    Returns:
        A copy with tolerances normalised (floats, ``ci`` floor filled in) and display defaults filled in.

    Raises:
        DataError: anything is missing, of the wrong type, duplicated or of a newer format version.
    """
    if not isinstance(data, dict):
        raise DataError(f"{source}: a baseline must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise DataError(
            f"{source}: format: expected {FORMAT!r}, got {_short(data.get('format'))} (not an xbench baseline)"
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{source}: version: expected a positive integer, got {_short(version)}")
    if version > VERSION:
        raise DataError(f"{source}: version: {version} is newer than this xbench reads ({VERSION}); upgrade xbench")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown}; valid keys are {sorted(_TOP_KEYS)}")
    _check_provenance(data, source)
    out = dict(data)
    out["default_tolerance"] = check_tolerance(data.get("default_tolerance"), f"{source}: default_tolerance")
    overrides = data.get("tolerances", {})
    if not isinstance(overrides, dict):
        raise DataError(f"{source}: tolerances: expected an object of metric -> tolerance, got {_short(overrides)}")
    out["tolerances"] = {str(k): check_tolerance(v, f"{source}: tolerances.{k}") for k, v in sorted(overrides.items())}
    settings = data.get("settings", {})
    setups = settings.get("setups", {}) if isinstance(settings, dict) else None
    if settings is not None and not isinstance(settings, dict):
        raise DataError(f"{source}: settings: expected an object, got {type(settings).__name__}")
    if setups is not None and not (
        isinstance(setups, dict)
        and all(isinstance(v, dict) and all(isinstance(h, str) for h in v.values()) for v in setups.values())
    ):
        raise DataError(f"{source}: settings.setups: expected an object of dataset -> method -> setup hash")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise DataError(f"{source}: entries: expected a list, got {type(entries).__name__}")
    out["entries"] = []
    seen: set[RowKey] = set()
    for i, entry in enumerate(entries):
        checked = _check_entry(entry, f"{source}: entries[{i}]")
        key = (checked["dataset"], checked["method"], checked["explainer"], checked["metric"], checked["exit"])
        if key in seen:
            raise DataError(f"{source}: entries[{i}]: duplicate row {_row_name(key)}")
        seen.add(key)
        out["entries"].append(checked)
    return out


def _check_provenance(data: dict[str, Any], source: str) -> None:
    """The descriptive top-level keys: strings (or, where records disagreed, lists of them) and an object."""
    for key, lists in (("created", False), ("description", False), ("suite", True), ("git", True)):
        value = data.get(key)
        if value is None or isinstance(value, str) or (lists and _strings(value)):
            continue
        what = "a string, a list of strings or null" if lists else "a string or null"
        raise DataError(f"{source}: {key}: expected {what}, got {_short(value)}")
    versions = data.get("versions")
    if versions is not None and not isinstance(versions, dict):
        raise DataError(f"{source}: versions: expected an object of library -> version, got {_short(versions)}")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_entry(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_ENTRY_TYPES))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(_ENTRY_TYPES)}")
    for key, (types, what, nullable) in _ENTRY_TYPES.items():
        if key not in entry:
            if nullable or key == "display":
                continue
            raise DataError(f"{where}.{key}: missing")
        value = entry[key]
        if value is None and nullable:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        bad_number = key in ("mean", "ci") and isinstance(value, int | float) and not math.isfinite(value)
        negative = key in ("ci", "n_seeds") and _number(value) and value < (1 if key == "n_seeds" else 0)
        if not isinstance(value, types) or wrong_bool or bad_number or negative:
            raise DataError(f"{where}.{key}: expected {what}, got {_short(value)}")
    out: dict[str, Any] = {key: entry.get(key) for key in _ENTRY_TYPES}
    out["mean"] = float(out["mean"])
    out["ci"] = None if out["ci"] is None else float(out["ci"])
    display = entry.get("display", {})
    valid = {*DISPLAY_DEFAULTS, *DISPLAY_OPTIONAL}
    unknown = sorted(set(display) - valid)
    if unknown:
        raise DataError(f"{where}.display: unknown key(s) {unknown}; valid keys are {sorted(valid)}")
    out["display"] = _display(display, out["metric"])
    decimals = f"an integer 0..{MAX_DECIMALS}"
    for name, kind, what in (("label", str, "a string"), ("unit", str, "a string"), ("decimals", int, decimals)):
        item = out["display"][name]
        if (
            not isinstance(item, kind)
            or isinstance(item, bool)
            or (name == "decimals" and not 0 <= int(item) <= MAX_DECIMALS)
        ):
            raise DataError(f"{where}.display.{name}: expected {what}, got {_short(item)}")
    if not _number(out["display"]["scale"]):
        raise DataError(f"{where}.display.scale: expected a finite number, got {_short(out['display']['scale'])}")
    return out


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline file.

    Raises:
        DataError: the file is missing, unreadable, not JSON or not a valid baseline; the message names it.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such baseline file (write one with 'python -m xbench baseline')") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a baseline file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    try:
        data = parse_json(text)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err
    return validate_baseline(data, str(path))


def dump_baseline(baseline: Mapping[str, Any]) -> str:
    """JSON text of a baseline: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(baseline, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_baseline(path: str | Path, baseline: Mapping[str, Any]) -> Path:
    """Write a baseline file atomically."""
    return atomic_write_text(path, dump_baseline(baseline))
