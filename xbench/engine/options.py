"""How to run, as opposed to what to run (the suite)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunOptions:
    """How to run, as opposed to what to run (the suite)."""

    data_dir: Path | None = None
    cache_dir: Path | None = None
    progress: bool = True
    fail_fast: bool = False
    echo: Any = print  # where one-line cell summaries go
    reference: Path | None = None  # load every cell's weights from this reference folder, never train
    export_reference: Path | None = None  # write the run's trained models as a reference folder
    executor: str = "local"  # "local" or "ray"
    jobs: int | None = None  # local executor: cells at a time (worker processes when > 1); None: resources.jobs
    address: str | None = None  # Ray cluster address ("auto", "HOST:PORT"); None starts a local Ray
