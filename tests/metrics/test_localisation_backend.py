"""The batched torch localisation AUC equals Quantus 0.6.0's ``AUC`` (scikit-learn's ROC curve per image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xbench.metrics.localization import LocalisationAUC, quantus_call, roc_auc


def maps_and_masks(ties: bool, n: int = 9, size: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(int(ties))
    maps = torch.rand(n, size, size, generator=g)
    if ties:  # Grad-CAM-like zeros and coarse values: many ties inside and across the mask
        maps = (maps - 0.4).clamp_min(0).round(decimals=1)
    masks = torch.rand(n, size, size, generator=g) < torch.linspace(0.05, 0.9, n)[:, None, None]
    masks[:, 0, 0], masks[:, -1, -1] = True, False  # pixels in and outside every mask
    return maps, masks


@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_equals_quantus(ties: bool) -> None:
    import quantus

    maps, masks = maps_and_masks(ties)
    theirs = quantus_call(quantus.AUC(disable_warnings=True, normalise=False, abs=False), maps.numpy(), masks.numpy())
    ours = roc_auc(maps, masks).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)  # float64 round-off: one division vs trapezoids
    assert np.std(ours) > 0.01


def test_roc_auc_by_hand() -> None:
    # Mask pixels score 2 and 1, background 1 and 0: pairs (2,1) (2,0) (1,0) win, (1,1) ties: (3 + ½) / 4.
    maps = torch.tensor([[[2.0, 1.0, 1.0, 0.0]]])
    masks = torch.tensor([[[True, True, False, False]]])
    assert roc_auc(maps, masks).tolist() == [pytest.approx(3.5 / 4)]
    assert roc_auc(maps, ~masks).tolist() == [pytest.approx(0.5 / 4)]


def test_both_backends_agree_through_the_metric() -> None:
    maps, masks = maps_and_masks(True)
    torch_values = LocalisationAUC(LocalisationAUC.Params(backend="torch")).scores(maps, masks)
    quantus_values = LocalisationAUC(LocalisationAUC.Params(backend="quantus")).scores(maps, masks)
    np.testing.assert_allclose(torch_values, quantus_values, rtol=0, atol=1e-12)
    assert LocalisationAUC().params.backend == "torch"
    assert LocalisationAUC().record(maps)["implementation"].startswith("xbench.metrics.localization.roc_auc")
    assert LocalisationAUC(LocalisationAUC.Params(backend="quantus")).record(maps)["implementation"] == "quantus.AUC"
