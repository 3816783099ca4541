"""The generic Registry (on fresh instances) and the built-ins of the four global registries."""

from __future__ import annotations

import subprocess
import sys
import typing
from importlib.metadata import EntryPoint

import pytest

import xbench.registry as registry_module
from xbench.errors import DuplicateNameError, UnknownNameError, XBenchError
from xbench.methods.base import Method
from xbench.methods.baseline import Baseline
from xbench.params import NoParams
from xbench.registry import BACKBONES, DATASETS, EXPLAINERS, METHODS, METRICS, PluginTypeError, Registry

GROUP = "xbench.test_plugins"


class Thing:
    pass


class Other:
    pass


@pytest.fixture
def no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep installed plugins out of the fresh registries."""
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [])


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> list[str]:
    """Make ``entry_points(group=...)`` return ``eps`` for their group; returns the groups asked for."""
    asked: list[str] = []

    def entry_points(group: str) -> list[EntryPoint]:
        asked.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(registry_module, "entry_points", entry_points)
    return asked


# -- registration and lookup -----------------------------------------------------------
def test_register_get_and_decorator(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    assert reg.register("thing", Thing) is Thing

    @reg.register("other", aliases=("alt",))
    class Decorated(Other):
        pass

    assert reg.get("thing") is Thing
    assert reg.get("other") is Decorated
    assert reg.get("alt") is Decorated
    assert "alt" in reg and "other" in reg and "missing" not in reg and 3 not in reg


def test_duplicate_name_raises(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    reg.register("thing", Thing)
    with pytest.raises(DuplicateNameError, match="'thing' is already registered"):
        reg.register("thing", Other)
    assert reg.get("thing") is Thing  # the failed registration changed nothing


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"name": "a", "aliases": ("b",)}, {"name": "b"}),  # new name collides with an alias
        ({"name": "a"}, {"name": "c", "aliases": ("a",)}),  # new alias collides with a name
        ({"name": "a", "aliases": ("b",)}, {"name": "c", "aliases": ("b",)}),  # alias vs alias
    ],
)
def test_duplicate_via_alias_raises(no_entry_points: None, first: dict, second: dict) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    reg.register(first["name"], Thing, aliases=first.get("aliases", ()))
    before = reg.names(include_aliases=True)
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.register(second["name"], Other, aliases=second.get("aliases", ()))
    assert reg.names(include_aliases=True) == before  # nothing of the rejected registration leaked in
    assert all(reg.get(n) is Thing for n in before)


def test_unknown_name_suggests_closest(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    reg.register("baseline", Thing)
    reg.register("prototype_net", Other)
    with pytest.raises(UnknownNameError) as info:
        reg.get("baselin")
    message = str(info.value)
    assert "did you mean 'baseline'" in message
    assert "unknown method 'baselin'" in message
    assert "\n" not in message
    # UnknownNameError is a KeyError, but its str() is not quoted like a KeyError's.
    assert isinstance(info.value, KeyError)
    assert not message.startswith(("'", '"'))


def test_unknown_name_without_close_match_has_no_suggestion(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("metric", GROUP)
    reg.register("baseline", Thing)
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzqqxxvv")
    assert "did you mean" not in str(info.value)
    assert "unknown metric 'zzqqxxvv'" in str(info.value)
    assert "known: baseline" in str(info.value)


def test_names_sorted_aliases_optional(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    for name in ("zeta", "alpha", "mid"):
        reg.register(name, type(name, (), {}), aliases=(f"{name}_alias",) if name == "zeta" else ())
    assert reg.names() == ["alpha", "mid", "zeta"]
    assert reg.names(include_aliases=True) == ["alpha", "mid", "zeta", "zeta_alias"]
    assert [name for name, _ in reg.items()] == ["alpha", "mid", "zeta"]


def test_unregister_removes_name_and_aliases(no_entry_points: None) -> None:
    reg: Registry[type] = Registry("method", GROUP)
    reg.register("thing", Thing, aliases=("t",))
    reg.unregister("thing")
    assert "thing" not in reg and "t" not in reg
    reg.register("t", Other)  # both names are free again
    assert reg.get("t") is Other


# -- entry points --------------------------------------------------------------------------
def test_entry_point_is_loaded_lazily(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    module = "xbench_fake_plugin_lazy"
    (tmp_path / f"{module}.py").write_text("class Plugin:\n    '''A plugin.'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    asked = fake_entry_points(monkeypatch, EntryPoint(name="fancy", value=f"{module}:Plugin", group=GROUP))
    reg: Registry[type] = Registry("method", GROUP)

    assert reg.names() == ["fancy"]
    assert "fancy" in reg
    assert asked == [GROUP]
    assert module not in sys.modules, "listing names must not import the plugin"

    plugin = reg.get("fancy")
    assert module in sys.modules
    assert plugin is sys.modules[module].Plugin
    assert reg.get("fancy") is plugin  # resolved once, then cached
    monkeypatch.delitem(sys.modules, module)


def test_entry_point_discovered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_entry_points(monkeypatch)
    reg: Registry[type] = Registry("method", GROUP)
    reg.names()
    reg.names()
    assert "x" not in reg
    assert asked == [GROUP]


def test_broken_plugin_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, EntryPoint(name="broken", value="xbench_no_such_module_anywhere:Thing", group=GROUP))
    reg: Registry[type] = Registry("method", GROUP)
    assert reg.names() == ["broken"]  # listing still works: the plugin is not imported
    with pytest.raises(XBenchError) as info:
        reg.get("broken")
    message = str(info.value)
    assert "'broken'" in message
    assert "xbench_no_such_module_anywhere:Thing" in message
    assert "failed to import" in message
    assert "\n" not in message


def test_entry_point_colliding_with_builtin_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, EntryPoint(name="baseline", value="somewhere.else:Baseline", group=GROUP))
    reg: Registry[type] = Registry("method", GROUP)
    reg.register("baseline", Thing)
    with pytest.raises(DuplicateNameError) as info:
        reg.get("baseline")
    assert "'baseline'" in str(info.value)
    assert "somewhere.else:Baseline" in str(info.value)


def test_entry_point_collision_keeps_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A collision must not be reported once and then silently ignored on the next lookup."""
    fake_entry_points(monkeypatch, EntryPoint(name="baseline", value="somewhere.else:Baseline", group=GROUP))
    reg: Registry[type] = Registry("method", GROUP)
    reg.register("baseline", Thing)
    with pytest.raises(DuplicateNameError):
        reg.names()
    with pytest.raises(DuplicateNameError):
        reg.names()


