"""Branch energy per class: a hand-built model with known energies, and an untrained Coded ResNeXt."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from xbench.data.base import ImageSplit
from xbench.methods.base import MethodContext
from xbench.methods.coded_resnext import CodedResNeXtMethod, CodedResNeXtParams, StageSpec
from xbench.metrics.branch_energy import BranchEnergy, energy_shares
from xbench.metrics.context import EvalContext
from xbench.models.output import ModelOutput
from xbench.registry import METRICS

# Three classes, two coded blocks of N = 4 branches with N_act = 2; class 2 has no test images.
CODES = [
    torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]]),
    torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]]),
]
# Energies of an image by (block, label, variant); the two variants of a class alternate.
ENERGIES = {
    (0, 0, 0): [4.0, 0.0, 0.0, 0.0],
    (0, 0, 1): [0.0, 0.0, 2.0, 2.0],
    (0, 1, 0): [0.0, 0.0, 3.0, 3.0],  # sums to 6, not N: the mean is taken before normalising
    (0, 1, 1): [1.0, 1.0, 0.0, 0.0],
    (1, 0, 0): [1.0, 1.0, 1.0, 1.0],
    (1, 0, 1): [1.0, 1.0, 1.0, 1.0],
    (1, 1, 0): [0.0, 4.0, 0.0, 0.0],
    (1, 1, 1): [0.0, 4.0, 0.0, 0.0],
}


class KnownEnergies(nn.Module):
    """Reports ENERGIES for image b, whose label is pixel (0, 0) and variant pixel (0, 1)."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.coded_blocks = nn.ModuleList([nn.Identity(), nn.Identity()])

    def forward(self, x: Tensor) -> ModelOutput:
        label, variant = x[:, 0, 0, 0].long().tolist(), x[:, 0, 0, 1].long().tolist()
        pairs = list(zip(label, variant, strict=True))
        energies = [torch.tensor([ENERGIES[(block, y, v)] for y, v in pairs]) for block in (0, 1)]
        return ModelOutput(logits=torch.zeros(len(x), 3), extras={"energies": energies, "codes": CODES})


def split(labels: list[int]) -> ImageSplit:
    x = torch.zeros(len(labels), 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float)
    x[:, 0, 0, 1] = torch.arange(len(labels)) // 2 % 2  # each class sees both variants equally often
    return ImageSplit(x, torch.tensor(labels), None, ["shirt", "bag", "boot"])


def context(model: nn.Module, data: ImageSplit, batch_size: int = 3) -> EvalContext:
    k = data.num_classes
    method = CodedResNeXtMethod(CodedResNeXtParams(), MethodContext(k, 1, (16, 16), (0.5,), (0.25,), "x", {}))
    return EvalContext(model, method, data, torch.device("cpu"), batch_size=batch_size, progress=False)


def test_metadata() -> None:
    assert METRICS.get("branch_energy") is BranchEnergy
    assert BranchEnergy.category == "consistency" and BranchEnergy.higher_is_better is True
    assert BranchEnergy.display() == {"label": "Energy on code", "unit": "%", "scale": 100.0, "decimals": 1}


def test_value_by_hand_on_known_energies() -> None:
    # Labels alternate 0 1 0 1 ..., variants (index // 2 % 2) go 0 0 1 1 ...: every (class, variant) twice.
    data = split([0, 1, 0, 1, 0, 1, 0, 1])
    (result,) = BranchEnergy().compute(context(KnownEnergies(), data))
    # Block 0, class 0: mean [2, 0, 1, 1] / 4 = [.5, 0, .25, .25]; active {0, 1}: 0.5.
    #          class 1: mean [.5, .5, 1.5, 1.5] / 4 = [.125, .125, .375, .375]; active {2, 3}: 0.75.
    #          (normalising each image first would give (1 + 0) / 2 = 0.5.)
    # Block 1, class 0: uniform [.25] * 4; active {0, 2}: 0.5 = N_act/N, a class-blind block.
    #          class 1: [0, 1, 0, 0]; active {1, 3}: 1.
    # Mean over blocks and classes: (0.5 + 0.75 + 0.5 + 1) / 4 = 0.6875.
    assert result.value == pytest.approx(0.6875)
    assert result.n == 8
    p = result.params
    assert p["classes"] == [0, 1] and p["class_names"] == ["shirt", "bag"]  # class 2 has no test image
    assert p["chance"] == pytest.approx(0.5)
    b0, b1 = p["blocks"]
    assert (b0["block"], b0["n_branches"], b0["n_active"]) == (0, 4, 2)
    assert b0["energy"] == [[0.5, 0.0, 0.25, 0.25], [0.125, 0.125, 0.375, 0.375]]  # exact in binary
    assert b1["energy"] == [[0.25] * 4, [0.0, 1.0, 0.0, 0.0]]
    assert b0["share"] == pytest.approx([0.5, 0.75]) and b1["share"] == pytest.approx([0.5, 1.0])
    assert (b0["value"], b1["value"]) == pytest.approx((0.625, 0.75))
    assert b0["codewords"] == CODES[0].tolist() and b1["codewords"] == CODES[1].tolist()  # every class's


