"""One generic registry for every kind of plugin: methods, metrics, datasets, backbones.

Built-in plugins register themselves with a decorator when their package is
imported; the registry imports that package on first use, so ``import xbench``
stays cheap. Third-party plugins are discovered through ``importlib.metadata``
entry points (group ``xbench.methods`` and so on) and are loaded lazily, only
when looked up or listed::

    [project.entry-points."xbench.methods"]
    my_method = "my_package.module:MyMethod"

Registering a name twice is an error, and an unknown name suggests the closest
registered ones.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, overload

from xbench.errors import DuplicateNameError, UnknownNameError, XBenchError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with aliases, lazy entry points and suggestions.

    Args:
        kind: Human-readable kind in messages ("method", "metric", ...).
        group: Entry-point group that third-party packages register under.
        builtins: Module that registers the built-in plugins when imported.
    """

    def __init__(self, kind: str, group: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._lazy: dict[str, EntryPoint] = {}
        self._aliases: dict[str, str] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False

    # -- registration -------------------------------------------------------
    @overload
    def register(self, name: str, obj: None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> T: ...

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(target: T) -> T:
            for key in (name, *aliases):
                if key in self._items or key in self._lazy or key in self._aliases:
                    where = self._origin.get(self._aliases.get(key, key), "elsewhere")
                    raise DuplicateNameError(
                        f"{self.kind} {key!r} is already registered (by {where}); pick another name"
                    )
            self._items[name] = target
            self._origin[name] = getattr(target, "__module__", "?")
            _set_name(target, name)
            for alias in aliases:
                self._aliases[alias] = name
            return target

        if obj is None:
            return add
        return add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests use this to keep the global registries clean)."""
        self._items.pop(name, None)
        self._lazy.pop(name, None)
        self._origin.pop(name, None)
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]

    # -- discovery ------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        if self._builtins:
            importlib.import_module(self._builtins)
        # Collect first, commit after: a clash raises now and again on every later lookup,
        # instead of leaving a half-loaded registry that then answers silently.
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in self._items or ep.name in self._aliases or ep.name in found:
                where = self._origin.get(ep.name) or (found[ep.name].value if ep.name in found else "?")
                raise DuplicateNameError(
                    f"{self.kind} {ep.name!r} from entry point {ep.value!r} is already registered (by {where})"
                )
            found[ep.name] = ep
        for name, ep in found.items():
            self._lazy[name] = ep
            self._origin[name] = ep.value
        self._loaded = True

    def _resolve(self, name: str) -> T:
        if name in self._lazy:
            ep = self._lazy.pop(name)
            try:
                obj = ep.load()
            except Exception as err:  # a broken plugin must name itself
                raise XBenchError(f"{self.kind} plugin {name!r} ({ep.value}) failed to import: {err}") from err
            self._items[name] = obj
            _set_name(obj, name)
        return self._items[name]

    # -- lookup -----------------------------------------------------------------
    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise with a suggestion."""
        self._ensure_loaded()
        key = self._aliases.get(name, name)
        if key in self._items or key in self._lazy:
            return self._resolve(key)
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        """The message for an unknown ``name``, with "did you mean" where possible."""
        self._ensure_loaded()
        known = self.names(include_aliases=True)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"

    def names(self, include_aliases: bool = False) -> list[str]:
        """Sorted registered names (entry points included, not imported)."""
        self._ensure_loaded()
        names = set(self._items) | set(self._lazy)
        if include_aliases:
            names |= set(self._aliases)
        return sorted(names)

    def items(self) -> Iterator[tuple[str, T]]:
        """Yield ``(name, object)`` for every plugin, importing lazy ones."""
        for name in self.names():
            yield name, self._resolve(name)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and (name in self._items or name in self._lazy or name in self._aliases)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r})"


def _set_name(target: Any, name: str) -> None:
    """Give a registered class its registry name unless it declares one itself."""
    if isinstance(target, type) and "name" not in vars(target):
        target.name = name  # type: ignore[attr-defined]


# The registries. Their value types live in the packages that register into
# them; they are typed ``Any`` here so this module imports nothing heavy.
METHODS: Registry[Any] = Registry("method", "xbench.methods", "xbench.methods")
METRICS: Registry[Any] = Registry("metric", "xbench.metrics", "xbench.metrics")
DATASETS: Registry[Any] = Registry("dataset", "xbench.datasets", "xbench.data")
BACKBONES: Registry[Any] = Registry("backbone", "xbench.backbones", "xbench.models")
EXPLAINERS: Registry[Any] = Registry("explainer", "xbench.explainers", "xbench.explain")
