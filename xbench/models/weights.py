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
    ``torch.load(weights_only=True, map_location="cpu")``. A state dict wrapped in one of
    :data:`WRAPPER_KEYS` (``{"state_dict": {...}, "epoch": 3}``) is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {path}: empty file")
    state: Any
    if p.suffix.lower() == ".safetensors":
        state = _read_safetensors(p, what)
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{what} {path}: refused by torch.load(weights_only=True), it holds more than tensors "
                f"({_unpickling_reason(err)}); save a plain state dict: torch.save(model.state_dict(), path)"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, IndexError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{what} {path}: not a readable state dict (truncated or not torch.save'd?): {first}"
            ) from err
    if isinstance(state, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping) and state[key] and all(isinstance(k, str) for k in state[key]):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{what} {path}: holds {type(state).__name__}, not a state dict of tensors")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{what} {path}: entry {bad!r} is {type(state[bad]).__name__}, not a tensor")
    return dict(state)


def _unpickling_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that names the global it met, without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line]
    return (named or lines or [type(err).__name__])[0]


def _read_safetensors(p: Path, what: str) -> dict[str, Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(f"{what} {p}: reading .safetensors needs the safetensors package") from err
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{what} {p}: not a valid safetensors file: {first}") from err


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
    module.load_state_dict({**{k: v for k, v in own.items() if k not in kept}, **kept}, strict=True)


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
