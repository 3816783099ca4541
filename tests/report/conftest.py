"""Fixtures shared by the report tests."""

from __future__ import annotations

import pytest
from report_fixtures import smoke_like_records

from xbench.report.records import Record


@pytest.fixture(scope="session")
def smoke_like() -> list[Record]:
    """Records shaped like a smoke run with three seeds (:func:`report_fixtures.smoke_like_records`), built once."""
    return smoke_like_records(seeds=3)
