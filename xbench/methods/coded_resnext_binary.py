"""Coded ResNeXt's binary sub-networks: class k's classifier extracted as the network it really is.

Class k's binary classifier multiplies, in every coded block, t_n by w_{l,k,n} before the
energy normalisation (ρ still averages over all N branches) and keeps logit z_k
(:mod:`xbench.methods.coded_resnext`). A zeroed branch contributes nothing to the sum, the
energies or ρ, so :func:`extract_binary_classifier` builds a network that holds only the active
branches' slices of each coded block, and :func:`count_binary_parameters` counts that network.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import Tensor, nn

from xbench.methods.coded_resnext_network import ResNeXtBackbone, ResNeXtBlock, ResNeXtStage
from xbench.models.base import memory_format_of


class CodedModel(Protocol):
    """What extraction reads of a :class:`~xbench.methods.coded_resnext.CodedResNeXt`."""

    backbone: ResNeXtBackbone
    fc: nn.Linear


def _branch_channels(active: Tensor, width: int) -> Tensor:
    """Channel indices owned by the ``active`` branches when each branch owns ``width`` channels."""
    return (active[:, None] * width + torch.arange(width)).flatten()


def _slice_bn(bn: nn.BatchNorm2d, idx: Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        out.weight.copy_(bn.weight[idx])
        out.bias.copy_(bn.bias[idx])
        out.running_mean.copy_(bn.running_mean[idx])  # type: ignore[index, union-attr]
        out.running_var.copy_(bn.running_var[idx])  # type: ignore[index, union-attr]
    return out


def _prune_block(block: ResNeXtBlock, active: Tensor) -> ResNeXtBlock:
    """The block as class k's classifier runs it: only the ``active`` branches' slices."""
    d = block.conv_internal.in_channels // block.n_branches
    c_in = block.conv_reduce.in_channels
    stride = block.conv_internal.stride[0]
    pruned = ResNeXtBlock(
        c_in, block.out_channels, d, len(active), stride, coded=True, energy_branches=block.n_branches
    )
    inner = _branch_channels(active, d)
    outer = _branch_channels(active, block.out_channels)
    with torch.no_grad():
        pruned.conv_reduce.weight.copy_(block.conv_reduce.weight[inner])
        pruned.conv_internal.weight.copy_(block.conv_internal.weight[inner])
        pruned.conv_expand.weight.copy_(block.conv_expand.weight[outer])
    pruned.bn_reduce = _slice_bn(block.bn_reduce, inner)
    pruned.bn_internal = _slice_bn(block.bn_internal, inner)
    pruned.bn_expand = copy.deepcopy(block.bn_expand)
    pruned.skip = copy.deepcopy(block.skip)
    return pruned


class BinaryClassifier(nn.Module):
    """Class k's sub-network: shared modules, its active branches and row k of the classifier."""

    def __init__(self, stem: nn.Module, stages: list[ResNeXtStage], weight: Tensor) -> None:
        super().__init__()
        self.backbone = ResNeXtBackbone(stem, stages, [weight.shape[1]])
        self.fc = nn.Linear(weight.shape[1], 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x: Tensor) -> Tensor:
        """(B,) score z_k."""
        return self.fc(self.backbone(x).mean(dim=(2, 3))).squeeze(1)

    def forward_from(self, h: Tensor, stage: int) -> Tensor:
        """(B,) score z_k from the output ``h`` of the first ``stage`` stages (see ``CodedResNeXt.binary_front``)."""
        for later in self.backbone.stages[stage:]:
            h = later(h)
        return self.fc(h.mean(dim=(2, 3))).squeeze(1)


def extract_binary_classifier(model: CodedModel, k: int) -> BinaryClassifier:
    """Class ``k``'s binary classifier as a network holding only what it uses, in eval mode.

    Its output equals ``model(x, restrict_to=k).logits[:, k]``: a zeroed branch contributes
    nothing to the sum, the energies or ρ, so its slices of ``conv_reduce``/``bn_reduce``,
    the grouped 3×3 conv, ``bn_internal`` and the grouped expansion can go.
    """
    stages = []
    for stage in model.backbone.stages:
        blocks = []
        for block in stage.blocks:  # type: ignore[union-attr]
            if block.codes is None:
                blocks.append(copy.deepcopy(block))
            else:
                blocks.append(_prune_block(block, block.codes[k].nonzero().flatten().cpu()))
        stages.append(ResNeXtStage(blocks))
    classifier = BinaryClassifier(copy.deepcopy(model.backbone.stem), stages, model.fc.weight[k : k + 1].detach())
    if memory_format_of(model.backbone) == "channels_last":  # the pruned convs are new tensors: keep the model's layout
        classifier.to(memory_format=torch.channels_last)
    return classifier.to(model.fc.weight.device).eval()


def count_binary_parameters(model: CodedModel, k: int) -> int:
    """Parameters of class ``k``'s binary classifier, counted on the network it really is.

    Convention: every parameter tensor of :func:`extract_binary_classifier`'s network, as
    :func:`xbench.metrics.efficiency.count_parameters` counts the full model: the stem, all
    plain blocks, every skip connection and ``bn_expand`` (shared by all classes), in coded
    blocks the active branches' slices of ``conv_reduce``, ``bn_reduce``, the grouped 3×3
    conv, ``bn_internal`` and the grouped expansion, and row k of the final linear layer.
    BatchNorm affine parameters count; running statistics and the normalisation constants
    are buffers and do not.

    For the paper's models this keeps 46.3% (ResNeXt-29 10×11d, CIFAR-10) and 37.4%
    (20×6d, CIFAR-100) of the parameters; the paper reports 38% and 27%. Its figures match
    the fraction of *branch* parameters kept (37.0% and 27.5%), i.e. a count that leaves
    out what every class shares: the skip projections (≈14% of either model), the stem,
    every bn_expand and the final layer.
    """
    return sum(p.numel() for p in extract_binary_classifier(model, k).parameters())
