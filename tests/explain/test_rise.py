"""RISE: the mask generator against a hand-written bilinear upsampling and crop, the saliency formula
against a model whose output is a known function of the input, reproducibility and the memory bound."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from xbench.explain.rise import Rise, RiseParams, rise_masks, upsample_and_crop
from xbench.models.output import ModelOutput
from xbench.registry import EXPLAINERS


def hand_bilinear(grid: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """Bilinear resize with half-pixel centres (align_corners=False), source coordinates clamped at 0."""

    def taps(o: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = math.floor(src)
        return i0, min(i0 + 1, n_in - 1), src - i0

    rows, cols = len(grid), len(grid[0])
    out = []
    for oy in range(out_h):
        y0, y1, ly = taps(oy, rows, out_h)
        line = []
        for ox in range(out_w):
            x0, x1, lx = taps(ox, cols, out_w)
            top = (1 - lx) * grid[y0][x0] + lx * grid[y0][x1]
            bottom = (1 - lx) * grid[y1][x0] + lx * grid[y1][x1]
            line.append((1 - ly) * top + ly * bottom)
        out.append(line)
    return out


def test_masks_are_the_upsampled_grid_cropped_at_the_shift() -> None:
    grids = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])
    shifts = torch.tensor([[1, 0], [0, 1]])
    masks = upsample_and_crop(grids, shifts, (4, 4))  # cell 2: grids go to 6 x 6, crops of 4 x 4
    assert masks.shape == (2, 4, 4)
    for grid, (dy, dx), mask in zip(grids.tolist(), shifts.tolist(), masks, strict=True):
        up = hand_bilinear(grid, 6, 6)
        expected = torch.tensor([row[dx : dx + 4] for row in up[dy : dy + 4]])
        torch.testing.assert_close(mask, expected)
    # By hand, one value: row 1 + 1 = 2 of the 6 rows samples the grid at 2.5 / 3 - 0.5 = 1/3.
    assert masks[0, 1, 0].item() == pytest.approx(2 / 3)


def test_non_square_size_rounds_the_cell_up() -> None:
    masks = upsample_and_crop(torch.ones(3, 4, 4), torch.tensor([[3, 2], [0, 0], [2, 3]]), (13, 15))  # cells 4 x 4
    assert masks.shape == (3, 13, 15)
    torch.testing.assert_close(masks, torch.ones(3, 13, 15))
    with pytest.raises(ValueError, match="shifts"):
        upsample_and_crop(torch.ones(1, 4, 4), torch.tensor([[4, 0]]), (13, 15))  # a shift of a whole cell


def test_rise_masks_are_seeded_and_have_mean_p() -> None:
    a = rise_masks(2000, (16, 16), 4, 0.3, torch.Generator().manual_seed(5))
    b = rise_masks(2000, (16, 16), 4, 0.3, torch.Generator().manual_seed(5))
    c = rise_masks(2000, (16, 16), 4, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2000, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert abs(a.mean().item() - 0.3) < 0.02
    torch.testing.assert_close(rise_masks(3, (8, 8), 2, 1.0, torch.Generator()), torch.ones(3, 8, 8))


class RegionModel(nn.Module):
    """Two classes with probabilities (a, 1 − a), a = mean of channel 0 over rows 0-3, columns 2-5."""

    def forward(self, x: Tensor) -> ModelOutput:
        a = x[:, 0, 0:4, 2:6].mean(dim=(1, 2)).clamp(1e-6, 1 - 1e-6)
        return ModelOutput(logits=torch.stack([a.log(), (1 - a).log()], dim=1))


def hand_rise(x: Tensor, target: Tensor, masks: Tensor, p: float) -> Tensor:
    """Σ_i f_c(x ⊙ M_i)·M_i / (N·p), with RegionModel's f written out, image by image and mask by mask."""
    n = masks.shape[0]
    out = torch.zeros(x.shape[0], *x.shape[-2:])
    for b in range(x.shape[0]):
        for i in range(n):
            a = (x[b, 0, 0:4, 2:6] * masks[i, 0:4, 2:6]).mean().item()
            f = a if target[b].item() == 0 else 1 - a
            out[b] += f * masks[i]
    return out / (n * p)


def test_saliency_is_the_formula_and_forwards_respect_batch() -> None:
    g = torch.Generator().manual_seed(0)
    x = 0.05 + 0.9 * torch.rand(3, 2, 12, 12, generator=g)
    target = torch.tensor([0, 1, 0])
    model = RegionModel()
    sizes: list[int] = []
    model.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    rise = Rise(RiseParams(masks=40, cells=4, p=0.4, batch=7))
    maps = rise.explain(None, model, x, target, seed=11)  # type: ignore[arg-type]
    masks = rise_masks(40, (12, 12), 4, 0.4, torch.Generator().manual_seed(11))
    torch.testing.assert_close(maps, hand_rise(x, target, masks, 0.4), rtol=1e-5, atol=1e-6)
    assert max(sizes) <= 7 and sum(sizes) == 3 * 40
    big = Rise(RiseParams(masks=40, cells=4, p=0.4, batch=1000)).explain(None, model, x, target, seed=11)  # type: ignore[arg-type]
    torch.testing.assert_close(big, maps)


def test_saliency_finds_the_region() -> None:
    x = torch.ones(1, 1, 16, 16)
    maps = Rise(RiseParams(masks=1000, cells=4)).explain(None, RegionModel(), x, torch.tensor([0]), seed=0)  # type: ignore[arg-type]
    inside = maps[0, 0:4, 2:6].mean()
    outside = maps[0, 8:, 8:].mean()
    assert inside > outside + 0.05


def test_registered_with_checked_params() -> None:
    assert EXPLAINERS.get("rise") is Rise
    assert Rise().param_dict() == {"masks": 500, "cells": 8, "p": 0.5, "batch": 64}
    for bad in ({"p": 0.0}, {"p": 1.5}, {"masks": 0}, {"cells": 0}, {"batch": 0}, {"seed": 1}):
        with pytest.raises(ValidationError):
            RiseParams(**bad)  # type: ignore[arg-type]
