"""Weights from files and from torchvision's and timm's model zoos, loaded safely and identified by hash.

A backbone's ``weights:`` is a name the zoo knows (torchvision's ``IMAGENET1K_V1``, timm's
``a1_in1k``) or a local file: a ``.pth``/``.pt``/``.bin`` state dict, read with
``torch.load(weights_only=True)`` (a pickle that needs more than tensors is refused, never run),
or a ``.safetensors`` file. Every problem is a one-line :class:`~xbench.errors.CheckpointError`
naming the file, so a suite with bad weights stops before any cell starts.

The sha256 of the file that was loaded enters the cache key and every record
(:func:`file_sha256`), so two runs with different weights under the same name never share results.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xbench.errors import CheckpointError

#: Suffixes read as local weight files; anything else is a zoo name.
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
#: Containers that training scripts wrap a state dict in (timm's and many others' checkpoints).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")


def is_file_reference(weights: str) -> bool:
    """Whether ``weights`` names a local file (by suffix or path separator) rather than a zoo entry."""
    return weights.lower().endswith(FILE_SUFFIXES) or "/" in weights or os.sep in weights


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so that plans may ask for it freely."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, Tensor]:
    """The tensors of a state-dict file; a one-line error naming the file for anything else.

    ``.safetensors`` is read with the safetensors library; other files with
    :func:`load_weights_only`. A state dict wrapped in one of :data:`WRAPPER_KEYS`
    (``{"state_dict": {...}, "epoch": 3}``) is unwrapped. Every value must be a dense tensor
    with data (not sparse, not on the ``meta`` device), every key a string.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {path}: empty file")
    safetensors = p.suffix.lower() == ".safetensors"
    state: Any = _read_safetensors(p, what) if safetensors else load_weights_only(p, f"{what} {path}")
    if isinstance(state, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping) and state[key] and all(isinstance(k, str) for k in state[key]):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{what} {path}: holds {type(state).__name__}, not a state dict of tensors")
    for key, value in state.items():
        problem = _not_a_weight(key, value)
        if problem is not None:
            raise CheckpointError(f"{what} {path}: entry {_short(key)} {problem}")
    return dict(state)


def _not_a_weight(key: Any, value: Any) -> str | None:
    """Why ``key: value`` cannot be a state-dict entry, or None."""
    if not isinstance(key, str):
        return f"has a {type(key).__name__} key, not a string"
    if not isinstance(value, Tensor):
        return f"is {type(value).__name__}, not a tensor"
    if value.layout != torch.strided or value.is_nested:
        return f"is a {str(value.layout).removeprefix('torch.')} tensor; weights are dense tensors"
    if value.is_meta:
        return "is a meta tensor: a shape without data"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


#: Most bytes the zip entries of a torch file may declare, as a multiple of the file's size.
#: ``torch.save`` stores entries uncompressed (declared = stored); a deflated entry that
#: declares more is what a zip bomb does, and torch would allocate all of it.
ZIP_EXPANSION_LIMIT = 1


