"""Branch energy per class: how much of a coded block's energy flows through the class's own branches.

Coded ResNeXt (Avranas & Kountouris, NeurIPS 2022) assigns class k a codeword w_{l,k} ∈ {0,1}^N
over the N branches of each coded block l, and its coding loss pushes the normalised branch
energies E_{l,n}(x) of an image of class k towards w_{l,k}/r_l: energy on the N_act active
branches, none on the others. Early decoding reads exactly these energies.

On the test split, for every coded block l and every class k that has test images:

    M_{l,k,n} = mean over the test images of class k of E_{l,n}(x)
    S_{l,k,n} = M_{l,k,n} / Σ_m M_{l,k,m}                   (each row sums to 1)
    share_{l,k} = Σ_n w_{l,k,n} · S_{l,k,n}                 (the energy share on k's own branches)

and the value is the mean of share_{l,k} over blocks and classes (higher is better). A perfectly
coded network scores 1; a network whose energies do not depend on the class scores about N_act/N
(exactly, when every branch serves equally many classes), recorded as ``chance``. Coded ResNeXt
normalises each image's energies to sum to N, so S is also the mean per-image share.

A model takes part when its method keeps
:data:`~xbench.models.fields.BRANCH_ENERGIES` (one (N, branches) tensor of energies and the
matching (K, branches) codewords per coded block) in the evaluation pass, as Coded ResNeXt does;
every other model gets no value. ``params["blocks"]`` holds each block's matrix S (rows: ``params["classes"]``) and
its codewords, which the report draws as heatmaps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from xbench.metadata import Category, Direction
from xbench.metrics.base import Metric, MetricResult
from xbench.metrics.context import EvalContext
from xbench.models.fields import BRANCH_ENERGIES
from xbench.params import NoParams
from xbench.registry import METRICS

#: Digits kept of the matrices in the record (they are for plots, not for further arithmetic).
DIGITS = 5


def class_energies(ctx: EvalContext) -> tuple[list[Tensor], list[Tensor], Tensor] | None:
    """Per coded block, the (K, N) sum of branch energies over the test images of each class.

    The energies come from the cell's shared pass over the test split (:meth:`EvalContext.predictions`,
    :data:`~xbench.models.fields.BRANCH_ENERGIES`).

    Returns:
        ``(sums, codes, counts)``: float64 sums and 0/1 codewords per block, both on CPU, and
        the (K,) number of test images per class; None for a model without coded blocks.
    """
    pred, k = ctx.predictions(), ctx.data.num_classes
    coded = pred.get(BRANCH_ENERGIES)
    if coded is None:
        return None
    codes = [c.detach().round().long().cpu() for c in coded.codes]
    sums = [
        torch.zeros(k, e.shape[1], dtype=torch.float64).index_add_(0, pred.labels, e.double()) for e in coded.energies
    ]
    counts = torch.bincount(pred.labels, minlength=k).double()
    return sums, codes, counts


def energy_shares(sums: Tensor, counts: Tensor) -> Tensor:
    """Rows of the mean energies ``sums / counts``, each normalised to sum 1 (all-zero rows stay 0)."""
    mean = sums / counts.clamp_min(1)[:, None]
    return mean / mean.sum(dim=1, keepdim=True).clamp_min(1e-12)


@METRICS.register("branch_energy")
class BranchEnergy(Metric[NoParams]):
    """Mean share of a coded block's energy on the class's own branches (Coded ResNeXt; 1 = perfectly coded)."""

    category = Category.CONSISTENCY
    direction = Direction.HIGHER
    requires_exits = True  # no values for models without coded blocks (whose decodings are its exits)
    label = "Energy on code"
    unit = "%"
    scale = 100.0
    decimals = 1
    description = (
        "Coded ResNeXt: mean over coded blocks and classes of the share of the class's mean branch energy "
        "that falls on its codeword's active branches (test split; 1 = perfectly coded, N_act/N = class-blind)"
    )

    def compute(self, ctx: EvalContext) -> list[MetricResult]:
        energies = class_energies(ctx)
        if energies is None:
            return []
        sums, codes, counts = energies
        present = counts > 0
        if not sums or not present.any():
            return []
        classes = present.nonzero().flatten()
        blocks: list[dict[str, Any]] = []
        values, ratios = [], []
        for i, (total, code) in enumerate(zip(sums, codes, strict=True)):
            shares = energy_shares(total[classes], counts[classes])
            own = (shares * code[classes]).sum(dim=1)
            values.append(float(own.mean()))
            ratios.append(float(code[0].sum()) / code.shape[1])
            blocks.append(
                {
                    "block": i,
                    "n_branches": int(code.shape[1]),
                    "n_active": int(code[0].sum()),
                    "value": values[-1],
                    "share": [round(float(v), DIGITS) for v in own],
                    "energy": [[round(float(v), DIGITS) for v in row] for row in shares],
                    "codewords": code.tolist(),
                }
            )
        names = ctx.data.classes
        params = {
            "split": "test",
            "classes": classes.tolist(),
            "class_names": [names[int(k)] for k in classes],
            "chance": sum(ratios) / len(ratios),
            "normalisation": "per class: mean branch energy over its test images, scaled to sum 1",
            "blocks": blocks,
        }
        return [MetricResult(sum(values) / len(values), int(counts.sum()), params=params)]
