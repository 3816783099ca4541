"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018, arXiv 1806.07421).

No maintained library implements it; this follows the paper (the authors' code, ``eclique/RISE``,
was read, not copied).

Masks (:func:`rise_masks`, the paper's generator):

1. N binary grids of s × s cells, each cell 1 with probability p (independently);
2. each grid upsampled bilinearly to (s + 1)·C_H × (s + 1)·C_W, with the cell size
   C = ⌈H / s⌉ × ⌈W / s⌉ (the paper writes ⌊·⌋; the authors' code rounds up so that the crop
   always fits; both give H + C_H when s divides H);
3. an H × W window cropped at a random shift, uniform in {0, .., C_H − 1} × {0, .., C_W − 1}.

The upsampling is torch's bilinear interpolation (align_corners=False, edge values clamped); the
authors' code uses skimage's ``resize`` with ``mode='reflect'``, which differs only near the border
of the upsampled grid. The masks are drawn on the CPU from a generator seeded by the cell's seed,
so they are reproducible on any device, and shared by every image of the batch.

Saliency of class c for image x: S = Σ_i f_c(x ⊙ M_i) · M_i / (N · p), with f_c the softmax
probability of class c; masked pixels are 0 in the model's input space (images in [0, 1]: black;
the model normalises them itself). The B·N masked images are scored ``batch`` at a time (the loop
runs over chunks, not images), so memory is bounded by ``batch`` images plus the N masks
(N·H·W floats).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from xbench.explain.base import Explainer
from xbench.methods.base import Method
from xbench.registry import EXPLAINERS


def upsample_and_crop(grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) masks from (N, s_h, s_w) grids: bilinear upsampling to (s + 1)·cell, then an H × W crop.

    Args:
        grids: (N, s_h, s_w) cell values (binary for RISE).
        shifts: (N, 2) integer (row, column) offsets of the crop, each in [0, cell).
        size: (H, W) of the masks.
    """
    n, s_h, s_w = grids.shape
    h, w = size
    cell_h, cell_w = math.ceil(h / s_h), math.ceil(w / s_w)
    if shifts.shape != (n, 2):
        raise ValueError(f"shifts must be ({n}, 2), got {tuple(shifts.shape)}")
    if (shifts < 0).any() or (shifts[:, 0] >= cell_h).any() or (shifts[:, 1] >= cell_w).any():
        raise ValueError(f"shifts must lie in [0, {cell_h}) x [0, {cell_w})")
    up = F.interpolate(
        grids[:, None].float(), size=((s_h + 1) * cell_h, (s_w + 1) * cell_w), mode="bilinear", align_corners=False
    )[:, 0]
    rows = shifts[:, :1] + torch.arange(h)  # (N, H)
    cols = shifts[:, 1:] + torch.arange(w)  # (N, W)
    return up[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def rise_masks(n: int, size: tuple[int, int], cells: int, p: float, generator: torch.Generator) -> Tensor:
    """(n, H, W) RISE masks in [0, 1]: random s × s binary grids (1 with probability ``p``),
    upsampled bilinearly to (s + 1)·cell and cropped at a random shift within one cell.

    Drawn on the CPU from ``generator``: the same generator state gives the same masks.
    """
    h, w = size
    grids = (torch.rand(n, cells, cells, generator=generator) < p).float()
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    shifts = torch.stack(
        [torch.randint(0, cell_h, (n,), generator=generator), torch.randint(0, cell_w, (n,), generator=generator)],
        dim=1,
    )
    return upsample_and_crop(grids, shifts, size)


def rise_saliency(model: nn.Module, x: Tensor, target: Tensor, masks: Tensor, p: float, batch: int) -> Tensor:
    """(B, H, W) RISE saliency Σ_i f_c(x ⊙ M_i)·M_i / (N·p), f_c the softmax probability of ``target``.

    Args:
        model: forward returns an object with ``logits``.
        x: (B, C, H, W) images; target: (B,) classes; masks: (N, H, W) on x's device.
        p: the masks' keep probability (the normalisation); batch: masked images per forward.
    """
    b, n = x.shape[0], masks.shape[0]
    scores = torch.empty(b * n, device=x.device)
    with torch.no_grad():
        for start in range(0, b * n, batch):
            idx = torch.arange(start, min(start + batch, b * n), device=x.device)
            image, mask = idx // n, idx % n
            probs = torch.softmax(model(x[image] * masks[mask, None]).logits, dim=-1)
            scores[start : start + len(idx)] = probs.gather(1, target[image, None])[:, 0]
    return torch.einsum("bn,nhw->bhw", scores.view(b, n), masks) / (n * p)


class RiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    masks: int = Field(500, ge=1, le=100_000, description="N random masks per image (the paper: 4,000 at 224 px)")
    cells: int = Field(8, ge=1, le=256, description="s: the grid has s x s cells")
    p: float = Field(0.5, gt=0.0, le=1.0, description="probability that a cell is kept")
    batch: int = Field(64, ge=1, le=65_536, description="masked images per forward (bounds memory)")


@EXPLAINERS.register("rise")
class Rise(Explainer[RiseParams]):
    """RISE (Petsiuk et al., BMVC 2018): probability-weighted sum of random masks, seeded by the cell's seed."""

    description = "RISE: Σ softmax probability of the masked image × mask / (N·p); masks from the cell's seed"
    Params = RiseParams

    def explain(self, method: Method, model: nn.Module, x: Tensor, target: Tensor, seed: int) -> Tensor | None:
        prm = self.params
        size = (x.shape[-2], x.shape[-1])
        masks = rise_masks(prm.masks, size, prm.cells, prm.p, torch.Generator().manual_seed(seed)).to(x.device)
        return rise_saliency(model, x, target, masks.to(x.dtype), prm.p, prm.batch)
