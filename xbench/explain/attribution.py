"""Pieces the attribution explainers share: one map per image from per-channel attributions, the
baselines they start from, the square cells of occlusion/LIME/KernelSHAP, and seeded randomness.

The rule for maps (every explainer returns (B, H, W) at the input size): signed per-channel
attributions are summed over channels (``channels: sum``, the default) or their absolute values are
(``abs_sum``), then resized bilinearly where the library's map has another resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ChannelRule = Literal["sum", "abs_sum"]
BaselineKind = Literal["zero", "mean", "blur"]


def attribution_map(attr: Tensor, size: tuple[int, int], channels: ChannelRule = "sum") -> Tensor:
    """(B, C, h, w) attributions -> (B, H, W) map: summed over channels (``abs_sum``: their absolute
    values), resized bilinearly to ``size`` if ``(h, w)`` differs, detached."""
    m = attr.sum(dim=1) if channels == "sum" else attr.abs().sum(dim=1)
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return m.detach()


def default_window(h: int, w: int) -> int:
    """Occlusion's default patch side: ``max(4, min(h, w) // 16)`` px (4 px up to 64-px images, 14 at 224)."""
    return max(4, min(h, w) // 16)


def default_cell(h: int, w: int) -> int:
    """LIME's and KernelSHAP's default cell side: ``ceil(min(h, w) / 6)`` px, about a 6 × 6 grid (36 cells:
    fewer than the default 64 samples, so KernelSHAP's regression is not underdetermined)."""
    return max(1, math.ceil(min(h, w) / 6))


def cell_mask(h: int, w: int, cell: int, device: torch.device | None = None) -> Tensor:
    """(1, 1, h, w) feature mask numbering square ``cell``-px cells row by row from 0 (the edge ones may be cut)."""
    cols = math.ceil(w / cell)
    r = torch.arange(h, device=device) // cell
    c = torch.arange(w, device=device) // cell
    return (r[:, None] * cols + c[None, :])[None, None]


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) images, radius ``ceil(3 sigma)``, edges replicated."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    out = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def baseline_images(x: Tensor, kind: BaselineKind, blur_sigma: float | None = None) -> Tensor:
    """The reference images x' for ``x``: ``zero`` (black), ``mean`` (each image's per-channel mean) or
    ``blur`` (Gaussian, sigma ``blur_sigma`` px, by default ``min(H, W) / 8``)."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    sigma = blur_sigma if blur_sigma is not None else min(x.shape[-2:]) / 8
    return gaussian_blur(x, sigma)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's (CPU and ``device``'s) and numpy's global generators seeded with ``seed`` inside, restored after:
    captum draws from them (GradientShap's baseline choices and path points from numpy's)."""
    devices = [device] if device.type == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(state)
