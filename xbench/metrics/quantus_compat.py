"""Quantus 0.6.0 under numpy 2.4: what every call into Quantus needs, whichever metric it is.

* **``np.trapz`` is gone** (removed in numpy 2.4). Quantus's ``calculate_auc`` calls it, so
  ``PixelFlipping(return_auc_per_sample=True)``, every ``get_auc_score`` and ``IROF`` raise
  ``AttributeError``. :func:`numpy_trapz_shim` installs ``np.trapz = np.trapezoid`` only while
  a Quantus call runs, and only if numpy lacks it, then removes it again.
* **Global numpy RNG**: perturbations draw from ``np.random``; :func:`numpy_seed` seeds it for
  a call and restores the previous state afterwards.

The model-based (faithfulness) metrics' own Quantus defects, and the wrapper that calls them
(``run_quantus``), are in :mod:`xbench.metrics.faithfulness.reference`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import numpy as np

try:
    QUANTUS_VERSION = version("quantus")
except PackageNotFoundError:  # pragma: no cover - quantus is a dependency
    QUANTUS_VERSION = "not installed"

_SHIM_LOCK = threading.Lock()
_SHIM_USERS = 0  # blocks inside numpy_trapz_shim while it is installed


@contextlib.contextmanager
def numpy_trapz_shim() -> Iterator[None]:
    """Provide ``np.trapz`` (as ``np.trapezoid``) inside the block if this numpy lacks it.

    Nested and concurrent blocks share one installation; the last one out removes it, so
    code outside every block sees numpy exactly as installed. With a numpy that still has
    ``trapz`` this does nothing.
    """
    global _SHIM_USERS
    with _SHIM_LOCK:
        ours = _SHIM_USERS > 0 or not hasattr(np, "trapz")
        if ours:
            if _SHIM_USERS == 0:
                np.trapz = np.trapezoid  # type: ignore[attr-defined]
            _SHIM_USERS += 1
    try:
        yield
    finally:
        if ours:
            with _SHIM_LOCK:
                _SHIM_USERS -= 1
                if _SHIM_USERS == 0:
                    del np.trapz  # type: ignore[attr-defined]


@contextlib.contextmanager
def numpy_seed(seed: int | None) -> Iterator[None]:
    """Seed numpy's global RNG (which Quantus draws from) inside the block; restore it after."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
