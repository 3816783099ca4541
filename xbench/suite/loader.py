"""Reading suite files: strict YAML, ``extends:``, ``--set`` overrides, plugin validation and the resolved
suite written next to the results."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

import yaml
from pydantic import BaseModel, ValidationError

from xbench.errors import ConfigError, UnknownNameError
from xbench.suite.messages import format_validation_error, number_problem
from xbench.suite.schema import PluginSpec, Suite, path_problem
from xbench.suite.strict_yaml import MAX_DEPTH, parse_yaml, read_yaml

P = ParamSpec("P")

__all__ = ["apply_override", "dump_suite", "load_suite", "read_yaml", "validate_plugins"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``over`` replace those in ``base``.

    A plugin given by another ``name`` replaces the base's whole mapping: its params belong to the
    old plugin (a child suite that switches ``backbone`` from resnet_cifar to resnet50 must not
    inherit ``depth``).
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        if both and not ("name" in v and v["name"] != out[k].get("name")):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_extends(
    path: Path, seen: tuple[Path, ...] = (), chain: list[tuple[Path, Any]] | None = None
) -> dict[str, Any]:
    """Merge ``path`` over the suites it extends; ``chain`` collects (file, raw data), child first."""
    path = path.resolve() if path.exists() else path
    if path in seen:
        cycle = " -> ".join(p.name for p in (*seen, path))
        raise ConfigError(f"{seen[0]}: extends: circular ({cycle})")
    if len(seen) >= MAX_EXTENDS:
        raise ConfigError(f"{seen[0]}: extends: a chain of more than {MAX_EXTENDS} files (at {path.name})")
    data = read_yaml(path)
    if chain is not None:
        chain.append((path, copy.deepcopy(data)))
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a file path, got {parent!r}")
    problem = path_problem(parent)
    if problem is not None:
        raise ConfigError(f"{path}: extends: {problem}")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends: no such suite file {parent!r}")
    base = _resolve_extends(parent_path, (*seen, path), chain)
    base.pop("name", None)  # a child is its own suite unless it names itself
    base.pop("output", None)
    return _merge(base, data)


MAX_EXTENDS = 16  # files in one extends: chain
MAX_KEY = 1000  # characters of a --set key path

_SEGMENT = re.compile(r"[^.\[\]]+|\[\d+\]")


def _split_path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for seg in _SEGMENT.findall(key):
        digits = seg[1:-1] if seg.startswith("[") else seg
        # An index of 5000 digits would be a ValueError from int(): no list is that long anyway.
        parts.append(int(digits) if digits.isdecimal() and len(digits) <= 18 else seg)
    return parts


def apply_override(data: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply one ``key.path=value`` (value parsed as YAML) to raw suite data in place."""
    key, sep, raw = assignment.partition("=")
    shown = repr(assignment) if len(assignment) <= 80 else f"{assignment[:77]!r}..."
    if not sep or not key.strip():
        raise ConfigError(f"{source} {shown}: expected key.path=value")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in the shell's argument
        raise ConfigError(f"{source} {key[:60]!r}: the key path is not valid Unicode (not UTF-8?)") from None
    if len(key) > MAX_KEY:
        raise ConfigError(f"{source} {key[:60]}...: a key path of {len(key)} characters (at most {MAX_KEY})")
    path = _split_path(key.strip())
    if not path:
        raise ConfigError(f"{source} {shown}: expected key.path=value")
    if len(path) > MAX_DEPTH:
        raise ConfigError(f"{source} {key[:60]}...: a key path of {len(path)} levels (at most {MAX_DEPTH})")
    shown = repr(raw) if len(raw) <= 80 else f"{raw[:77]!r}..."
    value = parse_yaml(raw, f"{source} {key}: value {shown} is not valid YAML") if raw.strip() else ""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            part = _index(node, part, key, source)
            if isinstance(node[part], str):  # a shorthand plugin name: expand to a mapping
                node[part] = {"name": node[part]}
            node = node[part]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            elif isinstance(node[part], str) and not isinstance(nxt, int):
                node[part] = {"name": node[part]}
            node = node[part]
        else:  # e.g. training.epochs.x.y: epochs holds a number
            raise ConfigError(f"{source} {key}: cannot set a key inside {type(node).__name__} value")
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, key, source)] = value
    elif isinstance(node, dict):
        node[str(last)] = value
    else:
        raise ConfigError(f"{source} {key}: cannot set a key inside {type(node).__name__} value")


def _index(node: list[Any], part: str | int, key: str, source: str) -> int:
    """``part`` as an index into the list ``node``, or a ConfigError for the ``--set`` path ``key``."""
    if not isinstance(part, int):
        raise ConfigError(f"{source} {key}: {part!r} is not an index; that key holds a list (use [0], [1], ...)")
    if part >= len(node):
        raise ConfigError(f"{source} {key}: index {part} out of range (list of {len(node)})")
    return part


