"""The code fingerprint of cache keys: it follows imports into split-off modules, and only there."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xbench.engine import provenance
from xbench.engine.provenance import code_fingerprint, imported_modules
from xbench.registry import METHODS, METRICS


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Forget every file read, before and after (the caches assume files do not change in a run)."""
    caches = (provenance._file_hash, provenance._imports, provenance._module_file, imported_modules)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def edited(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Pretend the file whose path ends with ``suffix`` was edited."""
    real = provenance._file_hash

    def file_hash(path: str) -> str:
        return "edited" if path.replace("\\", "/").endswith(suffix) else real(path)

    monkeypatch.setattr(provenance, "_file_hash", file_hash)


@pytest.mark.parametrize(
    ("suffix", "changed", "unchanged"),
    [
        # The Quantus-backed metrics' torch kernels live in a module of their own ...
        ("xbench/metrics/faithfulness/kernels/quantus_torch.py", "pixel_flipping", "top1"),
        # ... and so does ROAD's.
        ("xbench/metrics/faithfulness/kernels/road.py", "road", "pixel_flipping"),
    ],
)
def test_editing_a_split_off_metric_module_changes_the_fingerprint(
    monkeypatch: pytest.MonkeyPatch, suffix: str, changed: str, unchanged: str
) -> None:
    before = {name: code_fingerprint(METRICS.get(name)) for name in (changed, unchanged)}
    edited(monkeypatch, suffix)
    assert code_fingerprint(METRICS.get(changed)) != before[changed]
    assert code_fingerprint(METRICS.get(unchanged)) == before[unchanged]


def test_editing_coded_resnexts_network_retrains_coded_resnext_only(monkeypatch: pytest.MonkeyPatch) -> None:
    coded, baseline = METHODS.get("coded_resnext"), METHODS.get("baseline")
    before = code_fingerprint(coded), code_fingerprint(baseline)
    edited(monkeypatch, "xbench/methods/coded_resnext_network.py")
    assert code_fingerprint(coded) != before[0] and code_fingerprint(baseline) == before[1]
    edited(monkeypatch, "xbench/methods/base.py")  # the contract every method shares
    assert code_fingerprint(baseline) != before[1]


def write_plugin(root: Path) -> None:
    """A plugin package: a method, the helpers it imports, and modules it does not run."""
    package = root / "xbench_fingerprint_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from xbench.methods.baseline import Baseline\n"
        "from .helpers import smooth\n"
        "if TYPE_CHECKING:\n    from . import typing_only\n\n"
        "class Plugin(Baseline):\n"
        "    def build(self):\n"
        "        from xbench_fingerprint_plugin import lazy  # an import inside a function counts\n"
        "        return super().build()\n"
    )
    (package / "helpers.py").write_text("from . import deep\n\ndef smooth(x):\n    return x\n")
    for name in ("deep", "lazy", "typing_only", "unused"):
        (package / f"{name}.py").write_text("VALUE = 1\n")


def forget_plugin() -> None:
    for name in [m for m in sys.modules if m.startswith("xbench_fingerprint_plugin")]:
        del sys.modules[name]
    for cache in (provenance._imports, provenance._module_file, imported_modules):
        cache.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_caches: None) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    write_plugin(tmp_path)
    yield tmp_path / "xbench_fingerprint_plugin"
    forget_plugin()


def test_a_plugin_package_is_followed_through_its_own_imports(plugin: Path) -> None:
    import xbench_fingerprint_plugin

    cls = xbench_fingerprint_plugin.Plugin
    names = set(imported_modules(cls.__module__, str(plugin / "__init__.py"), frozenset({"xbench", plugin.name})))
    ours = {n for n in names if n.startswith(plugin.name)}
    assert ours == {f"{plugin.name}.{m}" for m in ("helpers", "deep", "lazy")}  # not typing_only, not unused
    assert {"xbench.methods.baseline", "xbench.methods.base"} <= names
    assert not any(n.startswith(("torch", "pydantic")) for n in names)

    before = code_fingerprint(cls)
    for name, changes in (("unused", False), ("typing_only", False), ("deep", True), ("lazy", True)):
        (plugin / f"{name}.py").write_text("VALUE = 2\n")
        provenance._file_hash.cache_clear()
        assert (code_fingerprint(cls) != before) is changes, name
        before = code_fingerprint(cls)


def test_keys_are_equal_across_clones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_caches: None) -> None:
    """The same plugin in two folders has one fingerprint: files count by module name, not path."""
    prints = []
    for clone in (tmp_path / "one", tmp_path / "two"):
        write_plugin(clone)
        with monkeypatch.context() as patch:
            patch.syspath_prepend(str(clone))
            import xbench_fingerprint_plugin

            assert Path(xbench_fingerprint_plugin.__file__).is_relative_to(clone)
            prints.append(code_fingerprint(xbench_fingerprint_plugin.Plugin))
        forget_plugin()
    assert prints[0] == prints[1]
