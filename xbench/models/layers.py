"""Small modules that keep a model readable by hook-based attribution methods.

captum's DeepLift, LRP and Guided Backprop act on *modules*: they hook every ``nn.ReLU`` (its
input and output, or its gradient) and, for LRP, every layer with a propagation rule. A
functional ``F.relu``, a ``+`` written in ``forward``, an in-place activation or one ReLU
module called twice escape or corrupt those hooks (captum issues #1082, #578, #837; LRP needs
the residual sum as a module, #546). So models here use one non-in-place ``nn.ReLU`` per use and
:class:`Add` for skip connections. Neither has parameters or buffers: swapping them in changes no
output and no state-dict key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# In place where no gradient is taken. Attribution needs the separate modules and fresh tensors only
# while autograd records (DeepLift, LRP and Guided Backprop hook gradients); evaluation, latency and
# the forward-only explainers run under no_grad, where a fresh tensor per ReLU and per sum cost a
# ResNet-50 at 224 px a fifth of its throughput against torchvision's in-place blocks
# (BENCHMARKS.md, benchmark 11). The values are the same either way.


class ReLU(nn.ReLU):
    """``nn.ReLU`` that works in place when autograd is off (and always if ``inplace``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace or not torch.is_grad_enabled())


class Add(nn.Module):
    """``a + b`` as a module (a residual sum that hooks and LRP rules can see).

    Args:
        reuse_first: with autograd off, add ``b`` into ``a`` in place (``a`` must be a fresh
            intermediate no one keeps, as the residual branch's last BN output is).
    """

    def __init__(self, reuse_first: bool = False) -> None:
        super().__init__()
        self.reuse_first = reuse_first

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if self.reuse_first and not torch.is_grad_enabled():
            return a.add_(b)
        return a + b


@contextmanager
def plain_relus(model: nn.Module) -> Iterator[None]:
    """Inside, every :class:`ReLU` of ``model`` is a plain ``nn.ReLU`` (not in place), as libraries that
    look activations up by exact type expect (captum's DeepLift and LRP: ``type(m) in SUPPORTED_...``)."""
    ours = [m for m in model.modules() if type(m) is ReLU]
    for m in ours:
        m.__class__ = nn.ReLU  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in ours:
            m.__class__ = ReLU
