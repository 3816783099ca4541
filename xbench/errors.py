"""Errors that the CLI reports as one line and exit code 2.

Every error raised for bad user input (suite files, CLI flags, data folders,
checkpoints) derives from :class:`XBenchError`. The CLI prints ``str(err)`` on
one line and exits with :attr:`XBenchError.exit_code`; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class XBenchError(Exception):
    """Base class of errors caused by user input; the message is one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


class ConfigError(XBenchError):
    """A suite file, a ``--set`` override or a plugin parameter is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup failed; the message carries a "did you mean" hint."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(XBenchError):
    """A name was registered twice in the same registry."""


class DataNotFoundError(XBenchError):
    """A dataset is not on disk and could not be downloaded."""


class DataError(XBenchError):
    """A data file or folder exists but is malformed."""


class CheckpointError(XBenchError):
    """A cached checkpoint is missing, truncated, tampered with or unsafe."""


class OutputError(XBenchError):
    """The output folder cannot be written."""
