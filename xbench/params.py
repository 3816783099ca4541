"""Parameter models shared by every kind of plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    """Parameters of a plugin that takes none; any key in a suite is an error."""

    model_config = ConfigDict(extra="forbid")
