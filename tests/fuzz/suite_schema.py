"""The suite schema as fuzz targets: every leaf of ``Suite`` and of every registered plugin's ``Params``.

Nothing here is written per field: the leaves, their valid placeholders and the hostile values
tried on them are derived from the pydantic models, so a parameter added to a plugin (or a plugin
added to a registry) is fuzzed by the next test run without a change here.

A :class:`Leaf` is a key path in a suite whose base is ``suites/smoke.yaml`` with, for plugin
fields, a row of that plugin added (a method, metric or explainer row appended under the label
``fuzzed``; a dataset row or the backbone replaced). :func:`owner_accepts` is the oracle: whether
the model that owns the leaf accepts a value on its own (pydantic alone, with the owner's other
fields valid). The CLI must then refuse what the owner refuses, with the leaf's key in the line.
"""

from __future__ import annotations

import copy
import itertools
import math
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS, Registry
from xbench.suite import PluginSpec, Suite

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text(encoding="utf-8"))
REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS, "methods": METHODS, "metrics": METRICS, "explainers": EXPLAINERS, "backbone": BACKBONES,
}  # fmt: skip
PLUGIN_KEYS = set(REGISTRIES)  # Suite fields whose rows are plugins (walked per plugin, not per PluginSpec)
Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Leaf:
    """One field of the schema, placed in a suite.

    Attributes:
        base: the suite (raw data) the field lives in, valid as it is.
        path: the field's key path in ``base``.
        owner: the pydantic model that declares the field, and ``owner_path``, where that model's data is.
        annotation: the field's type; ``field``: its FieldInfo (constraints), None for list items.
    """

    base_id: str
    path: Key
    owner: type[BaseModel]
    owner_path: Key
    name: str
    annotation: Any
    field: FieldInfo | None

    @property
    def base(self) -> dict[str, Any]:
        return BASES[self.base_id]

    def __str__(self) -> str:
        return f"{self.base_id}:{dotted(self.path)}"


BASES: dict[str, dict[str, Any]] = {"smoke": BASE}


def dotted(path: Key) -> str:
    """``("methods", 1, "params", "lam")`` -> ``methods[1].params.lam``, as messages spell keys."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def get(data: Any, path: Key) -> Any:
    for part in path:
        data = data[part]
    return data


def put(data: dict[str, Any], path: Key, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path``; plugin shorthands on the way become mappings."""
    data = copy.deepcopy(data)
    node: Any = data
    for part, after in itertools.pairwise(path):
        if isinstance(node, list) and isinstance(part, int) and part >= len(node):
            node.extend([None] * (part + 1 - len(node)))
        child = node.get(part) if isinstance(node, dict) else node[part]
        if child is None:
            child = node[part] = [] if isinstance(after, int) else {}
        elif isinstance(child, str):
            child = node[part] = {"name": child}
        node = child
    if isinstance(node, list) and isinstance(path[-1], int) and path[-1] >= len(node):
        node.extend([None] * (path[-1] + 1 - len(node)))
    node[path[-1]] = value
    return data


