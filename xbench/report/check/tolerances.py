"""Tolerances of a regression check: how far a row may move from its baseline value.

Tolerances are in raw units (the unit of ``Record.value``, before
``display.scale``: 0.01 on top-1 accuracy is one percentage point). Kinds:

* ``{"kind": "abs", "value": v}``: allowed deviation ``v``.
* ``{"kind": "rel", "value": r}``: ``r * |baseline mean|``.
* ``{"kind": "ci", "factor": f, "floor": a}``: ``max(f * baseline ci, a)``; the
  floor (default :data:`DEFAULT_CI_FLOOR`) applies when the baseline has one
  seed (no CI) or its seeds agree (CI 0).

A metric's tolerance is ``tolerances["metric@exitK"]`` (a per-exit row), else
``tolerances["metric"]``, else ``default_tolerance`` (:func:`tolerance_for`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from xbench.errors import ConfigError, DataError

#: Absolute floor of a ``ci`` tolerance that does not set one (raw units).
DEFAULT_CI_FLOOR = 0.005
#: Tolerance of a new baseline for metrics without an override.
DEFAULT_TOLERANCE: dict[str, Any] = {"kind": "ci", "factor": 2.0, "floor": DEFAULT_CI_FLOOR}
#: Key of ``--tolerance`` overrides that replaces the default tolerance.
DEFAULT_KEY = "*"
_TOLERANCE_FIELDS = {"abs": {"value"}, "rel": {"value"}, "ci": {"factor", "floor"}}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    """``repr`` of a value for a one-line message, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_tolerance(spec: Any, where: str) -> dict[str, Any]:
    """Validate one tolerance spec; ``where`` prefixes the error (``"FILE: tolerances.top1"``).

    Returns:
        A copy with numbers as floats and the ``ci`` floor filled in.

    Raises:
        DataError: unknown kind, missing or unknown field, or a negative/non-finite number.
    """
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected an object like {{'kind': 'abs', 'value': 0.01}}, got {_short(spec)}")
    kind = spec.get("kind")
    if kind not in _TOLERANCE_FIELDS:
        raise DataError(f"{where}.kind: expected one of {sorted(_TOLERANCE_FIELDS)}, got {_short(kind)}")
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
            raise DataError(f"{where}.{key}: expected a finite number >= 0, got {_short(value)}")
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
