"""Parameter models shared by every kind of plugin, and the type variable of their ``params``."""

from __future__ import annotations

from typing import ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict


class NoParams(BaseModel):
    """Parameters of a plugin that takes none; any key in a suite is an error."""

    model_config = ConfigDict(extra="forbid")


#: The ``Params`` model of a plugin: ``Method``, ``Metric``, ``Explainer`` and ``Dataset`` are generic
#: over it (``class EGT(Method[EGTParams])``), so ``self.params`` has the plugin's own type.
P = TypeVar("P", bound=BaseModel)


class Configurable(Protocol):
    """A plugin class as the suite validator sees it: every kind has a ``Params`` model."""

    Params: ClassVar[type[BaseModel]]