# -- types -----------------------------------------------------------------------------------------
def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X."""
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def members(annotation: Any) -> list[Any]:
    """The members of a union (``X | None`` -> [X, None]), else [annotation]; Annotated kept on members."""
    inner = _strip(annotation)
    if get_origin(inner) in (Union, types.UnionType):
        return [m for a in get_args(inner) for m in members(a)]
    return [annotation]


def constraints(annotation: Any, field: FieldInfo | None) -> dict[str, Any]:
    """ge/gt/le/lt/min_length/max_length of a field or an ``Annotated`` member."""
    metadata = list(field.metadata) if field is not None else []
    while get_origin(annotation) is typing.Annotated:
        for extra in get_args(annotation)[1:]:
            metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        annotation = get_args(annotation)[0]
    names = ("ge", "gt", "le", "lt", "min_length", "max_length")
    return {n: getattr(m, n) for m in metadata for n in names if getattr(m, n, None) is not None}


def is_model(annotation: Any) -> bool:
    inner = _strip(annotation)
    return isinstance(inner, type) and issubclass(inner, BaseModel)


def list_item(annotation: Any) -> Any | None:
    inner = _strip(annotation)
    return get_args(inner)[0] if get_origin(inner) is list and get_args(inner) else None


def placeholder(annotation: Any, field: FieldInfo | None = None) -> Any:
    """A valid value of ``annotation`` within its constraints (for required fields of a base row)."""
    options = [m for m in members(annotation) if m is not type(None)]
    first = options[0] if options else None
    bounds = constraints(first, field) if field is None or len(options) > 1 else constraints(annotation, field)
    inner = _strip(first)
    if get_origin(inner) is Literal:
        return get_args(inner)[0]
    if inner is bool:
        return True
    if inner in (int, float):
        low = bounds.get("ge", bounds.get("gt", 0) + 1)
        return inner(low)
    if inner is str:
        return "x" * max(1, bounds.get("min_length", 1))
    if inner is Path:
        return "some/path"
    if is_model(inner):
        return model_placeholder(inner)
    if list_item(inner) is not None:
        return [placeholder(list_item(inner))] * max(1, bounds.get("min_length", 1))
    if get_origin(inner) is dict:
        return {}
    return None


def model_placeholder(model: type[BaseModel]) -> dict[str, Any]:
    """The required fields of ``model`` with valid placeholders (the rest at their defaults)."""
    return {n: placeholder(f.annotation, f) for n, f in model.model_fields.items() if f.is_required()}


# -- the leaves ------------------------------------------------------------------------------------
def _walk(base_id: str, model: type[BaseModel], path: Key, skip: frozenset[str] = frozenset()) -> list[Leaf]:
    """The leaves of ``model`` at ``path`` in base ``base_id``, and those of the models it holds."""
    leaves: list[Leaf] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        here = (*path, name)
        leaves.append(Leaf(base_id, here, model, path, name, field.annotation, field))
        for member in members(field.annotation):
            sub = _strip(member)
            if is_model(member) and sub is not model:  # PluginSpec.backbone is a PluginSpec: one level
                _ensure(base_id, here, lambda sub=sub: model_placeholder(sub))
                leaves += _walk(base_id, sub, here)
            item = list_item(member)
            if item is not None:
                leaves.append(Leaf(base_id, (*here, 0), model, path, name, item, None))
                for sub_member in members(item):
                    if is_model(sub_member):
                        sub = _strip(sub_member)
                        _ensure(base_id, here, lambda sub=sub: [model_placeholder(sub)], replace_list=True)
                        leaves += _walk(base_id, sub, (*here, 0))
    return leaves


def _ensure(base_id: str, path: Key, make: Any, replace_list: bool = False) -> None:
    """Give the base suite a valid value at ``path`` for sub-fields to be mutated under."""
    base = BASES[base_id]
    try:
        current = get(base, path)
    except (KeyError, IndexError, TypeError):
        current = None
    if current is None or (
        replace_list and not (isinstance(current, list) and current and isinstance(current[0], dict))
    ):
        BASES[base_id] = put(base, path, make())


def plugin_row(kind: str, name: str) -> tuple[str, Key]:
    """A base suite with a row of plugin ``name`` (kind: a Suite plugin key) and the row's path."""
    base_id = f"{kind}:{name}"
    if base_id in BASES:
        return base_id, (kind,) if kind == "backbone" else (kind, _row_index(kind))
    params = model_placeholder(REGISTRIES[kind].get(name).Params)
    row: dict[str, Any] = {"name": name, "params": params}
    if kind == "backbone":
        BASES[base_id], path = put(BASE, ("backbone",), row), ("backbone",)
    elif kind == "datasets":
        BASES[base_id], path = put(BASE, ("datasets",), [row]), ("datasets", 0)
    else:
        BASES[base_id] = put(BASE, (kind,), [*BASE[kind], {**row, "label": "fuzzed"}])
        path = (kind, len(BASE[kind]))
    return base_id, path


def _row_index(kind: str) -> int:
    return 0 if kind == "datasets" else len(BASE[kind])


