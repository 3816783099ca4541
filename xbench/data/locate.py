"""Where xbench finds dataset files: one rule for every loader.

A dataset's files are searched in this order, and the first directory that
holds a complete set wins:

1. the ``data_dir`` argument (CLI ``--data-dir``, suite ``data.dir``);
2. ``$XBENCH_DATA``;
3. standard locations: ``~/.cache/xbench/data``, then per-dataset system
   locations such as ``/usr/share/datasets/fashion-mnist`` (installed by
   Debian's ``dataset-fashion-mnist``);
4. when ``download=True``, a torchvision download into the first writable of
   ``data_dir``, ``$XBENCH_DATA`` and ``~/.cache/xbench/data``.

Each root is tried with every layout the dataset accepts (for example
``<root>``, ``<root>/fashion-mnist`` and torchvision's ``<root>/FashionMNIST/raw``).
When nothing is found, :class:`~xbench.errors.DataNotFoundError` says on one
line where it looked and how to get the data. No download is attempted with
``download=False``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from xbench.errors import DataNotFoundError

log = logging.getLogger(__name__)

ENV_VAR = "XBENCH_DATA"


def default_cache() -> Path:
    """The per-user data folder, ``~/.cache/xbench/data``."""
    return Path.home() / ".cache" / "xbench" / "data"


def _env_root() -> Path | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def user_roots(data_dir: Path | str | None) -> list[Path]:
    """The roots a user controls, in precedence order: ``data_dir``, ``$XBENCH_DATA``, the cache."""
    roots = [Path(data_dir).expanduser() if data_dir is not None else None, _env_root(), default_cache()]
    return _dedupe(r for r in roots if r is not None)


def candidate_roots(data_dir: Path | str | None, extra: Iterable[Path | str] = ()) -> list[Path]:
    """All roots to search, in precedence order; ``extra`` holds per-dataset system locations.

    Args:
        data_dir: the user's data folder (``--data-dir``), or None.
        extra: system locations tried after the user's roots.
    """
    return _dedupe([*user_roots(data_dir), *(Path(p) for p in extra)])


def expand(roots: Iterable[Path], layouts: Sequence[str]) -> list[Path]:
    """Every ``root / layout``, roots first; ``""`` in ``layouts`` stands for the root itself."""
    return _dedupe(root / layout if layout else root for root in roots for layout in layouts)


def find_first(candidates: Iterable[Path], predicate: Callable[[Path], bool]) -> Path | None:
    """The first candidate for which ``predicate`` holds, or None."""
    for path in candidates:
        if predicate(path):
            return path
    return None


def download_root(data_dir: Path | str | None) -> Path | None:
    """The first user root that exists or can be created and is writable, or None."""
    for root in user_roots(data_dir):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK | os.X_OK):
            return root
    return None


def locate_dataset(
    dataset: str,
    data_dir: Path | str | None,
    *,
    layouts: Sequence[str],
    predicate: Callable[[Path], bool],
    download: bool,
    fetch: Callable[[Path], None] | None = None,
    system: Sequence[Path | str] = (),
    how_to: str = "",
) -> Path:
    """Find the folder holding ``dataset``'s files, downloading it if allowed.

    Args:
        dataset: name used in messages.
        data_dir: the user's data folder, or None.
        layouts: sub-folders tried under each root (``""`` is the root itself).
        predicate: whether a folder holds the needed files.
        download: whether ``fetch`` may be called.
        fetch: downloads the data under the given root (normally through torchvision).
        system: per-dataset system locations, searched after the user's roots.
        how_to: how to get the data; ``{dir}`` is replaced by the suggested folder.

    Returns:
        The first folder, in the documented order, for which ``predicate`` holds.

    Raises:
        DataNotFoundError: nothing found and no download made the files appear.
    """
    roots = candidate_roots(data_dir, system)
    found = find_first(expand(roots, layouts), predicate)
    if found is not None:
        return found

    if not download or fetch is None:
        outcome = "downloads are disabled" if fetch is not None else "it cannot be downloaded"
    else:
        target = download_root(data_dir)
        if target is None:
            outcome = "no writable folder to download into"
        else:
            log.info("downloading %s into %s", dataset, target)
            try:
                fetch(target)
            # Offline, torchvision raises URLError (an OSError) or RuntimeError after its mirrors fail;
            # ImportError covers a missing torchvision.
            except (OSError, RuntimeError, ImportError) as err:
                outcome = f"download into {target} failed ({' '.join(str(err).split())[:200]})"
            else:
                found = find_first(expand([target], layouts), predicate)
                if found is not None:
                    return found
                outcome = f"download into {target} finished but the expected files are not there"

    where = ", ".join(str(r) for r in roots)
    shapes = ", ".join(f"<dir>/{layout}" if layout else "<dir>" for layout in layouts)
    hint = how_to.replace("{dir}", str(user_roots(data_dir)[0]))
    raise DataNotFoundError(f"{dataset} data not found in {where} (tried {shapes}); {outcome}. To get it: {hint}")


def _dedupe(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return list(seen)