def test_entry_points_of_other_groups_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, EntryPoint(name="elsewhere", value="m:a", group="xbench.metrics_other"))
    reg: Registry[type] = Registry("method", GROUP)
    assert reg.names() == []


# -- the global registries -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("registry", "builtins"),
    [
        (METHODS, {"baseline"}),
        (METRICS, {"top1", "top5", "params", "flops"}),
        (BACKBONES, {"resnet_cifar"}),
        (DATASETS, {"synthetic_shapes", "fashion_mnist", "cifar10", "cifar100"}),
    ],
    ids=["methods", "metrics", "backbones", "datasets"],
)
def test_global_registries_list_builtins(registry: Registry, builtins: set[str]) -> None:
    names = registry.names()
    assert builtins <= set(names)
    assert names == sorted(names)
    for name in builtins:
        assert registry.get(name) is not None


def test_global_registries_use_their_groups() -> None:
    assert [r.group for r in (METHODS, METRICS, DATASETS, BACKBONES)] == [
        "xbench.methods",
        "xbench.metrics",
        "xbench.datasets",
        "xbench.backbones",
    ]


# -- base classes ----------------------------------------------------------------------------
BASE = "xbench.methods.base:Method"


def test_decorator_refuses_a_non_subclass(no_entry_points: None) -> None:
    reg: Registry[type[Method]] = Registry("method", GROUP, base=BASE)
    with pytest.raises(PluginTypeError) as info:

        @reg.register("foo", aliases=("f",))
        class NotAMethod:
            pass

    message = str(info.value)
    assert message.startswith("method 'foo': <class ")
    assert "NotAMethod'> is not a subclass of xbench.methods.base.Method" in message
    assert isinstance(info.value, XBenchError)
    assert "foo" not in reg and "f" not in reg  # nothing of the refused registration stays


