"""The results folder: one run at a time, staged in a hidden folder, published at the end.

Results are first written to ``.<name>.partial-<pid>`` next to the output folder and swapped in
only when the run ends, so an interrupted or rejected run never leaves a half-written output
folder. A run holds ``flock`` on ``.<name>.lock`` for its whole duration.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xbench.errors import OutputError

#: The file that marks a folder as xbench's results (an existing folder is replaced only if it has one).
RESULT_MARKER = "run.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of runs that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def check_output(out: Path) -> None:
    """Raise OutputError unless ``out`` can be (re)written."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RESULT_MARKER).exists():
        raise OutputError(f"{out}: output folder is not empty and holds no xbench results; choose another output")
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"{out}: cannot create the output folder: {blocker} is a file")


def check_folder(path: Path, what: str) -> None:
    """Raise OutputError unless ``path`` is, or can be created as, a writable folder; creates nothing.

    ``what`` names the flag or key that gave the path (``--cache-dir``, ``--export-reference``), so
    a run told to write where it cannot stops before any cell starts, not after its training.
    """
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"{what} {path}: {blocker} is a file, not a folder")
    if blocker is not None and not os.access(blocker, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {blocker} is not writable")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for a whole run; a second run gets a clear OutputError.

    ``flock`` on a hidden file next to the folder: the kernel drops the lock when the
    process dies, so a killed run never blocks the next one (its lock file stays and is
    reused). A finished run removes the file; the inode check guards against locking a
    file that the run holding it has just removed.
    """
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")  # noqa: SIM115 -- held open for the whole run
        except OSError as err:
            raise OutputError(f"{out}: output folder is not writable ({err.strerror or err})") from err
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(
                f"{out}: another xbench run ({holder}) is writing to this output folder; "
                "wait for it to finish or choose another --output"
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # locked a file that was removed meanwhile: take the new one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()  # releases the lock


def prepare_output(out: Path) -> Path:
    """Create the hidden staging folder for ``out`` (checked by :func:`check_output`, locked by the caller)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        staging = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        probe = staging / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{out}: output folder is not writable ({err.strerror or err})") from err
    return staging


def publish(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (old results are removed only after the swap)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
