"""A run's report, cached: tables, plots and HTML are a pure function of what the run recorded.

A run whose records, saliency samples, title and view are byte for byte those of an earlier run
(a re-run with a full cache) gets that run's report files from the cache instead of drawing them
again (most of a full-cache re-run's time, mostly matplotlib: BENCHMARKS.md, "The main job and
its re-run, latest"). The key also hashes every
source file of the xbench package and the versions of the libraries that draw and format, so
editing the report code (or upgrading matplotlib) draws afresh. The files are stored as one tar
archive with a recorded sha256, like every cache entry; a damaged entry is redrawn.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from xbench.engine.cache import Cache, cache_key, sha256_file

log = logging.getLogger(__name__)

KIND = "reports"
#: the libraries whose output the report files contain
LIBRARIES = ("matplotlib", "seaborn", "pandas", "numpy", "jinja2")


@cache
def package_fingerprint() -> str:
    """sha256 over every Python source file of the xbench package (names and contents)."""
    root = Path(__file__).resolve().parents[1]
    return cache_key({str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*.py"))})


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def report_key(records: Path, saliency: Path, title: str, view: str) -> str:
    """The cache key of the report drawn from the ``records`` file and the ``saliency/*.npz`` samples."""
    samples = {p.name: sha256_file(p) for p in sorted(saliency.glob("*.npz"))} if saliency.is_dir() else {}
    return cache_key({
        "kind": "report", "records": sha256_file(records), "saliency": samples, "title": title, "view": view,
        "code": package_fingerprint(), "versions": {name: _version(name) for name in LIBRARIES},
    })  # fmt: skip


def cached_report(cache_: Cache, key: str, out_dir: Path, draw: Callable[[], list[Path]]) -> tuple[list[Path], bool]:
    """``(files, from_cache)``: the report files written into ``out_dir``, from the cache or by ``draw()``.

    ``draw`` writes the report into ``out_dir`` and returns its files (all inside ``out_dir``); they
    are then stored under ``key``.
    """
    data = cache_.load_bytes(KIND, key, suffix=".tar")
    if data is not None:
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                names = archive.getnames()
                if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
                    archive.extractall(out_dir, filter="data")
                else:  # our own archive, checked against its sha256; still refuse anything but plain files
                    for member in archive.getmembers():
                        if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                            raise tarfile.TarError(f"unexpected member {member.name!r}")
                    archive.extractall(out_dir)
            return [out_dir / name for name in names], True
        except (tarfile.TarError, OSError) as err:  # pragma: no cover - the sha256 check comes first
            log.warning("cached report %s could not be unpacked (%s); drawing it", key[:12], err)
    files = draw()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in files:
            archive.add(path, arcname=str(path.relative_to(out_dir)), recursive=False)
    cache_.save_bytes(KIND, key, buffer.getvalue(), {"files": len(files)}, suffix=".tar")
    return files, False
