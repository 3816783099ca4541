"""The five metrics Quantus 0.6.0 defines, declared as data: one :class:`QuantusMetric` row each.

They differ only in what a row holds: the registered name, the Quantus class (the ``quantus``
backend, :mod:`xbench.metrics.faithfulness.reference`), the torch kernel that reproduces it
bitwise (the ``torch`` backend, :mod:`xbench.metrics.faithfulness.kernels.quantus_torch`), the
params, the direction and display, the Quantus constructor arguments resolved for an image shape
(hyperparameters scaled to the image; Quantus's defaults assume 224×224) and the per-image
summary of Quantus's output. :func:`register` turns a row into a registered metric class, a
:class:`QuantusFaithfulness` with the row bound; everything else is shared.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from xbench.metadata import Direction
from xbench.metrics.context import EvalContext
from xbench.metrics.faithfulness.base import FaithfulnessMetric, FaithfulnessParams
from xbench.metrics.faithfulness.kernels import quantus_torch
from xbench.metrics.faithfulness.kernels.paths import curve_auc
from xbench.metrics.faithfulness.reference import quantus_scores
from xbench.metrics.quantus_compat import QUANTUS_VERSION
from xbench.registry import METRICS


def divisor_near(total: int, target: float) -> int:
    """The divisor of ``total`` closest to ``target`` (Quantus needs step sizes that divide H·W)."""
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


# -- params ----------------------------------------------------------------------------------------------
# Params descriptions are part of what the metric declares and stay as they were: ``backend``'s still names
# xbench.metrics.perturb, now xbench.metrics.faithfulness.kernels.quantus_torch.
class QuantusParams(FaithfulnessParams):
    backend: Literal["torch", "quantus"] = Field(
        "torch",
        description="'torch': xbench.metrics.perturb, batched on the model's device, Quantus's inputs, draws and"
        " values; 'quantus': Quantus 0.6.0 itself (the reference, slower)",
    )


class FaithfulnessCorrelationParams(QuantusParams):
    nr_runs: int = Field(20, ge=2, le=10_000, description="random subsets per image (Quantus: 100)")
    subset_fraction: float = Field(0.05, gt=0, lt=1, description="subset size as a fraction of the C·H·W entries")
    perturb_baseline: float = Field(0.0, description="value the subset is set to (0: black)")
    softmax: bool = Field(False, description="correlate logits (Quantus's default) or probabilities")


class PixelFlippingParams(QuantusParams):
    steps: int = Field(16, ge=2, le=10_000, description="deletion steps for grey images (features_in_step ≈ H·W/steps)")
    perturb_baseline: float = Field(0.0, description="value deleted pixels take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


class RegionPerturbationParams(QuantusParams):
    patch_size: int | None = Field(
        None, ge=1, le=4096, description="patch side in px; null: round(side/7) (4 at 28, 9 at 64)"
    )
    regions: int = Field(16, ge=1, le=1_000_000, description="patches deleted (most relevant first)")
    perturb_baseline: float = Field(0.0, description="value deleted patches take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


class SelectivityParams(QuantusParams):
    patch_size: int | None = Field(None, ge=1, le=4096, description="patch side in px; null: ⌈side/4⌉ (16 patches)")
    perturb_baseline: float = Field(0.0, description="value deleted patches take (0: black)")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


class MonotonicityCorrelationParams(QuantusParams):
    steps: int = Field(16, ge=3, le=10_000, description="groups of pixels (features_in_step ≈ H·W/steps)")
    nr_samples: int = Field(2, ge=1, le=10_000, description="random values per group (Quantus: 100)")
    eps: float = Field(1e-5, gt=0, description="Quantus's guard against dividing by a zero prediction")
    softmax: bool = Field(True, description="probabilities (Quantus's default) or logits")


#: The params of a Quantus faithfulness metric: each declares ``softmax`` itself, with its own default.
QP = TypeVar(
    "QP",
    bound="FaithfulnessCorrelationParams | PixelFlippingParams | RegionPerturbationParams | SelectivityParams"
    " | MonotonicityCorrelationParams",
)


# -- the declaration and the class every row becomes ------------------------------------------------------
def per_image(raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
    """Quantus's per-image output as it is (correlations)."""
    return raw


@dataclass(frozen=True)
class QuantusMetric:
    """A Quantus-defined metric, declared.

    Attributes:
        name: the registered name.
        class_name: the name of the metric class :func:`register` makes (a module attribute).
        doc: the class docstring.
        quantus_class: the Quantus class, run by the ``quantus`` backend.
        kernel: the ``torch`` backend, called with the same arguments and returning the same.
        params: the metric's params model.
        direction, label, description: as on every :class:`~xbench.metrics.base.Metric`.
        arguments: ``(params, (N, C, H, W)) -> Quantus's constructor arguments``, all recorded.
        summarise: ``(Quantus's output, arguments, shape) -> one value per image``.
    """

    name: str
    class_name: str
    doc: str
    quantus_class: str
    kernel: Callable[..., np.ndarray]
    params: type[QuantusParams]
    direction: Direction
    label: str
    description: str
    arguments: Callable[[Any, torch.Size], dict[str, Any]]
    summarise: Callable[[np.ndarray, dict[str, Any], torch.Size], np.ndarray] = per_image


