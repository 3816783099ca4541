"""One-line messages for invalid suites: pydantic's errors as ``key.path: problem``, and numbers that
are not numbers (YAML booleans, NaN, infinities)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_from_name()]", "function-before[_from_name()]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The valid keys at ``loc`` (for "unknown key" messages)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current is not None else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return sorted(current.model_fields) if current is not None else None


# pydantic puts the union member an error belongs to into its location ("literal['flip','crop']",
# "function-after[...]"); they are not keys a user wrote.
_UNION_TAGS = ("function-", "literal[")


def _union_errors(errors: list[Any]) -> list[Any]:
    """One error per value: of a union's members, the one that fits the input's kind (a mapping: the model's)."""
    kept: list[Any] = []
    seen: set[tuple[Any, ...]] = set()
    for e in errors:
        loc = tuple(e["loc"])
        tag = next((i for i, p in enumerate(loc) if isinstance(p, str) and p.startswith(_UNION_TAGS)), None)
        if tag is None:
            kept.append(e)
            continue
        if isinstance(e.get("input"), dict) and str(loc[tag]).startswith("literal["):
            continue  # a mapping was never meant as one of the names
        if loc[:tag] not in seen:
            seen.add(loc[:tag])
            kept.append(e)
    return kept or errors


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 1 MB string stays out of a one-line message)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more than 4300 digits
        return "a huge integer"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first error of ``err`` as ``key.path: message``."""
    errors = _union_errors(err.errors())
    e = errors[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(_UNION_TAGS)))
    more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
    if e["type"] == "invalid_key" or loc[-1:] == ("[key]",):  # a key that is not a string, e.g. 5:
        key = e.get("input")
        parent = ".".join(x for x in (prefix, _loc(loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1])) if x)
        return f"{parent + ': ' if parent else ''}key {key!r}: keys must be strings{more}".replace(".[", "[")
    where = _loc(loc)
    full = ".".join(x for x in (prefix, where) if x).replace(".[", "[")
    if e["type"] == "extra_forbidden":
        keys = _model_keys(model, loc)
        valid = f" (valid keys: {', '.join(keys)})" if keys else ""
        return f"{full}: unknown key{valid}"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict | list) or e["type"] == "missing" else f" (got {_short(got)})"
    if not full:  # a whole-suite check; its message names the key itself
        return f"{msg}{more}"
    return f"{full}: {msg}{shown}{more}"


def number_problem(raw: Any, validated: Any, where: str = "") -> str | None:
    """The first number that validation let through but should not have, as ``key.path: problem``.

    pydantic reads ``true`` as 1 for a number field (``epochs: yes`` would mean one epoch) and
    accepts ``.inf``/``.nan`` unless told not to. ``validated`` is the validated model's
    ``model_dump()``, which mirrors the layout of ``raw``.
    """
    if isinstance(raw, bool):
        return None if isinstance(validated, bool) else f"{where}: expected a number, not a boolean (got {_short(raw)})"
    if isinstance(validated, float) and not math.isfinite(validated):
        return f"{where}: Input should be a finite number (got {_short(raw)})"
    pairs: list[tuple[str, Any, Any]] = []
    if isinstance(raw, dict) and isinstance(validated, dict):
        pairs = [(f"{where}.{k}" if where else str(k), v, validated[k]) for k, v in raw.items() if k in validated]
    elif isinstance(raw, list) and isinstance(validated, list | tuple) and len(raw) == len(validated):
        pairs = [(f"{where}[{i}]", v, validated[i]) for i, v in enumerate(raw)]
    for key, value, done in pairs:
        found = number_problem(value, done, key)
        if found is not None:
            return found
    return None
