"""Regression check of a run against a committed baseline file.

A *baseline* is a JSON file (``results/baselines/NAME.json``) that holds, for
every row of a run, the seed-aggregated value of one (dataset, method,
explainer, metric, exit): ``mean``, ``ci`` (95% Student-t half-width, ``null``
with one seed) and ``n_seeds``, aggregated exactly as the leaderboards do
(:func:`xbench.report.stats.statistics`). :func:`make_baseline` builds
one from records, :func:`compare` checks records against one and
:func:`to_markdown` renders the outcome.

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

Tolerances are in raw units (the unit of ``Record.value``, before
``display.scale``: 0.01 on top-1 accuracy is one percentage point). Kinds:

* ``{"kind": "abs", "value": v}``: allowed deviation ``v``.
* ``{"kind": "rel", "value": r}``: ``r * |baseline mean|``.
* ``{"kind": "ci", "factor": f, "floor": a}``: ``max(f * baseline ci, a)``; the
  floor (default :data:`DEFAULT_CI_FLOOR`) applies when the baseline has one
  seed (no CI) or its seeds agree (CI 0).

A metric's tolerance is ``tolerances["metric@exitK"]`` (a per-exit row), else
``tolerances["metric"]``, else ``default_tolerance``. With ``delta = current -
baseline`` and ``tol`` that tolerance (plus float round-off slack), a row is

* ``regressed`` (fails): ``delta < -tol`` when higher is better, ``delta > tol``
  when lower is better;
* ``improved``: beyond ``tol`` in the metric's own good direction;
* ``changed`` (does not fail): ``|delta| > tol`` for a metric without direction;
* ``missing`` (fails): in the baseline but not in the run, or every seed of it
  failed, or some seeds failed and fewer successful seeds remain than the
  baseline had;
* ``new`` (does not fail): in the run but not in the baseline;
* ``ok``: otherwise.

The direction and display of a row come from the baseline entry.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xbench.errors import ConfigError, DataError
from xbench.fileio import atomic_write_text
from xbench.report.records import DISPLAY_DEFAULTS, Record
from xbench.report.stats import arrow, as_statistics

FORMAT = "xbench-baseline"
VERSION = 1
#: Absolute floor of a ``ci`` tolerance that does not set one (raw units).
DEFAULT_CI_FLOOR = 0.005
#: Tolerance of a new baseline for metrics without an override.
DEFAULT_TOLERANCE: dict[str, Any] = {"kind": "ci", "factor": 2.0, "floor": DEFAULT_CI_FLOOR}
#: Key of ``--tolerance`` overrides that replaces the default tolerance.
DEFAULT_KEY = "*"
STATUSES = ("regressed", "missing", "improved", "changed", "new", "ok")
FAILING = frozenset({"regressed", "missing"})

_TOLERANCE_FIELDS = {"abs": {"value"}, "rel": {"value"}, "ci": {"factor", "floor"}}
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

RowKey = tuple[str, str, str | None, str, int | None]  # dataset, method, explainer, metric, exit


# -- tolerances -------------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_tolerance(spec: Any, where: str) -> dict[str, Any]:
    """Validate one tolerance spec; ``where`` prefixes the error (``"FILE: tolerances.top1"``).

    Returns:
        A copy with numbers as floats and the ``ci`` floor filled in.

    Raises:
        DataError: unknown kind, missing or unknown field, or a negative/non-finite number.
    """
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected an object like {{'kind': 'abs', 'value': 0.01}}, got {spec!r}")
    kind = spec.get("kind")
    if kind not in _TOLERANCE_FIELDS:
        raise DataError(f"{where}.kind: expected one of {sorted(_TOLERANCE_FIELDS)}, got {kind!r}")
    fields = _TOLERANCE_FIELDS[kind]
    unknown = sorted(set(spec) - fields - {"kind"})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown} for kind {kind!r}; valid keys are {sorted(fields)}")
    out: dict[str, Any] = {"kind": kind}
    required = "factor" if kind == "ci" else "value"
    if required not in spec:
        raise DataError(f"{where}.{required}: missing (kind {kind!r} needs it)")
    for key in sorted(fields):
        if key not in spec:
            continue
        value = spec[key]
        if not _number(value) or value < 0:
            raise DataError(f"{where}.{key}: expected a finite number >= 0, got {value!r}")
        out[key] = float(value)
    if kind == "ci":
        out.setdefault("floor", DEFAULT_CI_FLOOR)
    return out


def parse_tolerance(text: str) -> tuple[str, dict[str, Any]]:
    """Parse a ``--tolerance`` flag: ``METRIC=abs:V``, ``METRIC=rel:R``, ``METRIC=ci:F[:FLOOR]``.

    ``METRIC`` is a metric name, ``metric@exitK``, or ``*`` for the default tolerance.

    Raises:
        ConfigError: the flag does not have that form.
    """
    usage = "expected METRIC=abs:VALUE, METRIC=rel:FRACTION or METRIC=ci:FACTOR[:FLOOR] (METRIC '*' = default)"
    key, sep, rule = text.partition("=")
    parts = rule.split(":")
    if not sep or not key.strip() or len(parts) < 2:
        raise ConfigError(f"--tolerance {text!r}: {usage}")
    kind, numbers = parts[0].strip(), parts[1:]
    names = {"abs": ["value"], "rel": ["value"], "ci": ["factor", "floor"]}.get(kind)
    if names is None or len(numbers) > len(names):
        raise ConfigError(f"--tolerance {text!r}: {usage}")
    spec: dict[str, Any] = {"kind": kind}
    for name, number in zip(names, numbers, strict=False):
        try:
            spec[name] = float(number)
        except ValueError:
            raise ConfigError(f"--tolerance {text!r}: {name} {number!r} is not a number") from None
    try:
        return key.strip(), check_tolerance(spec, f"--tolerance {text!r}")
    except DataError as err:
        raise ConfigError(str(err)) from err


def tolerance_for(baseline: Mapping[str, Any], metric: str, exit: int | None) -> dict[str, Any]:
    """The tolerance spec of a row: per exit, else per metric, else the default."""
    overrides = baseline.get("tolerances") or {}
    if exit is not None and f"{metric}@exit{exit}" in overrides:
        return dict(overrides[f"{metric}@exit{exit}"])
    if metric in overrides:
        return dict(overrides[metric])
    return dict(baseline.get("default_tolerance") or DEFAULT_TOLERANCE)


def allowed_deviation(spec: Mapping[str, Any], mean: float, ci: float | None) -> float:
    """The allowed deviation (raw units) of ``spec`` around a baseline ``mean`` with CI half-width ``ci``."""
    kind = spec["kind"]
    if kind == "abs":
        return float(spec["value"])
    if kind == "rel":
        return float(spec["value"]) * abs(mean)
    if kind == "ci":
        width = 0.0 if ci is None or not math.isfinite(ci) else float(spec["factor"]) * ci
        return max(width, float(spec.get("floor", DEFAULT_CI_FLOOR)))
    raise ValueError(f"unknown tolerance kind {kind!r}")


def describe_tolerance(spec: Mapping[str, Any], mean: float, ci: float | None) -> str:
    """Where a tolerance comes from, for the summary: ``abs``, ``5% rel``, ``2×CI`` or ``floor``."""
    kind = spec["kind"]
    if kind == "abs":
        return "abs"
    if kind == "rel":
        return f"{float(spec['value']) * 100:g}% rel"
    factor = float(spec["factor"])
    if ci is None or not math.isfinite(ci) or factor * ci < float(spec.get("floor", DEFAULT_CI_FLOOR)):
        return "floor"
    return f"{factor:g}×CI"


# -- aggregation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """One row of a run aggregated over seeds (raw units); ``mean``/``ci`` are None without a successful seed."""

    mean: float | None
    ci: float | None
    n_seeds: int
    n_failed: int
    higher_is_better: bool | None
    display: dict[str, Any]
    setup: str | None


def _display(display: Mapping[str, Any], metric: str) -> dict[str, Any]:
    out = {**DISPLAY_DEFAULTS, **display}
    if out["label"] is None:
        out["label"] = metric
    return out


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def aggregate(records: Iterable[Record]) -> dict[RowKey, Aggregate]:
    """Aggregate records over seeds per (dataset, method, explainer, metric, exit), in order of appearance.

    The cells of :func:`~xbench.report.stats.statistics` (without the ground-truth-mask dagger,
    so rows keep their names), so the statistics, the duplicate rule (the last record of a seed
    wins) and the refusal to mix settings are those of the leaderboards.
    """
    stats = as_statistics(records, mark_masks=False)
    out = {}
    for cell in stats.cells.itertuples(index=False):
        r = stats.records[int(cell.first)]
        n_seeds = int(cell.n_seeds)
        out[(r.dataset, r.method, r.explainer, r.metric, r.exit)] = Aggregate(
            mean=_float(cell.mean) if n_seeds else None,
            ci=_float(cell.ci) if n_seeds else None,
            n_seeds=n_seeds,
            n_failed=int(cell.n_failed),
            higher_is_better=r.higher_is_better,
            display=_display(r.display, r.metric),
            setup=r.setup,
        )
    return out


def _merged(values: Iterable[Any]) -> Any:
    """The one distinct value, or the sorted distinct values when records disagree (None when there are none)."""
    distinct = sorted({json.dumps(v, sort_keys=True) for v in values if v is not None})
    if not distinct:
        return None
    parsed = [json.loads(v) for v in distinct]
    return parsed[0] if len(parsed) == 1 else parsed


def _sort_key(key: RowKey) -> tuple[str, str, str, str, int]:
    dataset, method, explainer, metric, exit = key
    return (dataset, method, explainer or "", metric, -1 if exit is None else exit)


# -- baseline -----------------------------------------------------------------------------------------
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
        raise DataError(f"{source}: format: expected {FORMAT!r}, got {data.get('format')!r} (not an xbench baseline)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{source}: version: expected a positive integer, got {version!r}")
    if version > VERSION:
        raise DataError(f"{source}: version: {version} is newer than this xbench reads ({VERSION}); upgrade xbench")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown}; valid keys are {sorted(_TOP_KEYS)}")
    out = dict(data)
    out["default_tolerance"] = check_tolerance(data.get("default_tolerance"), f"{source}: default_tolerance")
    overrides = data.get("tolerances", {})
    if not isinstance(overrides, dict):
        raise DataError(f"{source}: tolerances: expected an object of metric -> tolerance, got {overrides!r}")
    out["tolerances"] = {str(k): check_tolerance(v, f"{source}: tolerances.{k}") for k, v in sorted(overrides.items())}
    settings = data.get("settings", {})
    setups = settings.get("setups", {}) if isinstance(settings, dict) else None
    if settings is not None and not isinstance(settings, dict):
        raise DataError(f"{source}: settings: expected an object, got {type(settings).__name__}")
    if setups is not None and not (isinstance(setups, dict) and all(isinstance(v, dict) for v in setups.values())):
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
            raise DataError(f"{where}.{key}: expected {what}, got {value!r}")
    out: dict[str, Any] = {key: entry.get(key) for key in _ENTRY_TYPES}
    out["mean"] = float(out["mean"])
    out["ci"] = None if out["ci"] is None else float(out["ci"])
    display = entry.get("display", {})
    unknown = sorted(set(display) - set(DISPLAY_DEFAULTS))
    if unknown:
        raise DataError(f"{where}.display: unknown key(s) {unknown}; valid keys are {sorted(DISPLAY_DEFAULTS)}")
    out["display"] = _display(display, out["metric"])
    for name, kind, what in (("label", str, "a string"), ("unit", str, "a string"), ("decimals", int, "an integer")):
        item = out["display"][name]
        if not isinstance(item, kind) or isinstance(item, bool) or (name == "decimals" and int(item) < 0):
            raise DataError(f"{where}.display.{name}: expected {what}, got {item!r}")
    if not _number(out["display"]["scale"]):
        raise DataError(f"{where}.display.scale: expected a finite number, got {out['display']['scale']!r}")
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
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    return validate_baseline(data, str(path))


def dump_baseline(baseline: Mapping[str, Any]) -> str:
    """JSON text of a baseline: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(baseline, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_baseline(path: str | Path, baseline: Mapping[str, Any]) -> Path:
    """Write a baseline file atomically."""
    return atomic_write_text(path, dump_baseline(baseline))


# -- comparison --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One row of a check, in raw units; ``status`` is one of :data:`STATUSES`."""

    dataset: str
    method: str
    explainer: str | None
    metric: str
    exit: int | None
    status: str
    higher_is_better: bool | None
    display: dict[str, Any]
    baseline: float | None = None
    baseline_ci: float | None = None
    baseline_seeds: int = 0
    current: float | None = None
    current_ci: float | None = None
    current_seeds: int = 0
    current_failed: int = 0
    tolerance: float | None = None
    tolerance_kind: str = ""
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass(frozen=True)
class CheckResult:
    """Every row of a check and notes on how the run differs from the baseline's settings."""

    rows: tuple[Comparison, ...]
    notes: tuple[str, ...] = ()

    def by_status(self, status: str) -> list[Comparison]:
        return [row for row in self.rows if row.status == status]

    @property
    def failed(self) -> bool:
        """A row regressed or is missing."""
        return any(row.status in FAILING for row in self.rows)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _status(delta: float, tol: float, higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "changed" if abs(delta) > tol else "ok"
    worse = -delta if higher_is_better else delta
    if worse > tol:
        return "regressed"
    if worse < -tol:
        return "improved"
    return "ok"


def _seeds_note(entry: Mapping[str, Any], row: Aggregate) -> str:
    notes = []
    if row.n_failed:
        notes.append(f"{row.n_failed} failed record(s)")
    if row.n_seeds != entry["n_seeds"]:
        notes.append(f"seeds {entry['n_seeds']} → {row.n_seeds}")
    return "; ".join(notes)


def compare(
    records: Iterable[Record],
    baseline: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CheckResult:
    """Compare a run's records with a baseline (see the module docstring for the rules).

    Args:
        records: the run's records.
        baseline: a baseline dict (from :func:`load_baseline` or :func:`make_baseline`).
        overrides: tolerances that replace the baseline's for this check (``"*"``: the default).

    Raises:
        DataError: the baseline is malformed, or records of one row come from different settings.
    """
    records = list(records)
    base = validate_baseline(baseline, "baseline")
    for name, override in (overrides or {}).items():
        if name == DEFAULT_KEY:
            base["default_tolerance"] = check_tolerance(override, f"tolerance {name}")
        else:
            base["tolerances"][name] = check_tolerance(override, f"tolerance {name}")
    run = aggregate(records)
    rows = []
    for entry in base["entries"]:
        key: RowKey = (entry["dataset"], entry["method"], entry["explainer"], entry["metric"], entry["exit"])
        common: dict[str, Any] = {
            "dataset": key[0],
            "method": key[1],
            "explainer": key[2],
            "metric": key[3],
            "exit": key[4],
            "higher_is_better": entry["higher_is_better"],
            "display": entry["display"],
            "baseline": entry["mean"],
            "baseline_ci": entry["ci"],
            "baseline_seeds": entry["n_seeds"],
        }
        spec = tolerance_for(base, key[3], key[4])
        tol = allowed_deviation(spec, entry["mean"], entry["ci"])
        common.update(tolerance=tol, tolerance_kind=describe_tolerance(spec, entry["mean"], entry["ci"]))
        row = run.get(key)
        if row is None:
            rows.append(Comparison(status="missing", note="not in the run", **common))
            continue
        current: dict[str, Any] = {
            "current": row.mean,
            "current_ci": row.ci,
            "current_seeds": row.n_seeds,
            "current_failed": row.n_failed,
        }
        if row.mean is None:
            note = f"all {row.n_failed} record(s) failed"
            rows.append(Comparison(status="missing", note=note, **common, **current))
            continue
        if row.n_failed and row.n_seeds < entry["n_seeds"]:
            note = f"{row.n_failed} record(s) failed; seeds {entry['n_seeds']} → {row.n_seeds}"
            rows.append(Comparison(status="missing", note=note, **common, **current))
            continue
        # Slack for float round-off (a mean summed in another order), far below any display precision.
        slack = 1e-9 * max(1.0, abs(entry["mean"]))
        status = _status(row.mean - entry["mean"], tol + slack, entry["higher_is_better"])
        rows.append(Comparison(status=status, note=_seeds_note(entry, row), **common, **current))
    known = {(e["dataset"], e["method"], e["explainer"], e["metric"], e["exit"]) for e in base["entries"]}
    for extra, row in run.items():
        if extra in known:
            continue
        note = f"all {row.n_failed} record(s) failed" if row.mean is None else ""
        rows.append(
            Comparison(
                dataset=extra[0],
                method=extra[1],
                explainer=extra[2],
                metric=extra[3],
                exit=extra[4],
                status="new",
                higher_is_better=row.higher_is_better,
                display=row.display,
                current=row.mean,
                current_ci=row.ci,
                current_seeds=row.n_seeds,
                current_failed=row.n_failed,
                note=note,
            )
        )
    return CheckResult(tuple(rows), tuple(_notes(base, records)))


def _notes(base: Mapping[str, Any], records: list[Record]) -> list[str]:
    """Differences in settings and versions between the run and the baseline (they do not fail a check)."""
    notes = []
    setups = (base.get("settings") or {}).get("setups") or {}
    seen = set()
    for r in records:
        old = setups.get(r.dataset, {}).get(r.method)
        if old is None or r.setup is None or old == r.setup or (r.dataset, r.method) in seen:
            continue
        seen.add((r.dataset, r.method))
        notes.append(
            f"{r.method} on {r.dataset} ran with other settings than the baseline (setup {old} → {r.setup}); "
            "its numbers may not be comparable"
        )
    versions = base.get("versions") or {}
    run_versions = {
        k: _merged(r.versions.get(k) for r in records) for k in sorted({k for r in records for k in r.versions})
    }
    changed = [f"{k} {versions[k]} → {v}" for k, v in run_versions.items() if k in versions and versions[k] != v]
    if changed:
        notes.append("versions differ from the baseline's: " + ", ".join(changed))
    return notes


# -- Markdown -------------------------------------------------------------------------------------------
_TITLES = {
    "regressed": "Regressed",
    "missing": "Missing",
    "improved": "Improved",
    "changed": "Changed (no direction)",
    "new": "New (not in the baseline)",
}


def _fmt(value: float, display: Mapping[str, Any], signed: bool = False, unit: bool = True) -> str:
    x = value * float(display["scale"])
    decimals = int(display["decimals"])
    text = f"{x:{'+' if signed else ''}.{decimals}f}"
    if x != 0 and float(text) == 0:  # a real difference that the display precision would hide
        text = f"{x:{'+' if signed else ''}.2g}"
    elif float(text) == 0:
        text = f"{0:.{decimals}f}"  # no "-0.00" / "+0.00"
    return f"{text} {display['unit']}" if unit and display["unit"] else text


def _value_cell(value: float | None, ci: float | None, seeds: int, display: Mapping[str, Any]) -> str:
    if value is None:
        return "\u2014"
    text = _fmt(value, display, unit=False)
    if ci is not None and math.isfinite(ci) and ci > 0:
        text += f" ± {_fmt(ci, display, unit=False)}"
    if display["unit"]:
        text += f" {display['unit']}"
    return f"{text} ({seeds} seed{'s' if seeds != 1 else ''})"


def _row_name(key: RowKey) -> str:
    dataset, method, explainer, metric, exit = key
    where = f"{method} ({explainer})" if explainer else method
    return f"{dataset} / {where} / {metric}" + (f" @exit {exit}" if exit is not None else "")


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _metric_cell(row: Comparison) -> str:
    return f"{row.metric}{f' @exit {row.exit}' if row.exit is not None else ''}{arrow(row.higher_is_better)}"


def verdict(result: CheckResult) -> str:
    """One line: PASS or FAIL with the count of each status."""
    counts = {status: len(result.by_status(status)) for status in STATUSES}
    total = sum(counts[s] for s in STATUSES if s != "new")
    detail = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s != "ok")
    word = "FAIL" if result.failed else "PASS"
    return f"**{word}**: {detail}; {counts['ok']} of {total} baseline rows within tolerance."


def to_markdown(result: CheckResult, title: str | None = None) -> str:
    """GitHub-flavoured Markdown: a verdict line, notes, then a table per non-empty status (not ``ok``)."""
    parts = [f"# {title}\n"] if title else []
    parts.append(verdict(result) + "\n")
    if result.notes:
        parts.append("\n".join(f"- Note: {note}" for note in result.notes) + "\n")
    header = ["Dataset", "Method", "Explainer", "Metric", "Baseline", "Current", "Delta", "Tolerance", "Note"]
    for status in STATUSES:
        rows = result.by_status(status)
        if status == "ok" or not rows:
            continue
        lines = ["| " + " | ".join(header) + " |", "|:---|:---|:---|:---|---:|---:|---:|---:|:---|"]
        for row in rows:
            delta = row.delta
            tolerance = (
                "\u2014" if row.tolerance is None else f"±{_fmt(row.tolerance, row.display)} ({row.tolerance_kind})"
            )
            cells = [
                row.dataset,
                row.method,
                row.explainer or "\u2014",
                _metric_cell(row),
                _value_cell(row.baseline, row.baseline_ci, row.baseline_seeds, row.display),
                _value_cell(row.current, row.current_ci, row.current_seeds, row.display),
                "\u2014" if delta is None else _fmt(delta, row.display, signed=True),
                tolerance,
                row.note,
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        parts.append(f"## {_TITLES[status]} ({len(rows)})\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)