class QuantusFaithfulness(FaithfulnessMetric[QP]):
    """A Quantus 0.6.0 faithfulness metric: its :class:`QuantusMetric` row, run by the backend the params select."""

    declaration: ClassVar[QuantusMetric]
    quantus_class: ClassVar[str]

    def quantus_kwargs(self, shape: torch.Size) -> dict[str, Any]:
        """The metric's constructor arguments for images of ``shape`` (N, C, H, W), all recorded."""
        return self.declaration.arguments(self.params, shape)

    def summarise(self, raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
        """Per-image values from Quantus's per-image output."""
        return self.declaration.summarise(raw, kwargs, shape)

    def raw_scores(self, ctx: EvalContext, x: Tensor, y: Tensor, maps: Tensor, kwargs: dict[str, Any]) -> np.ndarray:
        """What ``quantus.<quantus_class>`` returns per image, from the backend the params select."""
        softmax = bool(self.params.softmax)
        model = ctx.logits_model()
        if self.params.backend == "quantus":
            return quantus_scores(
                self.quantus_class, model, x, y, maps, softmax=softmax, batch_size=ctx.batch_size,
                device=ctx.device, seed=ctx.seed, **kwargs,
            )  # fmt: skip
        kernel = self.declaration.kernel
        seeded = {"seed": ctx.seed} if "seed" in inspect.signature(kernel).parameters else {}
        return kernel(
            model, x, y, maps, softmax=softmax, batch_size=ctx.batch_size, device=ctx.device, **seeded, **kwargs
        )

    def scores(self, ctx: EvalContext, idx: Tensor, x: Tensor, y: Tensor, maps: Tensor) -> tuple[np.ndarray, dict]:
        kwargs = self.quantus_kwargs(x.shape)
        raw = self.raw_scores(ctx, x, y, maps, kwargs)
        torch_backend = self.params.backend == "torch"
        settings = {
            # The recorded text predates the package (records of both compare equal); the kernels
            # are xbench.metrics.faithfulness.kernels.quantus_torch.
            "implementation": (
                f"xbench.metrics.perturb (torch, batched) of quantus.{self.quantus_class}: Quantus's inputs and draws"
                if torch_backend
                else f"quantus.{self.quantus_class}"
            ),
            "quantus_version": QUANTUS_VERSION,
            "softmax": bool(self.params.softmax),
            "seed": ctx.seed,
            **kwargs,
        }
        return self.summarise(raw, kwargs, x.shape), settings


def register(row: QuantusMetric) -> type[QuantusFaithfulness[Any]]:
    """The registered metric class of ``row``, named ``row.class_name`` in this module."""
    namespace = {
        "__module__": __name__,
        "__qualname__": row.class_name,
        "__doc__": row.doc,
        "declaration": row,
        "quantus_class": row.quantus_class,
        "direction": row.direction,
        "label": row.label,
        "description": row.description,
        "Params": row.params,
    }
    cls = cast(type[QuantusFaithfulness[Any]], type(row.class_name, (QuantusFaithfulness,), namespace))
    return METRICS.register(row.name)(cls)


def quantus_backed() -> list[str]:
    """Registry names of the metrics with a Quantus and a torch backend (``backend``), in registry order."""
    return [n for n in METRICS.names() if issubclass(METRICS.get(n), QuantusFaithfulness)]


# -- the rows ---------------------------------------------------------------------------------------------
def _faithfulness_correlation(p: FaithfulnessCorrelationParams, shape: torch.Size) -> dict[str, Any]:
    features = int(shape[1] * shape[2] * shape[3])
    return {
        "nr_runs": p.nr_runs,
        "subset_size": max(1, round(p.subset_fraction * features)),
        "perturb_baseline": p.perturb_baseline,
        "similarity_func": "pearson",
        "normalise": True,
        "abs": False,
    }


def _pixel_flipping(p: PixelFlippingParams, shape: torch.Size) -> dict[str, Any]:
    hw = int(shape[2] * shape[3])
    return {
        "features_in_step": divisor_near(hw, hw / p.steps),
        "perturb_baseline": p.perturb_baseline,
        "return_auc_per_sample": True,
        "normalise": True,
        "abs": False,
    }


def _auc_per_fraction(raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
    # Quantus's AUC is trapezoid(curve, dx=1) over K = C·H·W/features_in_step points at the
    # fractions 1/K … 1; dividing by K puts it on the fraction axis (scale-free across sizes).
    k = math.ceil(int(shape[1] * shape[2] * shape[3]) / kwargs["features_in_step"])
    return raw / k


def _region_perturbation(p: RegionPerturbationParams, shape: torch.Size) -> dict[str, Any]:
    side = min(int(shape[2]), int(shape[3]))
    patch = p.patch_size or max(2, round(side / 7))
    patches = math.ceil(int(shape[2]) / patch) * math.ceil(int(shape[3]) / patch)
    return {
        "patch_size": patch,
        "regions_evaluation": min(p.regions, patches),
        "order": "morf",
        "perturb_baseline": p.perturb_baseline,
        "normalise": True,
        "abs": False,
    }


def _aopc(raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
    # Quantus returns the curve f(x) − f(x_k), k = 1…L; Samek et al.'s AOPC averages it over
    # k = 0…L, where the k = 0 term is 0.
    return raw.sum(axis=1) / (raw.shape[1] + 1)


def _selectivity(p: SelectivityParams, shape: torch.Size) -> dict[str, Any]:
    side = min(int(shape[2]), int(shape[3]))
    return {
        "patch_size": p.patch_size or max(1, math.ceil(side / 4)),
        "perturb_baseline": p.perturb_baseline,
        "normalise": True,
        "abs": False,
    }


def _auc_over_patches(raw: np.ndarray, kwargs: dict[str, Any], shape: torch.Size) -> np.ndarray:
    # Quantus's AUC is trapezoid(curve, dx=1) over the P patches deleted (points 1/P … 1).
    return curve_auc(raw, np.arange(1, raw.shape[1] + 1) / raw.shape[1])


def _monotonicity_correlation(p: MonotonicityCorrelationParams, shape: torch.Size) -> dict[str, Any]:
    hw = int(shape[2] * shape[3])
    return {
        "features_in_step": divisor_near(hw, hw / p.steps),
        "nr_samples": p.nr_samples,
        "eps": p.eps,
        "perturb_baseline": "uniform",
        "similarity_func": "spearman",
        "normalise": True,
        "abs": True,
    }


QUANTUS_METRICS: tuple[QuantusMetric, ...] = (
    QuantusMetric(
        name="faithfulness_correlation",
        class_name="FaithfulnessCorrelation",
        doc="Pearson correlation of the map's mass on random subsets with the output drop they cause.",
        quantus_class="FaithfulnessCorrelation",
        kernel=quantus_torch.faithfulness_correlation,
        params=FaithfulnessCorrelationParams,
        direction=Direction.HIGHER,
        label="Faith. corr.",
        description="Quantus FaithfulnessCorrelation: Pearson r of subset relevance vs. output drop (random subsets)",
        arguments=_faithfulness_correlation,
    ),
    QuantusMetric(
        name="pixel_flipping",
        class_name="PixelFlipping",
        doc="Area under the probability curve while the most relevant pixels are deleted first.",
        quantus_class="PixelFlipping",
        kernel=quantus_torch.pixel_flipping,
        params=PixelFlippingParams,
        direction=Direction.LOWER,
        label="Pixel flipping AUC",
        description="Quantus PixelFlipping: AUC of p(class) as the most relevant pixels are set to 0 (lower better)",
        arguments=_pixel_flipping,
        summarise=_auc_per_fraction,
    ),
    QuantusMetric(
        name="region_perturbation",
        class_name="RegionPerturbation",
        doc="AOPC: the mean drop of the class probability as the most relevant patches are deleted.\n\n"
        'Quantus 0.6.0 marks RegionPerturbation\'s score direction "lower", but its output is the drop\n'
        "f(x) − f(x_k), which a faithful map makes large as the most relevant patches go first: the\n"
        "AOPC of Samek et al. is higher-is-better.",
        quantus_class="RegionPerturbation",
        kernel=quantus_torch.region_perturbation,
        params=RegionPerturbationParams,
        direction=Direction.HIGHER,
        label="Region pert. AOPC",
        description="Quantus RegionPerturbation (MoRF): AOPC of the most relevant patches set to 0 (higher better)",
        arguments=_region_perturbation,
        summarise=_aopc,
    ),
    QuantusMetric(
        name="selectivity",
        class_name="Selectivity",
        doc="Area under the probability curve as every patch is deleted, most relevant first.",
        quantus_class="Selectivity",
        kernel=quantus_torch.selectivity,
        params=SelectivityParams,
        direction=Direction.LOWER,
        label="Selectivity AUC",
        description="Quantus Selectivity: AUC of p(class) as patches are set to 0, most relevant first (lower better)",
        arguments=_selectivity,
        summarise=_auc_over_patches,
    ),
    QuantusMetric(
        name="monotonicity_correlation",
        class_name="MonotonicityCorrelation",
        doc="Spearman correlation of group relevance with the output variance its perturbation causes.",
        quantus_class="MonotonicityCorrelation",
        kernel=quantus_torch.monotonicity_correlation,
        params=MonotonicityCorrelationParams,
        direction=Direction.HIGHER,
        label="Monotonicity corr.",
        description="Quantus MonotonicityCorrelation: Spearman ρ of group relevance vs. output variance",
        arguments=_monotonicity_correlation,
    ),
)

FaithfulnessCorrelation, PixelFlipping, RegionPerturbation, Selectivity, MonotonicityCorrelation = (
    register(row) for row in QUANTUS_METRICS
)

#: The torch kernel of each Quantus class xbench runs, called with the Quantus kwargs xbench records.
BACKENDS: dict[str, Callable[..., np.ndarray]] = {row.quantus_class: row.kernel for row in QUANTUS_METRICS}
