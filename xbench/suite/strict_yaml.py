"""Strict, bounded YAML for suite files and ``--set`` values.

A suite is a few kilobytes of plain data, so anything far from that is refused with one line that
names the file (and the line, or the key) before it can cost memory, time or a traceback:

- more than :data:`MAX_BYTES` bytes, bytes that are not UTF-8, control characters;
- collections nested deeper than :data:`MAX_DEPTH` levels (PyYAML's composer recurses per level);
- anchors and aliases that expand to more than :data:`MAX_EXPANDED` values and characters, or refer
  to themselves ("billion laughs": nine lines that expand to 10⁹ strings);
- a key given twice in one mapping (PyYAML keeps the last);
- integers of more than :data:`MAX_DIGITS` digits, and values that are not plain data: tags such as
  ``!!python/object`` (refused by the safe loader), ``!!binary``, ``!!set``, ``!!omap``, timestamps
  and strings with lone surrogates (``"\\ud800"``), none of which a suite, a record or JSON can hold.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB; the largest suite in suites/ is under 4 KiB
MAX_DEPTH = 32  # nested collections; a suite needs 6 (methods[0].params.stages[0].blocks)
MAX_EXPANDED = 1 << 20  # values plus scalar characters after aliases are expanded: about a 1 MiB file's worth
MAX_DIGITS = 100  # Python refuses to parse more than 4300 digits; a suite needs fewer than 20

_INT_TAG = "tag:yaml.org,2002:int"


class _Refused(yaml.MarkedYAMLError):
    """A limit above: reported as the problem itself, not as a syntax error."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, deep nesting, alias bombs and huge integers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels (a suite needs about 6)", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases make it recursive, too deep or too large once expanded.

    Each node's expanded size and depth are computed once (iteratively, so a long alias chain
    cannot exhaust Python's stack), so a billion laughs costs a few hundred steps to refuse.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_EXPANDED:
                problem = f"aliases expand this value to more than {MAX_EXPANDED} values and characters"
                raise _Refused(None, None, problem, node.start_mark)
            if depth[key] > MAX_DEPTH:
                raise _Refused(None, None, f"aliases nest this value deeper than {MAX_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        if isinstance(node, yaml.ScalarNode):
            size[key], depth[key] = 1 + len(node.value), 0
            continue
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise _Refused(None, None, "an alias refers to a value that contains it", kid.start_mark)
            if id(kid) not in size:
                stack.append((kid, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" may be overridden by later keys
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable key: the standard constructor reports it
            continue
        if first is not key_node:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


def _construct_bounded_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    digits = sum(c.isalnum() for c in str(node.value))
    if digits > MAX_DIGITS:
        raise _Refused(None, None, f"an integer of {digits} digits (at most {MAX_DIGITS})", node.start_mark)
    return loader.construct_yaml_int(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
_StrictLoader.add_constructor(_INT_TAG, _construct_bounded_int)


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """``line N: YAML ...: problem`` for a PyYAML error."""
    if isinstance(err, yaml.reader.ReaderError):  # a control character such as NUL: no mark, a position
        line = text.count("\n", 0, err.position) + 1
        char = err.character if isinstance(err.character, str) else chr(err.character)
        return f"line {line}: YAML syntax error: character #x{ord(char):04x} is not allowed in YAML"
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    if isinstance(err, _Refused):
        return f"{where}{problem}"
    tag = re.match(r"could not determine a constructor for the tag '(.*)'", problem)
    if tag:  # !!python/object and friends: the safe loader builds plain data only
        return f"{where}YAML tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')!r} is not allowed in a suite"
    return f"{where}YAML syntax error: {problem}"


def parse_yaml(text: str, source: str) -> Any:
    """The data in YAML ``text``; a problem is a one-line ConfigError starting with ``source``."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: {_yaml_problem(err, text)}") from err
    except RecursionError as err:  # not expected (nesting is bounded above): still one line
        raise ConfigError(f"{source}: YAML nested too deeply") from err
    problem = plain_data_problem(data)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return data


def plain_data_problem(data: Any) -> str | None:
    """The first value in ``data`` that is not plain data (``key.path: problem``), or None.

    Plain data is what JSON holds: mappings with string (or, for pydantic's own message, number)
    keys, lists, strings, numbers, booleans and null.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        label = f"{where}: " if where else ""
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str):
                    bad = _bad_string(k)
                    if bad:
                        return f"{label}key {k[:40]!r}: {bad}"
                elif k is not None and not isinstance(k, int | float | bool):
                    return f"{label}key {_short(k)}: keys must be strings, not {_kind(k)}"
                stack.append((f"{where}.{k}" if where else str(k), v))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str):
            bad = _bad_string(value)
            if bad:
                return f"{label}{bad}"
        elif value is not None and not isinstance(value, int | float | bool):
            return f"{label}{_kind(value)} is not a suite value (got {_short(value)}); write plain YAML, quote dates"
    return None


def _bad_string(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode (a lone surrogate \\u{ord(text[err.start]):04x} at character {err.start})"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, datetime.date | datetime.datetime):
        return "a date"
    if isinstance(value, bytes):
        return "!!binary data"
    if isinstance(value, set | frozenset):
        return "a !!set"
    if isinstance(value, tuple):
        return "an !!omap or !!pairs entry"
    return f"a {type(value).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; any problem is a one-line ConfigError naming the file."""
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: no such suite file")
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES >> 20} MiB; a suite file is a few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from err
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite must be a mapping of keys, got {type(data).__name__}")
    return data
