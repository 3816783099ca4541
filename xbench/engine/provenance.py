"""What every record carries about where it came from."""

from __future__ import annotations

import functools
import hashlib
import inspect
import platform
import subprocess
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
    """sha256 of the source files that define ``objects`` and their base classes.

    Cache keys include it, so editing a method, metric, backbone or dataset (a
    third-party plugin's too) invalidates exactly the entries that depend on it,
    without a version bump.
    """
    files: set[str] = set()
    for obj in objects:
        targets = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
        for target in targets:
            module = inspect.getmodule(target)
            path = getattr(module, "__file__", None)
            if path and not path.startswith(_STDLIB):
                files.add(path)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.rsplit("/", 1)[-1].encode())
        digest.update(_file_hash(path).encode())
    return digest.hexdigest()


@functools.cache
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_STDLIB = sysconfig.get_paths()["stdlib"]