@cache
def all_leaves() -> tuple[Leaf, ...]:
    """Every leaf of the suite schema and of every registered plugin's Params."""
    leaves = _walk("smoke", Suite, (), skip=frozenset(PLUGIN_KEYS))
    leaves += _walk("smoke", PluginSpec, ("methods", 1))  # a row's own keys: label, filters, training, ...
    for kind, registry in sorted(REGISTRIES.items()):
        seen: set[type[BaseModel]] = set()  # the zoo's 20 backbones share one Params: fuzz it once
        for name in registry.names():
            params = registry.get(name).Params
            if params in seen:
                continue
            seen.add(params)
            base_id, row = plugin_row(kind, name)
            leaves += _walk(base_id, params, (*row, "params"))
    return tuple(leaves)


@cache
def sections() -> tuple[tuple[str, Key, frozenset[str]], ...]:
    """Every mapping of the schema (base, path, its valid keys), for unknown-key cases."""
    out = {(leaf.base_id, leaf.owner_path, frozenset(leaf.owner.model_fields)) for leaf in all_leaves()}
    for kind, registry in REGISTRIES.items():  # plugins without params (NoParams) have no leaves
        for name in registry.names():
            base_id, row = plugin_row(kind, name)
            out.add((base_id, (*row, "params"), frozenset(registry.get(name).Params.model_fields)))
    return tuple(sorted(out, key=str))


def owner_error(leaf: Leaf, value: Any) -> ValidationError | None:
    """What the model that declares ``leaf`` says to ``value`` there (its other fields as in the base)."""
    data = get(leaf.base, leaf.owner_path) if leaf.owner_path else leaf.base
    data = {"name": data} if isinstance(data, str) else copy.deepcopy(data)
    if leaf.owner is Suite:
        data.setdefault("name", "suite")  # as load_suite names a suite after its file
    data = put(data, leaf.path[len(leaf.owner_path) :], value)
    try:
        leaf.owner.model_validate(data)
    except ValidationError as err:
        return err
    return None


def is_number_field(leaf: Leaf) -> bool:
    """Whether the leaf holds a number (int or float; bool is not one)."""
    return any(_strip(m) in (int, float) for m in members(leaf.annotation))


# -- hostile values ---------------------------------------------------------------------------------
HUGE_INTS = [2**31, 2**32, 2**53 + 1, 2**63, 2**64, 10**12, 10**30, 10**99]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 1e12, 0.5, 1.5]
STRINGS = ["", " ", "\t", "\n", "\0", "a\0b", "nan", "inf", "-Infinity", "1e400", "0x10", "yes", "~", "null",
           "../..", "/", "C:\\x", "ü" * 3, "\u202e", "😀", "x" * 300, "y" * 100_000]  # fmt: skip
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
small = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)


def _near_bounds(bounds: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name in ("ge", "gt", "le", "lt"):
        if name in bounds:
            b = bounds[name]
            out += [b, b - 1, b + 1] if isinstance(b, int) else [b, b - 1e-9, b + 1e-9, math.nextafter(b, math.inf)]
            out += [b * 10, b * 1000, -b] if b else []
    return out


def hostile_values(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values to try on ``leaf``: its type's boundaries and huge values, other types, non-finite numbers,
    empty and very long strings and lists, nested junk."""
    bounds: dict[str, Any] = {}
    for member in members(leaf.annotation):
        bounds.update(constraints(member, leaf.field if len(members(leaf.annotation)) == 1 else None))
    if leaf.field is not None:
        bounds.update(constraints(leaf.annotation, leaf.field))
    typed: list[Any] = _near_bounds(bounds)
    for member in members(leaf.annotation):
        inner = _strip(member)
        if get_origin(inner) is Literal:
            typed += [str(v) + "x" for v in get_args(inner)] + [str(v).upper() for v in get_args(inner)]
        if list_item(inner) is not None:
            item = placeholder(list_item(inner))
            n = bounds.get("max_length", 10)
            typed += [[], [item] * (n + 1) if n < 10**5 else [item] * 10**4, [[item]], [item, None]]
    pools = [
        st.sampled_from(typed) if typed else st.nothing(),
        st.sampled_from(HUGE_INTS + [-v for v in HUGE_INTS]),
        st.sampled_from(SPECIAL_FLOATS),
        st.sampled_from(STRINGS),
        st.integers(-(10**15), 10**15),
        st.floats(),
        small,
    ]
    return st.one_of(*pools)
