"""Coded ResNeXt's network: ResNeXt blocks, plain or coded, their stages and the backbone.

The equations are in :mod:`xbench.methods.coded_resnext`. A block's N branches ("subNNs") of
width d each own a contiguous slice of channels; a coded block (r = N_act/N < 1) normalises the
branch energies, applies DropSubNNs in training and records the energies and codewords in the
forward pass's :class:`_Pass`, which the model decodes and the coding loss reads. A coded block
never materialises the N branch outputs (:meth:`ResNeXtBlock._coded`).

The modules' attribute names are the checkpoints' state-dict keys
(``backbone.stages.<i>.blocks.<j>.conv_reduce.weight``, ...): renaming one breaks every cached
and reference model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    """A ResNeXt bottleneck block, plain or coded (see :mod:`xbench.methods.coded_resnext`).

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