@pytest.mark.parametrize(
    "obj",
    [Thing(), lambda params, ctx: None, Method[NoParams], "xbench.methods.baseline:Baseline"],
    ids=["instance", "function", "generic-alias", "string"],
)
def test_register_refuses_what_is_not_a_class(no_entry_points: None, obj: object) -> None:
    reg: Registry[type[Method]] = Registry("method", GROUP, base=BASE)
    with pytest.raises(PluginTypeError, match=r"^method 'foo': .* is not a subclass of xbench\.methods\.base\.Method$"):
        reg.register("foo", obj)
    assert reg.names() == []


def test_a_subclass_registers(no_entry_points: None) -> None:
    reg: Registry[type[Method]] = Registry("method", GROUP, base=BASE)

    @reg.register("mine")
    class Mine(Method[NoParams]):
        pass

    class Deeper(Baseline[NoParams]):
        pass

    assert reg.register("deeper", Deeper) is Deeper
    assert reg.get("mine") is Mine and Mine.name == "mine"
    assert reg.get("deeper") is Deeper and Deeper.name == "deeper"


def test_entry_point_of_a_non_subclass_names_itself(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    module = "xbench_fake_plugin_types"
    (tmp_path / f"{module}.py").write_text(
        "from xbench.methods.baseline import Baseline\n\n"
        "class Plugin:\n    '''Not a method.'''\n\n"
        "class Good(Baseline):\n    '''A method.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    fake_entry_points(
        monkeypatch,
        EntryPoint(name="bad", value=f"{module}:Plugin", group=GROUP),
        EntryPoint(name="good", value=f"{module}:Good", group=GROUP),
    )
    reg: Registry[type[Method]] = Registry("method", GROUP, base=BASE)
    assert reg.names() == ["bad", "good"]  # listing imports nothing, so it checks nothing
    for _ in range(2):  # refused on every lookup, not once and then forgotten
        with pytest.raises(PluginTypeError) as info:
            reg.get("bad")
        message = str(info.value)
        assert message.startswith(f"method 'bad' (entry point '{module}:Plugin'): <class '{module}.Plugin'>")
        assert message.endswith("is not a subclass of xbench.methods.base.Method")
    assert "bad" in reg
    good = reg.get("good")
    assert good is sys.modules[module].Good and good.name == "good"
    with pytest.raises(PluginTypeError):
        dict(reg.items())
    monkeypatch.delitem(sys.modules, module)


def test_metric_plugins_are_checked_when_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A plugin metric with ``higher_is_better = True`` still loads; an unknown category names the plugin."""
    module = "xbench_fake_metric_plugins"
    header = "from xbench.metrics.base import Metric\nfrom xbench.params import NoParams\n\n"
    (tmp_path / f"{module}.py").write_text(
        header + "class Older(Metric[NoParams]):\n    category = 'accuracy'\n    higher_is_better = True\n"
    )
    (tmp_path / f"{module}_bad.py").write_text(
        header + "class Robust(Metric[NoParams]):\n    category = 'robustness'\n    higher_is_better = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (module, f"{module}_bad"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    fake_entry_points(
        monkeypatch,
        EntryPoint(name="older", value=f"{module}:Older", group=GROUP),
        EntryPoint(name="robust", value=f"{module}_bad:Robust", group=GROUP),
    )
    reg: Registry[type] = Registry("metric", GROUP, base="xbench.metrics.base:Metric")
    older = reg.get("older")
    assert (older.category, older.direction.value, older.higher_is_better) == ("accuracy", "higher", True)
    with pytest.raises(XBenchError) as info:
        reg.get("robust")
    assert str(info.value) == (
        f"metric plugin 'robust' ({module}_bad:Robust) failed to import: metric class {module}_bad.Robust: "
        "'robustness' is not a category (valid: 'accuracy', 'efficiency', 'localization', 'faithfulness', "
        "'consistency', 'sanity')"
    )
    monkeypatch.delitem(sys.modules, module)


GLOBAL_BASES = [
    (METHODS, "method", "xbench.methods.base.Method"),
    (METRICS, "metric", "xbench.metrics.base.Metric"),
    (DATASETS, "dataset", "xbench.data.base.Dataset"),
    (BACKBONES, "backbone", "xbench.models.base.Backbone"),
    (EXPLAINERS, "explainer", "xbench.explain.base.Explainer"),
]
GLOBAL_IDS = ["methods", "metrics", "datasets", "backbones", "explainers"]


@pytest.mark.parametrize(("registry", "kind", "base"), GLOBAL_BASES, ids=GLOBAL_IDS)
def test_global_registries_refuse_other_kinds(registry: Registry, kind: str, base: str) -> None:
    before = registry.names(include_aliases=True)
    name = f"not_a_{kind}_for_test"
    with pytest.raises(PluginTypeError, match=rf"^{kind} '{name}': <class .*Thing'> is not a subclass of {base}$"):
        registry.register(name, Thing)
    assert registry.names(include_aliases=True) == before


@pytest.mark.parametrize(("registry", "kind", "base"), GLOBAL_BASES, ids=GLOBAL_IDS)
def test_global_registries_hold_subclasses_of_their_base(registry: Registry, kind: str, base: str) -> None:
    module, _, name = base.rpartition(".")
    cls = getattr(sys.modules[module], name)
    items = dict(registry.items())
    assert items
    assert all(isinstance(obj, type) and issubclass(obj, cls) for obj in items.values())


def declared_params(cls: type) -> type | None:
    """The ``P`` that ``cls`` or its nearest base passes to a generic plugin base (``Road(_Faithfulness[RoadParams])``).

    None when that base is passed a type variable: the class is generic itself (``Baseline``).
    """
    for klass in cls.__mro__:
        for base in vars(klass).get("__orig_bases__", ()):
            args = typing.get_args(base)
            if args:
                return args[0] if isinstance(args[0], type) else None
    return None


@pytest.mark.parametrize(
    "registry", [METHODS, METRICS, DATASETS, EXPLAINERS], ids=["methods", "metrics", "datasets", "explainers"]
)
def test_declared_params_type_is_the_runtime_params(registry: Registry) -> None:
    """``self.params`` is typed by the class's generic argument and is an instance of ``Params``: they must agree."""
    for name, cls in registry.items():
        declared = declared_params(cls)
        if declared is not None:
            assert issubclass(cls.Params, declared), (
                f"{name}: Params is {cls.Params}, but the class declares {declared}"
            )


def test_declared_params_finds_the_nearest_argument() -> None:
    assert declared_params(METRICS.get("road")).__name__ == "RoadParams"
    assert declared_params(METRICS.get("average_drop")).__name__ == "AdIcParams"  # through _AdIc
    assert declared_params(METRICS.get("top1")) is NoParams
    assert declared_params(METHODS.get("baseline")) is None


def test_importing_the_registry_imports_no_plugin_code() -> None:
    code = (
        "import sys, xbench.registry; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('xbench')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['xbench', 'xbench.errors', 'xbench.registry']"


def test_every_method_claim_names_registered_metrics_and_its_own_method() -> None:
    """Claims are data a report checks against records: their names must be real ones."""
    from xbench.registry import METHODS, METRICS

    ids = []
    for name, cls in METHODS.items():
        for claim in cls.claims:
            for c in (claim, *claim.also):
                ids.append(c.id)
                assert c.metric in METRICS and (c.reference_metric is None or c.reference_metric in METRICS), c.id
                assert c.subject.method == name and c.id.startswith(f"{name}."), c.id
                for rows in (c.subject, c.reference):
                    if rows is not None:
                        known = METHODS.get(rows.method).Params.model_fields
                        assert set(rows.params) <= set(known), (c.id, rows.params)
    assert len(ids) == len(set(ids)) and len(ids) >= 10
