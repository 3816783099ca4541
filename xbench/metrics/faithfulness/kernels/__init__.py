"""The faithfulness metrics' torch kernels: perturbed images built on the model's device, scored in batches.

* :mod:`.quantus_torch`: Quantus 0.6.0's FaithfulnessCorrelation, PixelFlipping,
  RegionPerturbation, Selectivity and MonotonicityCorrelation, bitwise Quantus's values (the
  ``torch`` backend of those metrics; Quantus itself is the ``quantus`` backend,
  :mod:`xbench.metrics.faithfulness.reference`);
* :mod:`.road`: ROAD's noisy linear imputation and its MoRF results;
* :mod:`.irof`: SLIC superpixels and IROF's area over the curve;
* :mod:`.paths`: pixel ranking, pixel-replacement paths (RISE's insertion and deletion), TAME's
  keep mask, the blurred canvas and the area under a curve.
"""