def test_batching_does_not_change_the_value() -> None:
    data = split([0, 1, 0, 1, 0, 1, 0, 1])
    values = [BranchEnergy().compute(context(KnownEnergies(), data, b))[0].value for b in (1, 3, 8)]
    assert values == pytest.approx([0.6875] * 3)


def test_energy_shares_rows_sum_to_one_and_empty_rows_stay_zero() -> None:
    sums = torch.tensor([[2.0, 2.0], [0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    shares = energy_shares(sums, torch.tensor([2.0, 0.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(shares, torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.75, 0.25]], dtype=torch.float64))


class NoEnergies(nn.Module):
    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(logits=torch.zeros(len(x), 3))


def test_models_without_coded_blocks_give_no_value() -> None:
    data = split([0, 1])
    assert BranchEnergy().compute(context(NoEnergies(), data)) == []
    # A Coded ResNeXt with only plain stages reports no energies: no coded block, no value.
    plain = CodedResNeXtParams(stages=[StageSpec(out_channels=8, d=2, n_branches=2)])
    method = CodedResNeXtMethod(plain, MethodContext(3, 1, (4, 4), (0.5,), (0.25,), "x", {}))
    model = method.build().eval()
    assert model.coded_blocks == []
    ctx = EvalContext(model, method, data, torch.device("cpu"), batch_size=3, progress=False)
    assert BranchEnergy().compute(ctx) == []


def test_untrained_coded_resnext() -> None:
    torch.manual_seed(0)
    k = 4
    method = CodedResNeXtMethod(CodedResNeXtParams(), MethodContext(k, 1, (16, 16), (0.5,), (0.25,), "x", {}))
    model = method.build().eval()
    labels = torch.arange(24) % k
    data = ImageSplit(torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(1)), labels, None, list("abcd"))
    ctx = EvalContext(model, method, data, torch.device("cpu"), batch_size=10, progress=False)
    (result,) = BranchEnergy().compute(ctx)
    blocks = result.params["blocks"]
    # narrow, K ≤ 10: coded stages [64, 8, 5/10]×2 and [128, 16, 3/10]×2.
    assert [(b["n_branches"], b["n_active"]) for b in blocks] == [(10, 5), (10, 5), (10, 3), (10, 3)]
    assert result.params["chance"] == pytest.approx(0.4)
    for b, coded in zip(blocks, model.coded_blocks, strict=True):
        energy = torch.tensor(b["energy"])
        assert energy.shape == (k, 10)
        torch.testing.assert_close(energy.sum(dim=1), torch.ones(k), atol=1e-4, rtol=0)
        assert b["codewords"] == coded.codes.long().tolist()
    # The same numbers straight from the forward pass: per class, the mean energy on its own branches / N.
    with torch.no_grad():
        out = model(data.images)
    expected = [
        float((e[labels == c] * code[c]).sum(dim=1).mean() / 10)
        for e, code in zip(out.extras["energies"], out.extras["codes"], strict=True)
        for c in range(k)
    ]
    assert result.value == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    # Untrained, the energies hardly depend on the class: close to the class-blind N_act/N.
    assert abs(result.value - 0.4) < 0.1
