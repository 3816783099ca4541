"""Typed fields a model's output may carry, which metrics read.

Each is an :class:`~xbench.models.output.OutputField`: a method that produces one lists it in
``Method.output_fields``, the evaluation pass collects it over the test split, and a metric reads
the merged value with ``ctx.predictions().get(FIELD)``. They live here, below the methods, so that
a metric names the field without importing the method that produces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xbench.models.output import ModelOutput, OutputField


@dataclass
class BranchEnergies:
    """A coded model's branch energies over a split, for metrics (``BRANCH_ENERGIES``).

    Attributes:
        energies: per coded block, the (N, branches) normalised branch energies of every image.
        codes: per coded block, the (K, branches) 0/1 codewords.
    """

    energies: list[Tensor]
    codes: list[Tensor]


def _read_energies(output: ModelOutput) -> BranchEnergies | None:
    energies = output.extras.get("energies")
    if not energies:
        return None
    return BranchEnergies([e.float().cpu() for e in energies], [c.cpu() for c in output.extras["codes"]])


def _merge_energies(parts: list[BranchEnergies]) -> BranchEnergies:
    blocks = zip(*(p.energies for p in parts), strict=True)
    return BranchEnergies([torch.cat(per_block) for per_block in blocks], parts[-1].codes)


#: Branch energies and codewords of the evaluation pass (Coded ResNeXt's, read from the output's
#: ``extras["energies"]`` and ``extras["codes"]``): ``ctx.predictions().get(BRANCH_ENERGIES)``.
BRANCH_ENERGIES = OutputField("branch_energies", _read_energies, _merge_energies)
