"""Coded ResNeXt: ResNeXt branches assigned to classes by a code.

Paper: A. Avranas, M. Kountouris, "Towards Disentangling Information Paths with Coded
ResNeXt", NeurIPS 2022, arXiv 2202.05343. Official code: ``avranasa/Coded-ResNeXt``
(read to understand it; this file is written from the equations below).

The method builds its own ResNeXt and ignores the suite's ``backbone``. A stage is
[C_out, d, N_act/N] × blocks: N branches ("subNNs") of width d, of which the N_act
given by the class's codeword w_k ∈ {0,1}^N serve class k (:mod:`coding_scheme`);
r = N_act/N. A block maps h (C_in channels) to C_out channels:

    u   = ReLU(BN(conv1×1(h)))              C_in → N·d; branch n owns channels [n·d, (n+1)·d)
    u   = ReLU(BN(gconv3×3_N(u)))           N groups, stride s
    r = 1 (plain):  t = conv1×1(u)          N·d → C_out
    r < 1 (coded):  t_n = gconv1×1_N(u)_n   N·d → N·C_out, one C_out-channel output per branch
        E_n = mean_{c,h,w} t_n²                                energy of branch n
        ρ² = (1/N) Σ_n E_n;  t_n ← t_n/ρ;  E_n ← E_n/ρ²          so that Σ_n E_n = N
        t_n ← m_n·t_n/(1−p),  m_n ~ Bernoulli(1−p) per (sample, n)   DropSubNNs, training only;
                              consecutive blocks with the same scheme reuse m
        t = Σ_n t_n
    out = ReLU(BN(t) + skip(h))             BN's γ starts at 0; skip = conv1×1-BN when the shape changes

Loss, with coded blocks l, labels y and q = ``loss_power`` (4 in the paper):

    L = CE(z, y) + μ · Σ_l (1/(B·N)) Σ_{b,n} |r_l·E_{l,n}(x_b) − w_{l,y_b,n}|^q

Early decoding at coded block l: v = N_act·E_l/Σ_n E_{l,n}, and class k scores

    s_k = −‖v − w_{l,k}‖₂ / T

whose softmax is the official code's decoding confidence (T = ``decode_temperature`` = 1
there). ``exit_logits`` holds s at every coded block, then the final logits, so the generic
confidence policy (:mod:`xbench.models.exits`) turns them into decoding exits. The paper
reports per-block decoding accuracy and defines no exit policy; the thresholds are ours.

Binary classifier of class k: in every coded block, multiply t_n by w_{l,k,n} before the
energy normalisation (ρ still averages over all N branches), and keep logit z_k.
:func:`extract_binary_classifier` builds it as a network that holds only what it uses;
:func:`count_binary_parameters` counts that network (see its docstring for the convention).

Configurations ([C_out, d, N_act/N] × blocks; stem conv3×3 with 16 channels and stride 2
(narrow) or 64 channels and stride 1 (ResNeXt-29, as in the paper)):

    narrow, K ≤ 10:     [32, 4, 10/10]×2, [64, 8, 5/10]×2, [128, 16, 3/10]×2   (the default)
    narrow, K > 10:     [32, 2, 20/20]×2, [64, 4, 8/20]×2, [128, 8, 4/20]×2
    resnext29_10x11d:   [256, 11, 10/10]×3, [512, 22, 5/10]×3, [1024, 44, 3/10]×3   (paper, CIFAR-10)
    resnext29_20x6d:    [256, 6, 20/20]×3, [512, 12, 8/20]×3, [1024, 24, 4/20]×3    (paper, CIFAR-100)

``blocks`` changes the blocks per stage of a named architecture (one number, or one per stage);
``stages`` overrides the architecture's. μ = 6 and p = 0.1 are the paper's CIFAR values.
A coded block never materialises the N branch outputs t_n (see ``ResNeXtBlock._coded``):
the same function, computed several times faster on CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import Tensor, nn

from xbench.claims import Claim, Rows
from xbench.methods.base import Method, MethodContext
from xbench.methods.coding_scheme import coding_scheme
from xbench.models.base import Normalize, memory_format_of
from xbench.models.exits import Confidence, ExitSettings
from xbench.models.fields import BRANCH_ENERGIES, BranchEnergies  # noqa: F401 (BranchEnergies: re-exported)
from xbench.models.output import Batch, ModelOutput
from xbench.registry import METHODS


# -- configuration ---------------------------------------------------------------------------------
class StageSpec(BaseModel):
    """One stage: ``blocks`` ResNeXt blocks [out_channels, d, n_active/n_branches]."""

    model_config = ConfigDict(extra="forbid")
    out_channels: int = Field(gt=0)
    d: int = Field(gt=0, description="width (channels) of each branch")
    n_branches: int = Field(gt=0, description="N, the cardinality")
    n_active: int | None = Field(None, gt=0, description="N_act branches per class; None = N (a plain stage)")
    blocks: int = Field(1, gt=0)
    stride: Literal[1, 2] | None = Field(None, description="stride of the stage's first block; default 1 first, then 2")

    @model_validator(mode="after")
    def _active(self) -> StageSpec:
        if self.n_active is not None and self.n_active > self.n_branches:
            raise ValueError(f"n_active ({self.n_active}) must be ≤ n_branches ({self.n_branches})")
        return self

    @property
    def active(self) -> int:
        return self.n_branches if self.n_active is None else self.n_active


Architecture = Literal["narrow", "resnext29_10x11d", "resnext29_20x6d"]


class CodedResNeXtParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: Architecture = Field(
        "narrow",
        description="narrow (CPU-sized; 10 branches up to 10 classes, else 20), or the paper's ResNeXt-29 "
        "10×11d (CIFAR-10) / 20×6d (CIFAR-100)",
    )
    stages: list[StageSpec] | None = Field(None, description="explicit stages; overrides the architecture's")
    blocks: PositiveInt | list[PositiveInt] | None = Field(
        None,
        description="blocks per stage of the named architecture (one number, or one per stage); "
        "default 2 narrow, 3 ResNeXt-29",
    )
    stem_channels: int | None = Field(None, gt=0, description="3×3 stem conv width; default 16 narrow, 64 ResNeXt-29")
    stem_stride: Literal[1, 2] | None = Field(
        None, description="stride of the stem conv; default 2 narrow (4× cheaper on CPU), 1 ResNeXt-29 (the paper's)"
    )
    mu: float = Field(6.0, ge=0, description="μ, weight of the coding loss")
    drop_p: float = Field(0.1, ge=0, lt=1, description="p, DropSubNNs probability in coded blocks")
    shared_drop_mask: bool = Field(True, description="consecutive blocks with the same scheme reuse one mask")
    loss_power: float = Field(4.0, gt=0, description="q, exponent of the coding loss")
    decode_temperature: float = Field(1.0, gt=0, description="T in the decoding softmax over −distance/T")
    code_seed: int = Field(0, description="seed of the coding-scheme search")
    thresholds: list[Confidence] | None = Field(
        None, description="τ per coded block (decoding exit); default: calibrated"
    )
    max_accuracy_drop: float = Field(0.5, ge=0, description="calibration target, in accuracy points")
    coded: bool = Field(
        True,
        description="false: the paper's uncoded control, the same ResNeXt with every block r = 1 "
        "(plain blocks: no coding loss, no DropSubNNs, no decoding exits)",
    )

    @model_validator(mode="after")
    def _blocks_or_stages(self) -> CodedResNeXtParams:
        if self.blocks is not None and self.stages is not None:
            raise ValueError("blocks applies to a named architecture; with stages, give each stage's blocks")
        if isinstance(self.blocks, list) and len(self.blocks) != 3:
            raise ValueError(f"blocks: {len(self.blocks)} values for the architecture's 3 stages")
        return self


def architecture_stages(architecture: Architecture, num_classes: int) -> tuple[int, list[StageSpec]]:
    """``(stem_channels, stages)`` of a named architecture for ``num_classes`` classes."""
    if architecture == "resnext29_10x11d":
        n, active, d, stem, blocks = 10, (10, 5, 3), 11, 64, 3
        widths = (256, 512, 1024)
    elif architecture == "resnext29_20x6d":
        n, active, d, stem, blocks = 20, (20, 8, 4), 6, 64, 3
        widths = (256, 512, 1024)
    else:  # narrow: the paper's ratio patterns on a network that trains on 2 CPU cores
        n, active, d, stem, blocks = (10, (10, 5, 3), 4, 16, 2) if num_classes <= 10 else (20, (20, 8, 4), 2, 16, 2)
        widths = (32, 64, 128)
    stages = [
        StageSpec(out_channels=c, d=d * 2**i, n_branches=n, n_active=a, blocks=blocks)
        for i, (c, a) in enumerate(zip(widths, active, strict=True))
    ]
    return stem, stages


# -- the network --------------------------------------------------------------------------------------
@dataclass
class _Pass:
    """State threaded through the blocks of one forward pass.

    Attributes:
        restrict_to: (B,) class per sample whose inactive branches are zeroed (binary classifiers).
        energies: normalised (B, N) energies of each coded block so far.
        codes: (K, N) codewords of each coded block so far.
        drop_masks: DropSubNNs mask (B, N) of each coded block (None when not dropping).
        mask_key, mask: the last mask drawn and the (N, N_act) scheme it was drawn for.
    """

    restrict_to: Tensor | None = None
    energies: list[Tensor] = field(default_factory=list)
    codes: list[Tensor] = field(default_factory=list)
    drop_masks: list[Tensor | None] = field(default_factory=list)
    mask_key: tuple[int, int] | None = None
    mask: Tensor | None = None


class ResNeXtBlock(nn.Module):
    """A ResNeXt bottleneck block, plain or coded (see the module docstring).

    Args:
        in_channels, out_channels, d, n_branches, stride: the block's shape.
        codes: (K, N) codewords for a coded block, None for a plain one. A coded block
            without codes (an extracted binary classifier's) normalises but neither decodes nor masks.
        coded: grouped expansion with energy normalisation (default: ``codes`` is given).
        drop_p: DropSubNNs probability.
        energy_branches: the N that ρ² averages over; the block's own N by default.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        d: int,
        n_branches: int,
        stride: int = 1,
        codes: Tensor | None = None,
        coded: bool | None = None,
        drop_p: float = 0.0,
        shared_drop_mask: bool = True,
        energy_branches: int | None = None,
    ) -> None:
        super().__init__()
        self.n_branches, self.out_channels, self.drop_p = n_branches, out_channels, drop_p
        self.coded = codes is not None if coded is None else coded
        self.shared_drop_mask = shared_drop_mask
        self.energy_branches = energy_branches or n_branches
        self.codes: Tensor | None
        if codes is not None:
            self.register_buffer("codes", codes.float())
            self.n_active = int(codes[0].sum())
        else:
            self.codes = None
            self.n_active = n_branches
        width = n_branches * d
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_internal = nn.Conv2d(width, width, 3, stride, 1, groups=n_branches, bias=False)
        self.bn_internal = nn.BatchNorm2d(width)
        if self.coded:
            self.conv_expand = nn.Conv2d(width, n_branches * out_channels, 1, groups=n_branches, bias=False)
        else:
            self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.skip: nn.Module = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.bn_expand.weight)

    @property
    def scheme_key(self) -> tuple[int, int]:
        return (self.n_branches, self.n_active)

    def forward(self, h: Tensor, state: _Pass | None = None) -> Tensor:
        state = state if state is not None else _Pass()
        u = F.relu(self.bn_reduce(self.conv_reduce(h)))
        u = F.relu(self.bn_internal(self.conv_internal(u)))
        t = self._coded(u, state) if self.coded else self.conv_expand(u)
        return F.relu(self.bn_expand(t) + self.skip(h))

    def _coded(self, u: Tensor, state: _Pass) -> Tensor:
        """Σ_n s_n·t_n for t_n = W_n u_n (the grouped expansion), without materialising the t_n.

        The N outputs t_n (N× the block's output size) are never built: with W_n the
        (C_out × d) weight of branch n, E_n = mean_{c,h,w} (W_n u_n)² = Σ_{hw} u_nᵀ(W_nᵀW_n)u_n / (C_out·H·W),
        and Σ_n s_n W_n u_n is one dense 1×1 conv of the branch inputs scaled by s_n. Same
        function and MACs as the grouped conv followed by a sum, several times faster on CPU.
        """
        b, _, hh, ww = u.shape
        n, c = self.n_branches, self.out_channels
        w = self.conv_expand.weight.view(n, c, -1)  # (N, C_out, d): W_n
        ub = u.view(b, n, w.shape[2], hh * ww)
        gram = w.transpose(1, 2) @ w  # (N, d, d): W_nᵀW_n
        energy = (ub * torch.einsum("nij,bnjk->bnik", gram, ub)).sum(dim=(2, 3)).clamp_min(0) / (c * hh * ww)
        scale = torch.ones_like(energy)
        if state.restrict_to is not None and self.codes is not None:
            scale = self.codes[state.restrict_to]  # zeroed branches: no energy, no output
            energy = energy * scale
        # ρ² averages over all N branches of the full block, zeroed ones included; the eps
        # only guards an all-zero input.
        rho2 = energy.sum(dim=1, keepdim=True) / self.energy_branches + 1e-12
        energy = energy / rho2
        scale = scale * rho2.rsqrt()
        if self.codes is not None:
            state.energies.append(energy)
            state.codes.append(self.codes)
            mask = self._drop_mask(u, state)
            state.drop_masks.append(mask)
            if mask is not None:
                scale = scale * mask
        scaled = (ub * scale[:, :, None, None]).view_as(u)
        return F.conv2d(scaled, w.permute(1, 0, 2).reshape(c, -1, 1, 1))

    def _drop_mask(self, like: Tensor, state: _Pass) -> Tensor | None:
        """DropSubNNs: Bernoulli(1 − p)/(1 − p) per (sample, branch), or the previous block's mask."""
        if not self.training or self.drop_p == 0:
            return None
        if not (self.shared_drop_mask and state.mask is not None and state.mask_key == self.scheme_key):
            keep = torch.full((like.shape[0], self.n_branches), 1 - self.drop_p, device=like.device, dtype=like.dtype)
            state.mask = torch.bernoulli(keep) / (1 - self.drop_p)
            state.mask_key = self.scheme_key
        return state.mask


