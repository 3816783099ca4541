"""Which models satisfy the protocols of :mod:`xbench.models.contract`, for every registered method.

The protocols replaced ``hasattr`` checks in the metrics (``forward_exit``/``num_exits``/``exit_stream``
in latency and exit costs, ``num_classes``/``binary_classifier`` and ``binary_front`` in the binary
metrics); ``isinstance`` must give the answer those checks gave, model by model.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from xbench.methods.base import MethodContext
from xbench.methods.baseline import Classifier
from xbench.models.contract import BinarySubnetworks, EarlyExitModel, SharedBinaryFront
from xbench.registry import METHODS

NUM_CLASSES = 5
SIZE = 16

#: The built-in methods whose models satisfy each protocol; every other method's model satisfies none.
EARLY_EXIT = {"egt", "coded_resnext"}
BINARY = {"coded_resnext"}
SHARED_FRONT = {"coded_resnext"}


def build(name: str, **params: Any) -> nn.Module:
    ctx = MethodContext(
        num_classes=NUM_CLASSES,
        in_channels=1,
        image_size=(SIZE, SIZE),
        mean=(0.5,),
        std=(0.25,),
        backbone="resnet_cifar",
        backbone_params={"depth": 8, "width": 4},
    )
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(cls.Params(**params), ctx).build()


def had_exits(model: nn.Module) -> bool:
    """The old checks: ``hasattr(model, "forward_exit")`` with ``num_exits`` and ``exit_stream``."""
    return all(hasattr(model, a) for a in ("num_exits", "forward_exit", "exit_stream"))


def had_binary(model: nn.Module) -> bool:
    return hasattr(model, "num_classes") and hasattr(model, "binary_classifier")


EVERY_MODEL = pytest.mark.parametrize(
    ("name", "params"),
    [(name, {}) for name in METHODS.names()] + [("coded_resnext", {"coded": False})],
    ids=[*METHODS.names(), "coded_resnext-uncoded"],
)


@EVERY_MODEL
def test_isinstance_agrees_with_the_old_hasattr_checks(name: str, params: dict[str, Any]) -> None:
    model = build(name, **params)
    assert isinstance(model, EarlyExitModel) == had_exits(model)
    assert isinstance(model, BinarySubnetworks) == had_binary(model)
    assert isinstance(model, SharedBinaryFront) == (had_binary(model) and hasattr(model, "binary_front"))


@EVERY_MODEL
def test_which_models_satisfy_each_protocol(name: str, params: dict[str, Any]) -> None:
    model = build(name, **params)
    assert isinstance(model, EarlyExitModel) == (name in EARLY_EXIT)
    assert isinstance(model, BinarySubnetworks) == (name in BINARY)
    assert isinstance(model, SharedBinaryFront) == (name in SHARED_FRONT)


def test_a_plain_classifier_has_no_exits_and_no_binary_subnetworks() -> None:
    model = build("baseline")
    assert type(model) is Classifier
    assert not isinstance(model, EarlyExitModel)
    assert not isinstance(model, BinarySubnetworks)


@pytest.mark.parametrize(("name", "params", "exits"), [("egt", {}, 3), ("coded_resnext", {"coded": False}, 1)])
def test_early_exit_models_answer_at_every_exit(name: str, params: dict[str, Any], exits: int) -> None:
    """``num_exits`` counts the final exit; an uncoded Coded ResNeXt is one with a single exit."""
    model = build(name, **params).eval()
    assert isinstance(model, EarlyExitModel) and model.num_exits == exits
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert len(list(model.exit_stream(x))) == exits
        assert len(model.forward_exit(x, exits - 1)) == exits


def test_a_model_missing_a_member_is_not_an_early_exit_model() -> None:
    class Partial(nn.Module):
        num_exits = 2

        def forward_exit(self, x: torch.Tensor, i: int) -> list[torch.Tensor]:
            return [x]

    assert not isinstance(Partial(), EarlyExitModel)
