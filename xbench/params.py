"""Parameter models shared by every kind of plugin, and the type variable of their ``params``."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class NoParams(BaseModel):
    """Parameters of a plugin that takes none; any key in a suite is an error."""

    model_config = ConfigDict(extra="forbid")


#: The ``Params`` model of a plugin: ``Method``, ``Metric``, ``Explainer`` and ``Dataset`` are generic
#: over it (``class EGT(Method[EGTParams])``), so ``self.params`` has the plugin's own type.
P = TypeVar("P", bound=BaseModel)


class Configurable(Protocol):
    """A plugin class as the suite validator sees it: every kind has a ``Params`` model."""

    Params: ClassVar[type[BaseModel]]


class OmitDefaults(BaseModel):
    """Params whose fields in ``omit_at_default`` are left out of dumps while they hold their default.

    Records and cache keys carry a row's dumped params, so a parameter added to an existing plugin
    would otherwise change every record of every suite written before it (``baseline``'s ``head``).
    """

    omit_at_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        for name in self.omit_at_default:
            if name in data and getattr(self, name) == fields[name].default:
                del data[name]
        return data