class ResNeXtStage(nn.Module):
    """Consecutive blocks; a module of its own so that Grad-CAM can hook its output."""

    def __init__(self, blocks: list[ResNeXtBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, h: Tensor, state: _Pass | None = None) -> Tensor:
        state = state if state is not None else _Pass()
        for block in self.blocks:
            h = block(h, state)
        return h


class ResNeXtBackbone(nn.Module):
    """``stem`` (normalise, conv3×3-BN-ReLU) and ``stages``, like :class:`xbench.models.base.Backbone`."""

    def __init__(self, stem: nn.Module, stages: list[ResNeXtStage], stage_channels: list[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.stage_channels = stage_channels

    def forward(self, x: Tensor, state: _Pass | None = None) -> Tensor:
        state = state if state is not None else _Pass()
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, state)
        return h


def decoding_logits(energies: Tensor, codes: Tensor, temperature: float = 1.0) -> Tensor:
    """(B, K) scores −‖v − w_k‖₂/T with v = N_act·E/Σ_n E_n (the energies scaled to sum to N_act)."""
    n_active = codes[0].sum()
    v = energies / energies.sum(dim=1, keepdim=True).clamp_min(1e-12) * n_active
    return -(v[:, None, :] - codes[None]).pow(2).sum(dim=2).sqrt() / temperature


def coding_loss(energies: Tensor, codewords: Tensor, ratio: float, power: float = 4.0) -> Tensor:
    """mean over batch and branches of |r·E_n − w_{y,n}|^q; ``codewords`` holds w_y, one row per sample."""
    return (ratio * energies - codewords).abs().pow(power).mean()


class CodedResNeXt(nn.Module):
    """ResNeXt with coded blocks, decoding exits and per-class binary sub-networks.

    ``forward(x)`` returns the final logits, the decoding logits of every coded block
    (``exit_logits``, final last) and the energies for the coding loss; ``forward(x,
    restrict_to=k)`` runs the binary classifiers of classes ``k`` (one per sample).
    """

    def __init__(self, backbone: ResNeXtBackbone, num_classes: int, decode_temperature: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(backbone.stage_channels[-1], num_classes, bias=False)
        self.num_classes = num_classes
        self.decode_temperature = decode_temperature

    @property
    def blocks(self) -> list[ResNeXtBlock]:
        return [block for stage in self.backbone.stages for block in stage.blocks]  # type: ignore[union-attr]

    @property
    def coded_blocks(self) -> list[ResNeXtBlock]:
        return [block for block in self.blocks if block.codes is not None]

    @property
    def num_exits(self) -> int:
        return len(self.coded_blocks) + 1

    def forward(self, x: Tensor, restrict_to: Tensor | None = None) -> ModelOutput:
        state = _Pass(restrict_to=restrict_to)
        features = self.backbone(x, state)
        logits = self.fc(self.pool(features).flatten(1))
        decoded = [
            decoding_logits(e.detach(), c, self.decode_temperature)
            for e, c in zip(state.energies, state.codes, strict=True)
        ]
        ratios = [block.n_active / block.n_branches for block in self.coded_blocks]
        extras = {"energies": state.energies, "codes": state.codes, "ratios": ratios, "drop_masks": state.drop_masks}
        return ModelOutput(logits=logits, features=features, exit_logits=[*decoded, logits], extras=extras)

    def exit_stream(self, x: Tensor) -> Iterator[Tensor]:
        """Decodings of coded blocks 0, 1, ..., then the final logits, computed lazily (see EGT's)."""
        state = _Pass()
        h = self.backbone.stem(x)
        seen = 0
        for block in self.blocks:
            h = block(h, state)
            while seen < len(state.energies):
                yield decoding_logits(state.energies[seen], state.codes[seen], self.decode_temperature)
                seen += 1
        yield self.fc(self.pool(h).flatten(1))

    def forward_exit(self, x: Tensor, i: int) -> list[Tensor]:
        """Logits of exits ``0..i`` (decodings of coded blocks ``0..i``), computed up to exit ``i`` only.

        The policy reads every decoding on its way to exit ``i``, so all are returned (see
        :mod:`xbench.metrics.exits`); the last exit is the full network.
        """
        if i == self.num_exits - 1:
            return self.forward(x).exit_logits
        state = _Pass()
        h = self.backbone.stem(x)
        for block in self.blocks:
            h = block(h, state)
            if len(state.energies) == i + 1:
                break
        return [
            decoding_logits(e, c, self.decode_temperature) for e, c in zip(state.energies, state.codes, strict=True)
        ]

    def binary_scores(self, x: Tensor, classes: Tensor) -> Tensor:
        """(B,) score z_k of the binary classifier of class ``classes[b]`` on each image."""
        return self.forward(x, restrict_to=classes).logits.gather(1, classes[:, None]).squeeze(1)

    def binary_classifier(self, k: int) -> nn.Module:
        return extract_binary_classifier(self, k)

    def binary_front(self) -> tuple[nn.Module, int]:
        """``(front, stages)``: the stem and the leading plain stages, which every binary classifier
        runs unchanged; ``binary_classifier(k).forward_from(front(x), stages)`` equals its ``forward(x)``."""
        plain = 0
        for stage in self.backbone.stages:
            if any(block.codes is not None for block in stage.blocks):  # type: ignore[union-attr]
                break
            plain += 1
        return nn.Sequential(self.backbone.stem, *self.backbone.stages[:plain]), plain


# -- binary classifiers ---------------------------------------------------------------------------------
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


def extract_binary_classifier(model: CodedResNeXt, k: int) -> BinaryClassifier:
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
    if memory_format_of(model) == "channels_last":  # the pruned convs are new tensors: keep the model's layout
        classifier.to(memory_format=torch.channels_last)
    return classifier.to(model.fc.weight.device).eval()


def count_binary_parameters(model: CodedResNeXt, k: int) -> int:
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


# -- the method ---------------------------------------------------------------------------------
def build_coded_resnext(params: CodedResNeXtParams, ctx: MethodContext) -> CodedResNeXt:
    """The network that ``params`` describe, for ``ctx``'s data.

    Raises:
        ValueError: if a stage's scheme cannot give every class its own codeword.
    """
    stem_channels, stages = architecture_stages(params.architecture, ctx.num_classes)
    if params.blocks is not None:
        per_stage = params.blocks if isinstance(params.blocks, list) else [params.blocks] * len(stages)
        stages = [spec.model_copy(update={"blocks": b}) for spec, b in zip(stages, per_stage, strict=True)]
    stages = params.stages if params.stages is not None else stages
    if not params.coded:  # the control: every block keeps all N branches for every class (r = 1)
        stages = [spec.model_copy(update={"n_active": None}) for spec in stages]
    stem_channels = params.stem_channels or stem_channels
    k = ctx.num_classes
    for i, spec in enumerate(stages):
        if spec.active < spec.n_branches and math.comb(spec.n_branches, spec.active) < k:
            raise ValueError(
                f"coded_resnext: stage {i}: C({spec.n_branches}, {spec.active}) = "
                f"{math.comb(spec.n_branches, spec.active)} codewords < {k} classes; "
                "use more branches or another n_active"
            )
    stem_stride = params.stem_stride or (2 if params.architecture == "narrow" else 1)
    stem_conv = nn.Conv2d(ctx.in_channels, stem_channels, 3, stem_stride, 1, bias=False)
    nn.init.kaiming_normal_(stem_conv.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(Normalize(ctx.mean, ctx.std), stem_conv, nn.BatchNorm2d(stem_channels), nn.ReLU())
    in_channels = stem_channels
    built = []
    for i, spec in enumerate(stages):
        codes = None
        if spec.active < spec.n_branches:
            codes = coding_scheme(k, spec.n_branches, spec.active, params.code_seed)
        blocks = []
        for j in range(spec.blocks):
            stride = (spec.stride if spec.stride is not None else (1 if i == 0 else 2)) if j == 0 else 1
            blocks.append(
                ResNeXtBlock(
                    in_channels,
                    spec.out_channels,
                    spec.d,
                    spec.n_branches,
                    stride,
                    codes=codes,
                    drop_p=params.drop_p,
                    shared_drop_mask=params.shared_drop_mask,
                )
            )
            in_channels = spec.out_channels
        built.append(ResNeXtStage(blocks))
    backbone = ResNeXtBackbone(stem, built, [spec.out_channels for spec in stages])
    return CodedResNeXt(backbone, k, params.decode_temperature)


@METHODS.register("coded_resnext")
class CodedResNeXtMethod(Method[CodedResNeXtParams]):
    """Coded ResNeXt: coding loss, DropSubNNs, early decoding, per-class binary sub-networks."""

    paper = (
        "A. Avranas, M. Kountouris, Towards Disentangling Information Paths with Coded ResNeXt, "
        "NeurIPS 2022, arXiv 2202.05343"
    )
    description = (
        "ResNeXt (its own network; ignores the suite backbone) whose branches are assigned to classes by a code; "
        "CE + coding loss, DropSubNNs, early decoding exits, per-class binary sub-networks; Grad-CAM on the last stage"
    )
    Params = CodedResNeXtParams
    output_fields = (BRANCH_ENERGIES,)
    claims = (
        Claim(
            id="coded_resnext.top1",
            statement="coding the branches raises top-1 above the same ResNeXt uncoded",
            paper="94.41 vs 93.66 (CIFAR-10), 78.28 vs 76.86 (CIFAR-100)",
            metric="top1",
            subject=Rows(method="coded_resnext", params={"coded": True}),
            reference=Rows(method="coded_resnext", params={"coded": False}),
            relation=">",
        ),
        Claim(
            id="coded_resnext.binary_params",
            statement="a class's binary sub-network keeps at most 40% of the parameters",
            paper="38% (CIFAR-10), 27% (CIFAR-100)",
            metric="binary_param_fraction",
            subject=Rows(method="coded_resnext", params={"coded": True}),
            relation="<=",
            threshold=0.40,
        ),
    )

    def exit_settings(self) -> ExitSettings:
        given = self.params.thresholds
        return ExitSettings(None if given is None else [float(t) for t in given], self.params.max_accuracy_drop)

    def build(self) -> CodedResNeXt:
        model = build_coded_resnext(self.params, self.ctx)
        n_coded = model.num_exits - 1
        if self.params.thresholds is not None and len(self.params.thresholds) != n_coded:
            raise ValueError(f"coded_resnext: thresholds needs {n_coded} values, one per coded block")
        return model

    def loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        loss = F.cross_entropy(output.logits, batch.y)
        if self.params.mu == 0:
            return loss
        terms = [
            coding_loss(e, c[batch.y], r, self.params.loss_power)
            for e, c, r in zip(output.extras["energies"], output.extras["codes"], output.extras["ratios"], strict=True)
        ]
        return loss + self.params.mu * sum(terms, loss.new_zeros(()))
