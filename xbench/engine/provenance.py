"""What every record carries about where it came from."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import platform
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import xbench

_PACKAGES = ("torch", "torchvision", "numpy", "quantus", "captum", "fvcore", "pandas", "pydantic")


@functools.cache
def versions() -> dict[str, str]:
    """Versions of xbench, Python and the libraries that shape the numbers."""
    out = {"xbench": xbench.__version__, "python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


@functools.cache
def git_revision() -> str | None:
    """The commit of the xbench checkout (``+dirty`` if modified), or None outside git."""
    root = Path(xbench.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is taken as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from xbench.errors import ConfigError

    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} requested but CUDA is not available; use device: auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {spec!r} requested but MPS is not available; use device: auto or cpu")
    return device


def device_description(device: torch.device) -> dict[str, object]:
    """The device and what timings depend on: its model and, on CPU, the thread count."""
    if device.type == "cuda":
        return {"device": str(device), "name": torch.cuda.get_device_name(device)}
    return {
        "device": str(device),
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def code_fingerprint(*objects: object) -> str:
    """sha256 of the source that defines ``objects``: their modules, their base classes' and what those import.

    Cache keys include it, so editing a method, metric, backbone or dataset (a third-party
    plugin's too) invalidates exactly the entries that depend on it, without a version bump.
    Besides the module of each object and of each of its base classes, it covers every module
    those import from xbench or from the object's own top-level package, directly or through
    one another (:func:`imported_modules`), so a helper split off into a module of its own (the
    faithfulness kernels, Coded ResNeXt's network) counts for the code that calls it. Files are
    named by module, not path, so keys are equal across clones.
    """
    modules: dict[str, str] = {}
    for obj in objects:
        own = inspect.getmodule(obj)
        roots = frozenset({"xbench", own.__name__.partition(".")[0]} if own else {"xbench"})
        for target in inspect.getmro(obj) if inspect.isclass(obj) else (obj,):
            module = inspect.getmodule(target)
            path = getattr(module, "__file__", None)
            if module is not None and path and not path.startswith(_STDLIB):
                modules[module.__name__] = path
                modules.update(imported_modules(module.__name__, path, roots))
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode())
        digest.update(_file_hash(modules[name]).encode())
    return digest.hexdigest()


@functools.cache
def imported_modules(name: str, path: str, roots: frozenset[str]) -> dict[str, str]:
    """``{module: file}`` of the modules of the packages ``roots`` that module ``name`` (file ``path``) imports.

    Transitively, from the source: an import inside a function counts, one under
    ``if TYPE_CHECKING:`` does not (it never runs). ``from package import name`` counts the
    submodule ``package.name`` if there is one, else the package's ``__init__``; a package's
    ``__init__`` is not counted for importing one of its submodules, since the built-in packages'
    ``__init__`` files import every plugin of their kind.
    """
    found: dict[str, str] = {}
    todo = [(name, path)]
    while todo:
        module, file = todo.pop()
        for imported in _imports(module, file):
            if imported.partition(".")[0] not in roots or imported in found or imported == name:
                continue
            source = _module_file(imported)
            if source is not None:
                found[imported] = source
                todo.append((imported, source))
    return found


@functools.cache
def _imports(module: str, path: str) -> tuple[str, ...]:
    """The absolute names of the modules (or packages) that the source at ``path`` imports."""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return ()
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                names.append(sub if _module_file(sub) is not None else base)
    return tuple(dict.fromkeys(n for n in names if n))


@functools.cache
def _module_file(name: str) -> str | None:
    """The source file of module ``name`` found from its top-level package's folder, without importing it."""
    top, _, rest = name.partition(".")
    package = sys.modules.get(top)
    init = getattr(package, "__file__", None)
    if init is None:
        return None
    if not rest:
        return str(init)
    if Path(init).name != "__init__.py":
        return None
    stem = Path(init).parent.joinpath(*rest.split("."))
    for candidate in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
        if candidate.is_file():
            return str(candidate)
    return None


@functools.cache
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_STDLIB = sysconfig.get_paths()["stdlib"]