def load_weights_only(path: Path, name: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is one :class:`CheckpointError`.

    The unpickler refuses globals beyond tensors and plain containers (code in a pickle is
    never run). Before it, a zip file (torch's format since 1.6) must declare no more bytes
    than it holds, so a tiny file cannot make torch allocate gigabytes. torch's warnings
    about odd pickle protocols are silenced: the error line is what the user sees.

    Args:
        path: the file.
        name: how messages name it (``"weights /path/x.pth"``).
    """
    _check_zip(path, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if "global" not in reason.lower():  # no code it named: a damaged file, or a pickle torch.save did not write
            raise CheckpointError(
                f"{name}: refused by torch.load(weights_only=True): {reason} (damaged, or not torch.save'd?)"
            ) from err
        raise CheckpointError(
            f"{name}: refused by torch.load(weights_only=True), it holds more than tensors "
            f"({reason}); save a plain state dict: torch.save(model.state_dict(), path)"
        ) from err
    except FileNotFoundError as err:
        raise CheckpointError(f"{name}: no such file") from err
    except Exception as err:  # a damaged file fails anywhere in torch: RuntimeError, KeyError, AssertionError, ...
        raise CheckpointError(
            f"{name}: not a readable state dict (truncated or not torch.save'd?): {_first_line(err)}"
        ) from err


def _check_zip(path: Path, name: str) -> None:
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # torch's own test for its zip format
                return
            size = os.fstat(handle.fileno()).st_size
            with zipfile.ZipFile(handle) as archive:
                declared = sum(info.file_size for info in archive.infolist())
    except OSError as err:
        raise CheckpointError(f"{name}: cannot read ({err.strerror or err})") from err
    except Exception as err:  # zipfile.BadZipFile, and struct/value errors on a damaged directory
        raise CheckpointError(f"{name}: not a readable state dict (a damaged zip archive): {_first_line(err)}") from err
    if declared > ZIP_EXPANSION_LIMIT * size:
        raise CheckpointError(
            f"{name}: its zip entries declare {declared} bytes in a file of {size} (compressed entries, which "
            "torch.save never writes; refused: torch would allocate all of it)"
        )


def _unpickling_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that names the global it met, without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line]
    if named:
        return named[0]
    for i, line in enumerate(lines):  # "... WeightsUnpickler error: " then the reason, maybe on the next line
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error", 1)[1].strip(" :")
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return (lines or [type(err).__name__])[0]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _read_safetensors(p: Path, what: str) -> dict[str, Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(f"{what} {p}: reading .safetensors needs the safetensors package") from err
    try:
        return load_file(str(p), device="cpu")
    except Exception as err:  # SafetensorError, OSError, ...: whatever a damaged file raises
        raise CheckpointError(f"{what} {p}: not a valid safetensors file: {_first_line(err)}") from err


def load_checked(module: nn.Module, state: Mapping[str, Tensor], source: str, skip: tuple[str, ...] = ()) -> None:
    """``module.load_state_dict(state)`` with every mismatch named in one line.

    Args:
        module: the model to fill.
        state: the tensors to load.
        source: what the tensors are (a file name), for the message.
        skip: key prefixes of ``module`` that are left as initialised (e.g. a replaced stem) and
            may be missing from or differ in ``state``.
    """
    own = module.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(skip)}
    missing = [k for k in own if k not in kept and not k.startswith(skip)]
    unexpected = [k for k in kept if k not in own]
    shapes = [k for k in kept if k in own and tuple(kept[k].shape) != tuple(own[k].shape)]
    dtypes = [k for k in kept if k in own and k not in shapes and not _castable(kept[k], own[k])]
    problems = []
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} tensor(s) of the wrong shape, e.g. {k}: {tuple(kept[k].shape)} where the model has "
            f"{tuple(own[k].shape)}"
        )
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if dtypes:
        k = dtypes[0]
        problems.append(f"{len(dtypes)} of the wrong dtype, e.g. {k}: {kept[k].dtype} for {own[k].dtype}")
    if problems:
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: {'; '.join(problems)}")
    try:
        module.load_state_dict({**{k: v for k, v in own.items() if k not in kept}, **kept}, strict=True)
    except RuntimeError as err:  # what the checks above do not foresee; torch names the tensor on its second line
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: {detail}") from err


def _castable(src: Tensor, dst: Tensor) -> bool:
    """A float tensor loads into a float parameter (any precision); integers into integers."""
    return src.is_floating_point() == dst.is_floating_point() and src.is_complex() == dst.is_complex()


# -- torchvision's zoo ------------------------------------------------------------------------------------
def torchvision_weights(arch: str, name: str, where: str) -> Any:
    """torchvision's weights enum entry ``name`` (``IMAGENET1K_V1``, ``DEFAULT``, ``ResNet50_Weights.X``)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    short = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    if short not in enum.__members__:
        known = ", ".join(enum.__members__)
        raise CheckpointError(f"{where}: {name!r} is not a weight of torchvision's {arch} (known: {known}) nor a file")
    return enum[short]


def hub_file(url: str) -> Path:
    """Where ``torch.hub`` keeps the download of ``url`` (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def fetch_torchvision(arch: str, name: str, where: str) -> Path:
    """The local file of torchvision's weights ``name`` for ``arch``, downloading it if needed.

    A failed download (no internet) is a one-line error naming the weights, the address and
    how to pass the file instead.
    """
    weights = torchvision_weights(arch, name, where)
    target = hub_file(weights.url)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(target), progress=False)
    except Exception as err:  # urllib raises URLError/HTTPError/OSError/timeouts: all mean "not here"
        target.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{where}: torchvision's {arch} weights {name} need a download from {weights.url}, which failed "
            f"({reason}); without internet, fetch that file elsewhere and pass it as weights: /path/"
            f"{target.name} (or put it in {target.parent}/)"
        ) from err
    return target
