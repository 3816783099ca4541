"""xbench: a benchmark for interpretable and early-exit image classifiers."""

__version__ = "0.1.0"
