"""Faithfulness: does removing (or keeping) what a map calls relevant change the model's output?

Every metric here scores the current explainer's maps (``ctx.explanations()``: (H, W) maps
min-max normalised to [0, 1]) of the class each map explains (``ctx.explain_targets()``: the
model's prediction) on the first ``n`` explained test images (a seeded subset), one value per
image, and reports the mean. Images whose map is constant are left out (no ranking exists;
``skipped_constant_map``), and so are images whose score is undefined (a correlation of a
constant series: ``skipped_undefined``); ``n`` in the result counts the images scored.

Hyperparameters are scaled to the image (Quantus's defaults assume 224×224); every resolved
value, ``softmax`` (scores are probabilities or logits) and the implementation (Quantus and its
version, or xbench's own) are recorded in each result's params. Images are raw pixels in [0, 1]
(models normalise inside), so the removal baseline 0.0 is black.

=========================  ============  ==========================================================
metric                     better        definition (defaults at 28 / 64 px)
=========================  ============  ==========================================================
faithfulness_correlation   higher        Quantus FaithfulnessCorrelation (Bhatt et al. 2020): Pearson
                                         r over ``nr_runs`` = 20 random subsets (5 % of the C·H·W
                                         entries) between the map's sum on the subset and the logit
                                         drop when the subset is set to 0; logits (Quantus's default).
pixel_flipping             lower         Quantus PixelFlipping (Bach et al. 2015): delete pixels most
                                         relevant first in 16 steps (C·16 for colour: Quantus flips
                                         channel entries), probability of the class after each step;
                                         AUC over the fraction deleted (1/K … 1). A faithful map makes
                                         the score fall fast, so a small area.
region_perturbation        higher        Quantus RegionPerturbation (Samek et al. 2017), MoRF: delete
                                         the 16 most relevant p×p patches one by one (p = 4 / 9 px);
                                         AOPC = Σ_k (f(x) − f(x_k)) / (L + 1) on probabilities.
selectivity                lower         Quantus Selectivity (Montavon et al. 2018): delete all p×p
                                         patches most relevant first (p = ⌈side/4⌉: 16 patches); AUC of
                                         the probability over the fraction of patches deleted.
monotonicity_correlation   higher        Quantus MonotonicityCorrelation (Nguyen & Martinez 2020):
                                         Spearman ρ between the relevance of 16 groups of pixels
                                         (ascending) and the variance of the probability when a group
                                         is set to a uniform random value (``nr_samples`` = 2).
road                       lower         ROAD (Rong et al. 2022), MoRF, own implementation of Quantus's
                                         definition: remove the top p % (10, 30, 50, 70, 90) with noisy
                                         linear imputation; the fraction of images whose predicted
                                         class survives, averaged over the percentages.
irof                       higher        IROF (Rieger & Hansen 2020), own implementation of Quantus's
                                         definition: SLICO superpixels (16 segments), removed in order
                                         of mean relevance (replaced by the images' mean pixel value);
                                         area over the curve of p(x_k)/p(x), divided by the number of
                                         segments.
average_drop               lower         AD (Chattopadhay et al. 2018; TAME's protocol): keep the top
                                         ``keep`` of the map (0.15), multiply the image by that map; AD
                                         = mean max(0, Y − O)/Y (shown ×100), Y and O the class
                                         probability on the original and the masked image.
increase_in_confidence     higher        IC: mean 1[O > Y] (shown ×100), same masking.
insertion_auc              higher        RISE (Petsiuk et al. 2018): insert pixels most relevant first
                                         into a blurred copy (σ = side/16) in 16 steps; AUC of the
                                         probability over the fraction inserted (0 … 1).
deletion_auc               lower         RISE deletion: set pixels to 0, most relevant first, 16 steps;
                                         AUC over the fraction deleted (0 … 1).
=========================  ============  ==========================================================

The five Quantus metrics take ``backend``: ``torch`` (the default) computes them with
:mod:`.kernels.quantus_torch`, batched on the model's device with Quantus's inputs, random draws
and summaries, bitwise Quantus's values (tests call Quantus directly); ``quantus`` calls Quantus
0.6.0 itself through :func:`.reference.run_quantus` (the reference, slower).

Why some are xbench's own implementations (each tested against Quantus where Quantus runs):

* ``road``: Quantus 0.6.0 solves one sparse system per image and percentage with SciPy's default
  (COLAMD-ordered) SuperLU and builds it through ``lil_matrix``; here the same system is built
  vectorised and factorised with a symmetric minimum-degree ordering (faster: BENCHMARKS.md,
  "Faithfulness backends"; the same solution to 1e-7). The noise is drawn in Quantus's order,
  so with the same seed the scores equal Quantus's. Quantus also fails on colour input and
  keeps only its first batch (see :mod:`.reference`).
* ``irof``: Quantus calls ``slic`` with its 224-px defaults (100 segments: ~100 forward passes per
  image at any size) and no way to change them, re-segments every image for every explainer, and
  computes the area with padded curves whose length depends on the other images in the batch.
  Here the segments are computed once per cell (shared by every explainer) with a configurable
  segment count and SLICO (see :class:`Irof`); with Quantus's SLIC settings (100 segments,
  compactness 10, no SLICO) the scores equal Quantus's per image.
* ``average_drop``/``increase_in_confidence``/``insertion_auc``/``deletion_auc``: Quantus 0.6.0 has
  none of them (its metric list has no AD/IC, insertion or deletion; PixelFlipping is deletion
  without the unperturbed point).

The package:

* :mod:`.kernels`: the torch perturbation kernels (the Quantus-equivalent ones, ROAD, IROF, the
  pixel-replacement paths);
* :mod:`.reference`: the Quantus reference backend (Quantus 0.6.0 called on xbench's tensors);
* :mod:`.base`: what every metric shares (images scored, maps skipped, settings recorded);
* :mod:`.quantus_metrics`: the five Quantus-defined metrics, declared as data;
* :mod:`.own_metrics`: ROAD, IROF, AD/IC, insertion and deletion.

Importing the package registers every metric; its names are re-exported here.
"""