def validate_plugins(suite: Suite, source: str) -> dict[str, dict[str, BaseModel]]:
    """Check every plugin name and its params against the registries.

    Returns the validated params per kind and row label, so callers need not
    validate them again.
    """
    from xbench.params import Configurable
    from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS, Registry

    validated: dict[str, dict[str, BaseModel]] = {}
    prefix = f"{source}: " if source else ""
    groups: list[tuple[str, Registry[type[Configurable]], list[PluginSpec]]] = [
        ("datasets", DATASETS, suite.datasets),
        ("methods", METHODS, suite.methods),
        ("metrics", METRICS, suite.metrics),
        ("explainers", EXPLAINERS, suite.explainers),
        ("backbone", BACKBONES, [suite.backbone]),
        ("row_backbones", BACKBONES, [m.backbone for m in suite.methods if m.backbone is not None]),
    ]
    for key, registry, specs in groups:
        validated[key] = {}
        rows = [i for i, m in enumerate(suite.methods) if m.backbone is not None]
        for i, spec in enumerate(specs):
            if key == "row_backbones":
                where = f"methods[{rows[i]}].backbone"
            else:
                where = key if key == "backbone" else f"{key}[{i}]"
            try:
                cls = registry.get(spec.name)
            except UnknownNameError as err:
                raise ConfigError(f"{prefix}{where}.name: {err}") from err
            try:
                params = cls.Params.model_validate(spec.params)
            except ValidationError as err:
                raise ConfigError(f"{prefix}{format_validation_error(err, cls.Params, f'{where}.params')}") from err
            problem = number_problem(spec.params, params.model_dump(), f"{where}.params")
            if problem is not None:
                raise ConfigError(f"{prefix}{problem}")
            # A row backbone is validated under its method row's label (two rows may give it different params).
            validated[key][suite.methods[rows[i]].display if key == "row_backbones" else spec.display] = params
    if not suite.explainers:  # explanation metrics would silently report nothing
        for i, spec in enumerate(suite.metrics):
            if getattr(METRICS.get(spec.name), "uses_explanations", False):
                raise ConfigError(
                    f"{prefix}explainers: empty, but metrics[{i}] ({spec.name}) scores explanations; "
                    "list explainers (e.g. [native, gradcam, random]) or drop the explanation metrics"
                )
    return validated


def _has_path(data: Any, where: str) -> bool:
    """Whether raw YAML ``data`` sets the key path ``where`` (e.g. ``methods[0].params.lam``)."""
    node = data
    for part in _split_path(where):
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return isinstance(node, str) and part == "name"  # a plugin shorthand string is its name
        node = node[part]
    return True


def _blame(message: str, path: Path, chain: list[tuple[Path, Any]], overrides: tuple[str, ...] | list[str]) -> str:
    """Prefix ``key: problem`` with what set the key: a ``--set`` flag, the file, or a parent it extends."""
    where = message.split(":", 1)[0]
    for assignment in reversed(overrides):
        key = assignment.partition("=")[0].strip()
        norm = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
        if where == norm or where.startswith((norm + ".", norm + "[")) or norm.startswith((where + ".", where + "[")):
            return f"{path}: --set {message}"
    for file, raw in chain[1:]:
        if not _has_path(chain[0][1], where) and _has_path(raw, where):
            return f"{file} (extended by {path}): {message}"
    return f"{path}: {message}"


def _one_line(load: Callable[P, Suite]) -> Callable[P, Suite]:
    """Turn a RecursionError or MemoryError while reading a suite into one line naming the file.

    The limits in :mod:`xbench.suite.strict_yaml` keep both out of reach; this is the backstop that
    keeps a traceback off stderr should one slip through.
    """

    @functools.wraps(load)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Suite:
        try:
            return load(*args, **kwargs)
        except RecursionError as err:
            raise ConfigError(f"{args[0] if args else kwargs.get('path')}: nested too deeply to validate") from err
        except MemoryError as err:
            raise ConfigError(f"{args[0] if args else kwargs.get('path')}: too large to validate") from err

    return wrapper


@_one_line
def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = (), check_plugins: bool = True) -> Suite:
    """Load, merge ``extends:``, apply ``--set`` overrides and validate a suite file."""
    path = Path(path)
    chain: list[tuple[Path, Any]] = []
    data = _resolve_extends(path, chain=chain)
    for assignment in overrides:
        apply_override(data, assignment, source=f"{path}: --set")
    data.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_blame(format_validation_error(err, Suite), path, chain, overrides)) from err
    problem = number_problem(data, suite.model_dump())
    if problem is not None:
        raise ConfigError(_blame(problem, path, chain, overrides))
    if suite.output is None:
        suite = suite.model_copy(update={"output": suite.output_dir})
    if check_plugins:
        try:
            validated = validate_plugins(suite, "")
        except ConfigError as err:
            raise ConfigError(_blame(str(err), path, chain, overrides)) from err
        suite._plugins = (suite.plugin_rows(), validated)  # a Plan of this suite validates nothing again
    return suite


def dump_suite(suite: Suite) -> str:
    """The resolved suite as YAML (written next to the results)."""
    data = suite.model_dump(mode="json")
    for row in [
        data["backbone"],
        *(r for kind in ("datasets", "methods", "metrics", "explainers") for r in data[kind]),
    ]:
        for key in ("datasets", "methods", "training", "backbone", "checkpoint"):  # unset filters and overrides
            if row.get(key) is None:
                row.pop(key, None)
        if isinstance(row.get("backbone"), dict):
            for key in ("datasets", "methods", "training", "backbone", "checkpoint"):
                if row["backbone"].get(key) is None:
                    row["backbone"].pop(key, None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
