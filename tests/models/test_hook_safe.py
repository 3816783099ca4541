"""Hook-safe models: one non-in-place ReLU module per use and the residual sum as a module.

captum's DeepLift, LRP and guided backprop hook modules, so ``resnet_cifar`` and torchvision's
ResNets must call every ReLU module once, none in place, and sum shortcuts in an ``Add`` module
(tests/explain/test_captum_explainers.py shows what goes wrong otherwise). None of this may change
an output or a state-dict key: the committed reference models still load strictly and give the
logits of the block as it was.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import resnet as tv

from xbench.data.synthetic import SHAPES
from xbench.methods.base import MethodContext
from xbench.models.layers import Add
from xbench.models.zoo import make_hook_safe
from xbench.registry import BACKBONES, METHODS

REFERENCES = Path(__file__).resolve().parents[2] / "reference_models" / "smoke"


def calls_per_module(model: nn.Module, x: Tensor) -> dict[str, int]:
    """How often each leaf module runs in one forward pass."""
    counts: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if next(m.children(), None) is None:
            counts[name] = 0

            def hook(_m: nn.Module, _i: Any, _o: Any, name: str = name) -> None:
                counts[name] += 1

            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return counts


def assert_hook_safe(model: nn.Module, x: Tensor) -> None:
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)], "an in-place module"
    reused = {n: c for n, c in calls_per_module(model, x).items() if c > 1}
    assert not reused, f"modules called more than once: {reused}"


def context(backbone: str, params: dict[str, Any], size: int, num_classes: int = 5, **kw: Any) -> MethodContext:
    return MethodContext(
        num_classes=num_classes, in_channels=3, image_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
        backbone=backbone, backbone_params=params, **kw,
    )  # fmt: skip


# -- resnet_cifar ----------------------------------------------------------------------------------------------
class CommittedBlock(nn.Module):
    """resnet_cifar's block as it was: an in-place ReLU module, then ``+`` and ``F.relu``."""

    def forward(self, x: Tensor) -> Tensor:
        b: Any = self
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        return F.relu(out + b.shortcut(x))


def committed_copy(model: nn.Module) -> nn.Module:
    old = copy.deepcopy(model)
    old.backbone.stem[3] = nn.ReLU(inplace=True)
    for stage in old.backbone.stages:
        for b in stage:
            del b.relu1, b.relu2, b.add
            b.relu = nn.ReLU(inplace=True)
            b.__class__ = CommittedBlock
    return old


def manifest() -> dict[str, Any]:
    cells: dict[str, Any] = json.loads((REFERENCES / "manifest.json").read_text())["cells"]
    return cells


@pytest.mark.parametrize("cell", sorted(manifest()))
def test_reference_models_load_strictly(cell: str) -> None:
    entry = manifest()[cell]
    config = entry["config"]
    method_cls = METHODS.get(config["method"]["name"])
    ctx = context(
        config["backbone"]["name"], config["backbone"]["params"], config["dataset"]["params"]["image_size"],
        num_classes=len(SHAPES), required_params={} if method_cls.requires else None,
    )  # fmt: skip
    model = method_cls(method_cls.Params.model_validate(config["method"]["params"]), ctx).build()
    state = torch.load(REFERENCES / entry["file"], weights_only=True)
    model.load_state_dict(state, strict=True)


def test_reference_baseline_gives_the_committed_blocks_logits() -> None:
    entry = manifest()["synthetic_shapes/baseline/seed0"]
    backbone = entry["config"]["backbone"]
    cls = METHODS.get("baseline")
    model = cls(cls.Params(), context(backbone["name"], backbone["params"], 24, len(SHAPES))).build()
    model.load_state_dict(torch.load(REFERENCES / entry["file"], weights_only=True), strict=True)
    old = committed_copy(model)
    assert list(old.state_dict()) == list(model.state_dict())
    x = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, old.eval()(x).logits)
        model.train(), old.train()
        assert torch.equal(model(x).logits, old(x).logits)  # batch statistics too


def test_resnet_cifar_is_hook_safe() -> None:
    cls = METHODS.get("baseline")
    model = cls(cls.Params(), context("resnet_cifar", {"depth": 14, "width": 4}, 16)).build().eval()
    x = torch.rand(2, 3, 16, 16)
    assert_hook_safe(model, x)
    blocks = [b for stage in model.backbone.stages for b in stage]
    assert all(isinstance(b.add, Add) for b in blocks)
    counts = calls_per_module(model, x)
    assert all(counts[n] == 1 for n, m in model.named_modules() if isinstance(m, nn.ReLU | Add))
    # the check itself: the committed block's in-place ReLU is found
    with pytest.raises(AssertionError, match="in-place"):
        assert_hook_safe(committed_copy(model), x)


# -- torchvision -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_blocks_are_bitwise_torchvisions(arch: str) -> None:
    torch.manual_seed(0)
    plain = torchvision.models.get_model(arch)
    safe = make_hook_safe(copy.deepcopy(plain))
    assert list(safe.state_dict()) == list(plain.state_dict())
    blocks = [m for m in safe.modules() if isinstance(m, tv.BasicBlock | tv.Bottleneck)]
    assert blocks and all(type(b).__name__.startswith("HookSafe") and not hasattr(b, "relu") for b in blocks)
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(safe.eval()(x), plain.eval()(x))
        assert torch.equal(safe.train()(x), plain.train()(x))
    assert_hook_safe(safe.eval(), x)
    with pytest.raises(AssertionError):  # torchvision's own blocks call their ReLU in place, twice or three times
        assert_hook_safe(plain.eval(), x)


def test_torchvision_backbones_are_built_hook_safe() -> None:
    for name in ("resnet18", "mobilenet_v3_small"):
        backbone = BACKBONES.get(name)(BACKBONES.get(name).Params(), 3, (0.5,) * 3, (0.25,) * 3).eval()
        assert_hook_safe(backbone, torch.rand(1, 3, 32, 32))