from xbench.metrics.faithfulness.base import OWN, FaithfulnessMetric, FaithfulnessParams, originals
from xbench.metrics.faithfulness.kernels.irof import irof_scores, slic_segments
from xbench.metrics.faithfulness.kernels.paths import (
    blurred,
    class_scores,
    curve_auc,
    drop_and_increase,
    keep_mask,
    perturbation_curves,
    rank_pixels,
    ranks_of,
)
from xbench.metrics.faithfulness.kernels.road import (
    ROAD_UNKNOWNS_PER_SOLVE,
    linear_imputation,
    linear_imputation_many,
    road_scores,
)
from xbench.metrics.faithfulness.own_metrics import (
    AdIcParams,
    AverageDrop,
    DeletionAuc,
    DeletionParams,
    IncreaseInConfidence,
    InsertionAuc,
    InsertionDeletionParams,
    InsertionParams,
    Irof,
    IrofParams,
    Road,
    RoadParams,
)
from xbench.metrics.faithfulness.quantus_metrics import (
    BACKENDS,
    QUANTUS_METRICS,
    FaithfulnessCorrelation,
    FaithfulnessCorrelationParams,
    MonotonicityCorrelation,
    MonotonicityCorrelationParams,
    PixelFlipping,
    PixelFlippingParams,
    QuantusFaithfulness,
    QuantusMetric,
    QuantusParams,
    RegionPerturbation,
    RegionPerturbationParams,
    Selectivity,
    SelectivityParams,
    divisor_near,
    quantus_backed,
)
from xbench.metrics.faithfulness.reference import constructor_kwargs, make_metric, quantus_scores, run_quantus

__all__ = [
    "BACKENDS",
    "OWN",
    "QUANTUS_METRICS",
    "ROAD_UNKNOWNS_PER_SOLVE",
    "AdIcParams",
    "AverageDrop",
    "DeletionAuc",
    "DeletionParams",
    "FaithfulnessCorrelation",
    "FaithfulnessCorrelationParams",
    "FaithfulnessMetric",
    "FaithfulnessParams",
    "IncreaseInConfidence",
    "InsertionAuc",
    "InsertionDeletionParams",
    "InsertionParams",
    "Irof",
    "IrofParams",
    "MonotonicityCorrelation",
    "MonotonicityCorrelationParams",
    "PixelFlipping",
    "PixelFlippingParams",
    "QuantusFaithfulness",
    "QuantusMetric",
    "QuantusParams",
    "RegionPerturbation",
    "RegionPerturbationParams",
    "Road",
    "RoadParams",
    "Selectivity",
    "SelectivityParams",
    "blurred",
    "class_scores",
    "constructor_kwargs",
    "curve_auc",
    "divisor_near",
    "drop_and_increase",
    "irof_scores",
    "keep_mask",
    "linear_imputation",
    "linear_imputation_many",
    "make_metric",
    "originals",
    "perturbation_curves",
    "quantus_backed",
    "quantus_scores",
    "rank_pixels",
    "ranks_of",
    "road_scores",
    "run_quantus",
    "slic_segments",
]
