"""What every record carries about where it came from."""

from __future__ import annotations

import functools
import platform
import subprocess
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
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        from xbench.errors import ConfigError

        raise ConfigError(f"device: {spec!r} requested but CUDA is not available; use device: auto or cpu")
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
