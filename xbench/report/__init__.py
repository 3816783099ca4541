"""Reporting: result records and the leaderboards built from them."""

from xbench.report.records import Record, append_records, read_records, records_to_frame, write_records
from xbench.report.stats import Statistics, statistics
from xbench.report.tables import leaderboard_frame, to_csv, to_latex, to_markdown, write_leaderboard

__all__ = [
    "Record",
    "Statistics",
    "append_records",
    "leaderboard_frame",
    "read_records",
    "records_to_frame",
    "statistics",
    "to_csv",
    "to_latex",
    "to_markdown",
    "write_leaderboard",
    "write_records",
]
