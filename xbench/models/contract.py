"""What a model may offer beyond ``forward``, as protocols that metrics check with ``isinstance``.

* :class:`EarlyExitModel`: early exits that can be run alone (EGT's ``EarlyExitNet``, Coded
  ResNeXt's decoding exits). ``forward_exit(x, i)`` returns the logits of exits ``0..i`` and runs
  nothing past exit ``i``; ``exit_stream(x)`` yields the logits of exit 0, 1, ... lazily, so early-exit
  inference (:func:`xbench.models.exits.early_exit`) never computes the stages after the exit it takes.
* :class:`BinarySubnetworks`: one binary classifier per class (Coded ResNeXt), and
  :class:`SharedBinaryFront` when those classifiers all start with the same modules.

The protocols are ``runtime_checkable``: ``isinstance`` checks only that the members exist, which
is what the metrics relied on before (``hasattr``); their signatures are for the type checker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class EarlyExitModel(Protocol):
    """A model with ``num_exits`` exits (final last) that can answer at each of them alone."""

    @property
    def num_exits(self) -> int:
        """Number of exits, the final one included."""
        ...

    def exit_stream(self, x: Tensor) -> Iterator[Tensor]:
        """Logits of exit 0, 1, ..., final last, computed lazily: stages after the last exit consumed never run."""
        ...

    def forward_exit(self, x: Tensor, i: int) -> list[Tensor]:
        """Logits of exits ``0..i`` (what the exit policy reads on its way to exit ``i``), computed up to exit ``i``."""
        ...


@runtime_checkable
class BinarySubnetworks(Protocol):
    """A model with one binary classifier per class."""

    num_classes: int

    def binary_classifier(self, k: int) -> nn.Module:
        """Class k's classifier as a network holding only the modules it uses; ``forward(x)`` is (B,) scores."""
        ...


@runtime_checkable
class SharedBinaryFront(BinarySubnetworks, Protocol):
    """Binary sub-networks that all start with the same modules, which can then run once per image."""

    def binary_front(self) -> tuple[nn.Module, int]:
        """``(front, stages)``: the modules every binary classifier starts with and how many backbone stages
        they cover; ``binary_classifier(k).forward_from(front(x), stages)`` equals ``binary_classifier(k)(x)``."""
        ...
