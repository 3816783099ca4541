"""One generic registry for every kind of plugin: methods, metrics, datasets, backbones.

Built-in plugins register themselves with a decorator when their package is
imported; the registry imports that package on first use, so ``import xbench``
stays cheap. Third-party plugins are discovered through ``importlib.metadata``
entry points (group ``xbench.methods`` and so on) and are loaded lazily, only
when looked up or listed::

    [project.entry-points."xbench.methods"]
    my_method = "my_package.module:MyMethod"

Registering a name twice is an error, and an unknown name suggests the closest
registered ones. Each global registry holds one kind of plugin: whatever it registers
(by decorator or through an entry point) must subclass that kind's base class
(:class:`~xbench.methods.base.Method` for ``METHODS`` and so on), which it names lazily
as ``"module:attr"`` and imports only to check a registration.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from xbench.errors import DuplicateNameError, UnknownNameError, XBenchError

if TYPE_CHECKING:  # the value types only: importing them here would import torch
    from xbench.data.base import Dataset
    from xbench.explain.base import Explainer
    from xbench.methods.base import Method
    from xbench.metrics.base import Metric
    from xbench.models.base import Backbone

log = logging.getLogger(__name__)

T_co = TypeVar("T_co", covariant=True)
S = TypeVar("S")


class PluginTypeError(XBenchError):
    """A registered object is not a subclass of its registry's base class."""


class Registry(Generic[T_co]):
    """A name -> object mapping with aliases, lazy entry points and suggestions.

    ``Registry[T]`` hands out ``T``s (``METHODS.get(name)`` is a ``type[Method]``). What makes a
    registered object a ``T`` is the check against ``base`` when it is registered, not its static
    type: :meth:`register` accepts any object, and the registry is covariant, so code that handles
    every kind at once (``xbench list``) sees a ``Registry[type[Method]]`` as a ``Registry[object]``.

    Args:
        kind: Human-readable kind in messages ("method", "metric", ...).
        group: Entry-point group that third-party packages register under.
        builtins: Module that registers the built-in plugins when imported.
        base: The class every registered object must subclass, as ``"module:attr"``; it is
            imported when something is registered, not before. None: anything registers.
    """

    def __init__(self, kind: str, group: str, builtins: str | None = None, *, base: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._base = base
        self._items: dict[str, T_co] = {}
        self._lazy: dict[str, EntryPoint] = {}
        self._aliases: dict[str, str] = {}
        self._origin: dict[str, str] = {}
        self._families: dict[str, tuple[Callable[[str], Any], str]] = {}
        self._loaded = False

    # -- registration -------------------------------------------------------
    @overload
    def register(self, name: str, obj: None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[S], S]: ...
    @overload
    def register(self, name: str, obj: S, *, aliases: tuple[str, ...] = ()) -> S: ...

    def register(self, name: str, obj: object = None, *, aliases: tuple[str, ...] = ()) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        Raises :class:`PluginTypeError` if ``obj`` is not a subclass of the registry's base class.
        """

        def add(target: S) -> S:
            item = self._checked(name, target)
            for key in (name, *aliases):
                if key in self._items or key in self._lazy or key in self._aliases:
                    where = self._origin.get(self._aliases.get(key, key), "elsewhere")
                    raise DuplicateNameError(
                        f"{self.kind} {key!r} is already registered (by {where}); pick another name"
                    )
            self._items[name] = item
            self._origin[name] = getattr(target, "__module__", "?")
            _set_name(target, name)
            for alias in aliases:
                self._aliases[alias] = name
            return target

        if obj is None:
            return add
        return add(obj)

    def _checked(self, name: str, obj: object, entry_point: str | None = None) -> T_co:
        """``obj`` if it is a subclass of the registry's base class (or there is none), else raise."""
        if self._base is None:
            return cast(T_co, obj)
        module, _, attr = self._base.partition(":")
        base = getattr(importlib.import_module(module), attr)
        if isinstance(obj, type) and issubclass(obj, base):
            return cast(T_co, obj)
        source = "" if entry_point is None else f" (entry point {entry_point!r})"
        raise PluginTypeError(
            f"{self.kind} {name!r}{source}: {obj!r} is not a subclass of {base.__module__}.{base.__qualname__}"
        )

    def register_family(self, prefix: str, factory: Callable[[str], Any], description: str) -> None:
        """Names ``<prefix>:<anything>`` resolve through ``factory(anything)`` (e.g. ``timm:resnet50``).

        The factory returns the plugin class or raises :class:`UnknownNameError`; ``names()`` lists
        the family once, as ``<prefix>:<name>``, with ``description``.
        """
        if prefix in self._families:
            raise DuplicateNameError(f"{self.kind} family {prefix!r}: is already registered")
        self._families[prefix] = (factory, description)

    def family_descriptions(self) -> dict[str, str]:
        """``{"<prefix>:<name>": description}`` of every family."""
        self._ensure_loaded()
        return {f"{prefix}:<name>": desc for prefix, (_, desc) in self._families.items()}

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

    def _resolve(self, name: str) -> T_co:
        if name in self._lazy:
            ep = self._lazy[name]
            try:
                obj = ep.load()
            except Exception as err:  # a broken plugin must name itself
                del self._lazy[name]
                raise XBenchError(f"{self.kind} plugin {name!r} ({ep.value}) failed to import: {err}") from err
            item = self._checked(name, obj, ep.value)  # raises on every lookup: the entry point stays lazy
            del self._lazy[name]
            self._items[name] = item
            _set_name(obj, name)
        return self._items[name]

    # -- lookup -----------------------------------------------------------------
    def get(self, name: str) -> T_co:
        """Return the object registered as ``name`` or raise with a suggestion."""
        self._ensure_loaded()
        key = self._aliases.get(name, name)
        if key in self._items or key in self._lazy:
            return self._resolve(key)
        prefix, sep, rest = str(name).partition(":")
        if sep and prefix in self._families and rest:
            return cast(T_co, self._checked(name, self._families[prefix][0](rest)))
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

    def items(self) -> Iterator[tuple[str, T_co]]:
        """Yield ``(name, object)`` for every plugin, importing lazy ones."""
        for name in self.names():
            yield name, self._resolve(name)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        if isinstance(name, str) and name.partition(":")[0] in self._families:
            try:
                self.get(name)
            except XBenchError:
                return False
            return True
        return isinstance(name, str) and (name in self._items or name in self._lazy or name in self._aliases)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r})"


def _set_name(target: Any, name: str) -> None:
    """Give a registered class its registry name unless it declares one itself."""
    if isinstance(target, type) and "name" not in vars(target):
        target.name = name  # type: ignore[attr-defined]


# The registries. Their value types and base classes live in the packages that register
# into them: the types are imported for type checking only, the base classes when checked.
METHODS: Registry[type[Method]] = Registry(
    "method", "xbench.methods", "xbench.methods", base="xbench.methods.base:Method"
)
METRICS: Registry[type[Metric]] = Registry(
    "metric", "xbench.metrics", "xbench.metrics", base="xbench.metrics.base:Metric"
)
DATASETS: Registry[type[Dataset]] = Registry(
    "dataset", "xbench.datasets", "xbench.data", base="xbench.data.base:Dataset"
)
BACKBONES: Registry[type[Backbone]] = Registry(
    "backbone", "xbench.backbones", "xbench.models", base="xbench.models.base:Backbone"
)
EXPLAINERS: Registry[type[Explainer]] = Registry(
    "explainer", "xbench.explainers", "xbench.explain", base="xbench.explain.base:Explainer"
)
